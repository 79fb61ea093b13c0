"""What aidetect refuses rather than answering wrongly or losing work, checked with real runs and the command line
in-process (`aidetect.cli.main`: the console script's parsing, output and messages; its errors end the command)."""
import json
import os
import shutil
import stat
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aidetect.cli import main

TINY = ["-p", "arch", "test_resnet", "-p", "img_size", "32", "-p", "batch_size", "8", "-p", "wandb_mode", "disabled"]


def train_args(data, out, *extra) -> list[str]:
    return ["train", "-q", "-p", "data", str(data), "-p", "out_dir", str(out), *TINY, *extra]


def refused(argv: list[str]) -> str:
    """The message with which `aidetect ARGV` stops: its exit message, or the error that ends the command."""
    with pytest.raises((SystemExit, RuntimeError)) as e: main(argv)
    if isinstance(e.value, RuntimeError): return str(e.value)
    assert e.value.code not in (None, 0)
    return str(e.value.code)


def test_corrupted_weights_are_refused_not_served(demo_run, tmp_path, tiny_demo, capsys):
    damaged = tmp_path / "best.safetensors"
    raw = bytearray((demo_run / "best.safetensors").read_bytes())
    raw[-256:] = np.random.default_rng(0).integers(0, 256, 256, dtype=np.uint8).tobytes()  # header intact
    damaged.write_bytes(bytes(raw))
    image = pd.read_csv(tiny_demo / "train.csv").file_name[0]
    message = refused(["predict", str(damaged), str(tiny_demo / image)])
    assert "corrupt" in message and "NaN" not in capsys.readouterr().out


def test_a_damaged_cache_stops_training_and_is_repaired(tiny_demo, tmp_path, capsys):
    """Training on a cache whose images were overwritten stops, naming the checksum, before writing a record;
    the next training decodes the damaged rows again and trains."""
    from aidetect.cache import prepare_cache
    cache = tmp_path / "cache"
    prepare_cache(tiny_demo, "train", 32, out_dir=cache, num_workers=1, progress=False)  # as a training makes it
    images = cache / "images.u8"
    images.write_bytes(np.random.default_rng(0).integers(0, 256, images.stat().st_size, np.uint8).tobytes())
    message = refused(train_args(tiny_demo, tmp_path / "second", "-p", "epochs", "1", "-p", "cache", str(cache)))
    assert "do not match their checksum" in message
    assert not (tmp_path / "second" / "metrics.json").exists()
    main(train_args(tiny_demo, tmp_path / "third", "-p", "epochs", "1", "-p", "cache", str(cache)))
    assert json.loads((tmp_path / "third" / "metrics.json").read_text())["val_acc"] > 0
    assert "val_acc" in capsys.readouterr().out


def test_labels_must_be_exactly_0_or_1(tiny_demo, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train_data").symlink_to(tiny_demo / "train_data")
    table = pd.read_csv(tiny_demo / "train.csv")
    table["label"] = table.label.astype(float)  # 1.0 is a 1, 0.9 is not
    table.loc[5, "label"] = 0.9
    table.to_csv(data / "train.csv", index=False)
    message = refused(train_args(data, tmp_path / "run", "-p", "epochs", "1"))
    assert "line 7" in message and "label 0.9" in message


def test_one_run_per_folder(demo_run, tiny_demo, tmp_path):
    """While a run holds its folder (the lock `claim_run_dir` takes for every training), a second training on that
    folder is refused at once, naming it, before any work (it asks for 1000 epochs: minutes, were it to train
    first), and leaves the first run's record whole; once the first lets go, the folder can be taken again."""
    from aidetect.record import claim_run_dir
    out = tmp_path / "run"
    shutil.copytree(demo_run, out, ignore=shutil.ignore_patterns(".*", "*.onnx"))
    record = {p.name: p.read_bytes() for p in out.iterdir()}
    with claim_run_dir(out, resume=True):  # as the first run holds it until its end (a lock of its own open file)
        start = time.time()
        message = refused(train_args(tiny_demo, out, "-p", "epochs", "1000", "-p", "lr", "0.005"))
        assert "in use" in message and str(out) in message, message
        assert time.time() - start < 30  # refused at once, not after training
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != ".lock"} == record  # nothing cleared
    with claim_run_dir(out, resume=True): pass  # free again


def test_run_files_are_readable_by_others(demo_run):
    umask = os.umask(0); os.umask(umask)
    for name in ("best.safetensors", "metrics.json", "history.csv", "last_state.pt"):
        mode = stat.S_IMODE((demo_run / name).stat().st_mode)
        assert mode == 0o666 & ~umask, (name, oct(mode))


def test_predict_answers_every_readable_file(demo_run, tiny_demo, tmp_path, capsys):
    """`aidetect predict` answers every readable file, one JSON line each, marks the unreadable and missing ones,
    and stops with an error saying how many could not be read."""
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    good = tiny_demo / pd.read_csv(tiny_demo / "train.csv").file_name[0]
    message = refused(["predict", str(demo_run), str(good), str(notes), str(tmp_path / "gone.jpg")])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert "2 of 3 file(s) could not be read" in message
    assert rows[0]["label"] in ("human", "ai") and 0 <= rows[0]["prob_ai"] <= 1
    assert rows[1]["error"].startswith("unreadable") and rows[2]["error"] == "missing"
    assert Path(rows[1]["file"]) == notes
