"""The training cost of the demo's offline recipes, side by side: seconds per training step (augmentation of a
cached uint8 batch, forward, backward, AdamW update) of each recipe's model, the recipes interleaved round by round
so that every one sees the same load. Writes benchmarks/recipe-steps-cpu.json.

    python benchmarks/recipe_steps.py --img-size 32 --rounds 7 --steps 10
"""
import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from aidetect.augment import augment_batch, epoch_plan
from aidetect.config import TrainConfig
from aidetect.train import _build_model, _optimization, _train_step, train_mode

RECIPES = {"rgb": {}, "npr": {"input": "npr"}, "highpass": {"input": "highpass"},
           "blur+jpeg": {"aug_blur": 0.5, "aug_jpeg": 0.5}, "frozen": {"freeze_backbone": True, "lr": 0.01}}


def recipe_step(cfg: TrainConfig, batch: torch.Tensor, labels: torch.Tensor):
    "A function that runs one training step of `cfg`'s model on `batch` (augmented as `cfg` says)."
    cpu = torch.device("cpu")
    model, preprocess = _build_model(cfg, cpu, 1)
    optimizer, _ = _optimization(cfg, model, cpu, 100)
    train_mode(model)
    plan = epoch_plan(len(batch), torch.Generator().manual_seed(0), True, cfg.aug_blur, cfg.aug_jpeg)
    pos, loss_fn = torch.arange(len(batch)), torch.nn.CrossEntropyLoss()
    def step():
        x = preprocess.normalize(augment_batch(batch.clone(), plan, pos, cfg.img_size))
        _train_step(model, x, labels, optimizer, loss_fn, cfg.grad_clip, cpu)
    return step


def main(img_size: int = 32, rounds: int = 7, steps: int = 10, batch_size: int = 32, out: str | None = None):
    torch.manual_seed(0)
    batch = torch.randint(0, 256, (batch_size, 3, 2 * img_size, 2 * img_size), dtype=torch.uint8)  # cached images
    labels = torch.randint(0, 2, (batch_size,))
    base = TrainConfig(arch="resnet10t", img_size=img_size, batch_size=batch_size, wandb_mode="disabled")
    runs = {name: recipe_step(TrainConfig(**{**base.to_dict(), **p}), batch, labels) for name, p in RECIPES.items()}
    for step in runs.values(): step()  # warm-up
    times = {name: [] for name in runs}
    for _ in range(rounds):
        for name, step in runs.items():
            t = time.perf_counter()
            for _ in range(steps): step()
            times[name].append((time.perf_counter() - t) / steps)
    rgb = statistics.median(times["rgb"])
    results = [{"recipe": n, "s_per_step": statistics.median(t), "img_per_s": batch_size / statistics.median(t),
                "vs_rgb": statistics.median(t) / rgb} for n, t in times.items()]
    record = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                          "load_average": os.getloadavg()},
              "arch": "resnet10t", "img_size": img_size, "batch_size": batch_size, "rounds": rounds, "steps": steps,
              "results": results}
    for r in results: print(f"{r['recipe']:10s} {r['s_per_step']:.4f} s/step  {r['img_per_s']:6.1f} img/s  "
                            f"x{r['vs_rgb']:.2f} of rgb")
    path = Path(out or Path(__file__).with_name("recipe-steps-cpu.json"))
    path.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--img-size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    main(a.img_size, a.rounds, a.steps, a.batch_size, a.out)
