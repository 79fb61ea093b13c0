"""A Kaggle-size rehearsal for a GPU machine: the whole pipeline at the scale of Kaggle's AI vs. Human-Generated
Images (about 80k photos of 512x768), stage by stage, with the wall time of each stage written as JSON.

1. make photo-like 512x768 JPEGs (`aidetect.synthetic.make_photo_dataset`), and a held-out tenth for testing;
2. `prepare` the decoded-once cache (`--input cache`), or nothing (`--input device`: JPEGs decoded on the GPU);
3. train `--epochs` epochs of tf_efficientnetv2_s at 224 px (the architecture of the system aidetect replaces,
   which took about 10 minutes per epoch on a T4) with `aidetect.train.fit`;
4. evaluate the best checkpoint on the held-out photos (`aidetect.evaluate.evaluate_run`).

    python benchmarks/rehearsal.py                                   # 80k images, on the GPU
    python benchmarks/rehearsal.py --n 256 --arch test_resnet --img-size 32 --epochs 1 --device cpu \
        --root /tmp/rehearsal --json-path /tmp/rehearsal.json              # a smoke run of the same code

The photos are random crops of real photographs with alternating labels: the accuracy means nothing, the
timings are the point.
"""
import json
import time
from pathlib import Path

import torch
from fastcore.script import call_parse

from aidetect.bench import _device_name
from aidetect.cache import prepare_cache
from aidetect.config import TrainConfig
from aidetect.evaluate import evaluate_run
from aidetect.synthetic import make_photo_dataset
from aidetect.train import fit
from aidetect.utils import get_device, write_json

HERE = Path(__file__).resolve().parent
INPUTS = {"cache": "auto", "device": "device", "jpeg": "off"}  # --input → TrainConfig.cache


def _timed(stages: dict, name: str, fn, *args, **kwargs):
    "Run `fn`, recording its wall time in `stages[name]`."
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    stages[name] = round(time.perf_counter() - t0, 2)
    print(f"{name}: {stages[name]:.1f} s", flush=True)
    return result


@call_parse
def main(n: int = 80_000,                     # training images (Kaggle has 79,950)
         arch: str = "tf_efficientnetv2_s",   # timm architecture
         img_size: int = 224,                 # model input side
         epochs: int = 5,                     # training epochs
         batch_size: int = 256,               # global batch
         input: str = "cache",                # 'cache' (prepare first), 'device' (decode JPEGs on the GPU) or 'jpeg'
         threads: int = 8,                    # threads reading the cache or the JPEGs' bytes
         num_workers: int = 8,                # processes decoding JPEGs (--input jpeg) and scoring
         device: str = "auto",                # 'auto', 'cuda', 'cpu'
         compile: bool = False,               # torch.compile the model
         root: str = "/tmp/aidetect-rehearsal",  # where the photos, the cache and the run go
         json_path: str | None = None,        # the JSON record (default: benchmarks/rehearsal-<device>.json)
        ) -> dict:
    "Time every stage of a Kaggle-size run: data, preparation, training, evaluation."
    if input not in INPUTS: raise ValueError(f"input must be one of {list(INPUTS)}, got {input!r}")
    dev, root, stages = get_device(device), Path(root), {}
    train_root = _timed(stages, "make_train_photos", make_photo_dataset, root / "train", n=n)
    test_root = _timed(stages, "make_test_photos", make_photo_dataset, root / "test", n=max(n // 10, 64), seed=1)
    cache = str(root / f"cache-{img_size}")
    if input == "cache":
        _timed(stages, "prepare", prepare_cache, train_root, img_size=img_size, out_dir=cache, progress=False)
    cfg = TrainConfig(data=str(train_root), arch=arch, img_size=img_size, epochs=epochs, batch_size=batch_size,
                      num_workers=num_workers, threads=threads, device=str(dev), wandb_mode="disabled", compile=compile,
                      cache=cache if input == "cache" else INPUTS[input], out_dir=str(root / "run"))
    metrics = _timed(stages, "train", fit, cfg, progress=False)
    run = json.loads((root / "run" / "run.json").read_text())
    _timed(stages, "evaluate", evaluate_run, str(root / "run"), str(test_root), "train", str(root / "eval"),
           batch_size=2 * batch_size, num_workers=num_workers, device=str(dev))
    record = dict(n=n, arch=arch, img_size=img_size, epochs=epochs, batch_size=batch_size, input=input,
                  device=_device_name(dev), torch=torch.__version__, stages_s=stages,
                  train_img_per_s=round(run["train_img_per_s"], 1),
                  minutes_per_epoch=round(run["seconds"] / epochs / 60, 2), val_acc=metrics["val_acc"],
                  replaced_system_minutes_per_epoch_on_t4=10)
    name = record["device"].split(",")[0].lower().replace(" ", "-")
    out = Path(json_path) if json_path else HERE / f"rehearsal-{name}.json"
    write_json(out, record)
    print(json.dumps(record, indent=2))
    return record
