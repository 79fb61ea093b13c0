"""`fit` under torchrun: 2 CPU processes (gloo) end with the weights and metrics of one process, same global batch."""
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

# test_convnext has no batch norm: with per-process batch statistics (no sync_bn, which needs CUDA) a BN model
# legitimately differs between 1 and 2 processes. Everything else is the same computation, summed in another order.
PARAMS = dict(arch="test_convnext", img_size=32, epochs=2, batch_size=16, lr=0.002, wandb_mode="disabled",
              device="cpu", num_workers=0)
ATOL = 1e-4  # on every weight; float sums in another order drift by ~1e-6 over these 8 updates


def train(tmp_path, data, name, nproc):
    """Train `name` in this process (nproc 1) or with torchrun's `nproc` processes; (metrics, last weights)."""
    params = {**PARAMS, "data": str(data), "cache": str(tmp_path / "cache"), "out_dir": str(tmp_path / name)}
    if nproc == 1:
        from aidetect.config import TrainConfig
        from aidetect.train import fit
        fit(TrainConfig(**params), progress=False)
    else:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                    "--no-python", "aidetect"]
        args = [a for k, v in params.items() for a in ("-p", k, str(v))]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        subprocess.run([*launcher, "train", "-q", *args], check=True, env=env, timeout=300)
    return json.loads((tmp_path / name / "metrics.json").read_text()), load_file(tmp_path / name / "last.safetensors")


def test_two_process_gloo_matches_one_process(tmp_path, tiny_demo):
    single, w1 = train(tmp_path, tiny_demo, "single", 1)
    ddp, w2 = train(tmp_path, tiny_demo, "ddp", 2)
    assert w1.keys() == w2.keys()
    worst = max((w1[k].float() - w2[k].float()).abs().max().item() for k in w1)
    assert worst < ATOL, worst
    assert ddp["n_val"] == single["n_val"] and ddp["val_acc"] == single["val_acc"]
    assert ddp["val_loss"] == pytest.approx(single["val_loss"], abs=1e-4)
    assert json.loads((tmp_path / "ddp" / "run.json").read_text())["world_size"] == 2
    # rank 0 alone wrote the record: one history with one row per epoch
    assert len((tmp_path / "ddp" / "history.csv").read_text().splitlines()) == 1 + PARAMS["epochs"]
    assert not torch.equal(w1[next(iter(w1))], torch.zeros_like(w1[next(iter(w1))]))
