"""The audit experiment notebook runs under papermill on both layouts and writes what it promises."""
import json
from pathlib import Path

import papermill as pm
import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_audit(tmp_path, data, **params):
    out = tmp_path / "audit"
    pm.execute_notebook(ROOT / "nbs/audit.ipynb", tmp_path / "audit.ipynb", cwd=ROOT, progress_bar=False,
                        parameters=dict(data=str(data), out_dir=str(out), **params))
    return out, json.loads((out / "audit.json").read_text())


def test_audit_notebook_on_kaggle_layout(tmp_path, tiny_demo):
    out, result = run_audit(tmp_path, tiny_demo)
    assert {"shortcut_auc", "features", "warnings", "duplicates", "pairs"} <= set(result)
    assert result["warnings"] == [] and result["pairs"]["precision"] >= 0.9
    for name in ("audit.md", "groups.csv", "pairs.csv", "metadata.png", "feature_auc.png", "pairs.png", "spectra.png"):
        assert (out / name).exists(), name


def test_audit_notebook_flags_planted_shortcut(tmp_path):
    from aidetect.data import read_dataset
    from aidetect.pairs import load_groups
    from aidetect.synthetic import make_shortcut_dataset

    data = make_shortcut_dataset(tmp_path / "planted", n=40)
    out, result = run_audit(tmp_path, data, reencode="jpeg:90")
    assert result["shortcut_auc"] >= 0.9 and "format" in result["warnings"][0]
    after = {f["name"]: f["auc"] for f in result["reencoded"]["features"]}
    assert after["format"] == 0.5 and after["exif"] == 0.5
    df = load_groups(read_dataset(data), out / "groups.csv")
    assert df.group.notna().all() and len(df) == 80


def test_load_groups_errors(tmp_path, tiny_demo):
    from aidetect.data import read_dataset
    from aidetect.pairs import load_groups

    df = read_dataset(tiny_demo)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_groups(df, tmp_path / "missing.csv")
    (tmp_path / "other.csv").write_text("path,group\nelsewhere.jpg,1\n")
    with pytest.raises(ValueError, match="64 of 64 images are not listed"):
        load_groups(df, tmp_path / "other.csv")


def test_training_with_recovered_groups_keeps_pairs_together(tmp_path, tiny_demo):
    """`-p groups auto` on a table without its group column: no photo/AI pair of the demo straddles the split."""
    import shutil

    import pandas as pd

    from aidetect.cli import main

    data = tmp_path / "nogroups"
    shutil.copytree(tiny_demo, data)
    truth = pd.read_csv(tiny_demo / "train.csv")
    truth.drop(columns="group").to_csv(data / "train.csv", index=False)
    main(["train", "-q", "-p", "data", str(data), "-p", "out_dir", str(tmp_path / "run"), "-p", "groups", "auto",
          "-p", "arch", "test_resnet", "-p", "img_size", "32", "-p", "epochs", "1", "-p", "batch_size", "8",
          "-p", "wandb_mode", "disabled", "-p", "cache", str(tmp_path / "cache")])
    val = {Path(p).name for p in pd.read_csv(tmp_path / "run" / "predictions_val.csv").path}
    pair = truth.assign(name=[Path(f).name for f in truth.file_name], val=lambda t: t.name.isin(val))
    assert 0 < pair.val.sum() < len(pair)
    assert (pair.groupby("group").val.nunique() == 1).all()  # each true pair on one side
