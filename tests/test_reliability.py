"""What aidetect refuses rather than answering wrongly or losing work, checked with real runs and the console script."""
import fcntl
import json
import os
import stat
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

TINY = ["-p", "arch", "test_resnet", "-p", "img_size", "32", "-p", "batch_size", "8", "-p", "wandb_mode", "disabled"]


def train(data, out, *extra, check=True, **kw):
    args = ["aidetect", "train", "-q", "-p", "data", str(data), "-p", "out_dir", str(out), *TINY, *extra]
    return subprocess.run(args, capture_output=True, text=True, check=check, **kw)


@pytest.fixture(scope="module")
def run_dir(tiny_demo, tmp_path_factory):
    """A finished one-epoch run on the tiny demo."""
    out = tmp_path_factory.mktemp("runs") / "run"
    train(tiny_demo, out, "-p", "epochs", "1", "-p", "cache", str(out.parent / "cache"))
    return out


def test_corrupted_weights_are_refused_not_served(run_dir, tmp_path, tiny_demo):
    damaged = tmp_path / "best.safetensors"
    raw = bytearray((run_dir / "best.safetensors").read_bytes())
    raw[-256:] = np.random.default_rng(0).integers(0, 256, 256, dtype=np.uint8).tobytes()  # header intact
    damaged.write_bytes(bytes(raw))
    image = pd.read_csv(tiny_demo / "train.csv").file_name[0]
    done = subprocess.run(["aidetect", "predict", str(damaged), str(tiny_demo / image)], capture_output=True,
                          text=True)
    assert done.returncode != 0 and "corrupt" in done.stderr and "NaN" not in done.stdout


def test_a_damaged_cache_stops_training_and_is_repaired(tiny_demo, tmp_path):
    cache = tmp_path / "cache"
    train(tiny_demo, tmp_path / "first", "-p", "epochs", "1", "-p", "cache", str(cache))
    images = cache / "images.u8"
    images.write_bytes(np.random.default_rng(0).integers(0, 256, images.stat().st_size, np.uint8).tobytes())
    broken = train(tiny_demo, tmp_path / "second", "-p", "epochs", "1", "-p", "cache", str(cache), check=False)
    assert broken.returncode != 0 and "do not match their checksum" in broken.stderr
    assert not (tmp_path / "second" / "metrics.json").exists()
    repaired = train(tiny_demo, tmp_path / "third", "-p", "epochs", "1", "-p", "cache", str(cache))
    assert json.loads((tmp_path / "third" / "metrics.json").read_text())["val_acc"] > 0
    assert "val_acc" in repaired.stdout


def test_labels_must_be_exactly_0_or_1(tiny_demo, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train_data").symlink_to(tiny_demo / "train_data")
    table = pd.read_csv(tiny_demo / "train.csv")
    table["label"] = table.label.astype(float)  # 1.0 is a 1, 0.9 is not
    table.loc[5, "label"] = 0.9
    table.to_csv(data / "train.csv", index=False)
    done = train(data, tmp_path / "run", "-p", "epochs", "1", check=False)
    assert done.returncode != 0 and "line 7" in done.stderr and "label 0.9" in done.stderr


def test_one_run_per_folder(tiny_demo, tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen(["aidetect", "train", "-q", "-p", "data", str(tiny_demo), "-p", "out_dir", str(out),
                              *TINY, "-p", "epochs", "30", "-p", "lr", "0.001", "-p", "cache", str(tmp_path / "c")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, held = time.time() + 240, False
    while time.time() < deadline and first.poll() is None and not held:  # wait until the first run holds the folder
        time.sleep(0.1)
        if not (out / ".lock").exists(): continue
        with open(out / ".lock") as f:
            try: fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB); fcntl.flock(f, fcntl.LOCK_UN)
            except BlockingIOError: held = True
    assert held, "the first run never held its folder"
    start = time.time()
    second = train(tiny_demo, out, "-p", "epochs", "1", "-p", "lr", "0.005", check=False)
    assert second.returncode != 0 and "in use" in second.stderr and str(out) in second.stderr
    assert time.time() - start < 30  # refused at once, not after training
    assert first.wait(timeout=240) == 0, first.stderr
    assert json.loads((out / "metrics.json").read_text())["params"]["lr"] == 0.001  # the first run's record, whole
    train(tiny_demo, out, "-p", "epochs", "2", "-p", "resume", "true", "-p", "cache", str(tmp_path / "c"))


def test_run_files_are_readable_by_others(run_dir):
    umask = os.umask(0); os.umask(umask)
    for name in ("best.safetensors", "metrics.json", "history.csv", "last_state.pt"):
        mode = stat.S_IMODE((run_dir / name).stat().st_mode)
        assert mode == 0o666 & ~umask, (name, oct(mode))


def test_predict_answers_every_readable_file(run_dir, tiny_demo, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    good = tiny_demo / pd.read_csv(tiny_demo / "train.csv").file_name[0]
    done = subprocess.run(["aidetect", "predict", str(run_dir), str(good), str(notes), str(tmp_path / "gone.jpg")],
                          capture_output=True, text=True)
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode != 0 and "2 of 3 file(s) could not be read" in done.stderr
    assert rows[0]["label"] in ("human", "ai") and 0 <= rows[0]["prob_ai"] <= 1
    assert rows[1]["error"].startswith("unreadable") and rows[2]["error"] == "missing"
    assert Path(rows[1]["file"]) == notes
