"""The experiment notebooks run under papermill exactly as the README says, with parameters reaching the run.
The run they check is the session's shared demo run (conftest.py), trained by papermill's command line."""
import json
import subprocess
import time
from pathlib import Path

import papermill as pm
import pytest
from conftest import DEMO_RUN_OVERRIDES

from aidetect.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_train_notebook_records_exact_parameters(demo_run):
    """The README's command form (-f params file, -p overrides, lr as the text 3e-3, kernel started in the repo
    root): the run records exactly the parameters given, the file's where no override wins, and writes its files."""
    metrics = json.loads((demo_run / "metrics.json").read_text())
    used = metrics["params"]
    assert (used["lr"], used["epochs"]) == (float(DEMO_RUN_OVERRIDES["lr"]), int(DEMO_RUN_OVERRIDES["epochs"]))
    assert (used["arch"], used["img_size"], used["batch_size"]) == ("test_resnet", 32, 8)  # from the file
    for key in ("val_acc", "val_auc", "val_f1", "skipped_files"):
        assert key in metrics
    for name in ("best.safetensors", "last.safetensors", "history.csv", "val_roc.png", "val_confusion.png"):
        assert (demo_run / name).exists(), name
    assert len((demo_run / "history.csv").read_text().splitlines()) == 2  # one epoch, not the file's 3


def test_evaluate_notebook_scores_the_test_split(demo_run, tiny_demo, tmp_path):
    """The evaluation notebook scores a run on the demo's labelled test split and writes a Kaggle submission."""
    pm.execute_notebook(ROOT / "nbs/evaluate.ipynb", tmp_path / "evaluate.ipynb", cwd=ROOT, progress_bar=False,
                        parameters=dict(checkpoint=str(demo_run), data=str(tiny_demo), split="test", device="cpu",
                                        submission=str(tmp_path / "submission.csv")))
    assert json.loads((demo_run / "eval_test.json").read_text())["test_n"] == 8
    assert (tmp_path / "submission.csv").read_text().startswith("id,label")


def test_bad_arch_fails_fast_naming_the_parameter(tmp_path):
    start = time.time()
    with pytest.raises(pm.PapermillExecutionError) as e:
        pm.execute_notebook(ROOT / "nbs/train.ipynb", tmp_path / "o.ipynb", cwd=ROOT, progress_bar=False,
                            parameters=dict(arch="not_a_model", out_dir=str(tmp_path / "run")))
    assert "arch" in str(e.value)
    assert not (tmp_path / "run").exists()  # stopped before any work
    assert time.time() - start < 60


def test_console_script(tmp_path, tiny_demo):
    """`aidetect train` as installed (the console script, a real process) trains a run; a bad parameter stops
    the command with a message naming it."""
    subprocess.run(["aidetect", "train", "-q", "-p", "data", str(tiny_demo), "-p", "arch", "test_resnet",
                    "-p", "img_size", "32", "-p", "epochs", "1", "-p", "wandb_mode", "disabled",
                    "-p", "out_dir", str(tmp_path / "run"), "-p", "cache", str(tmp_path / "cache")], check=True)
    assert (tmp_path / "run/best.safetensors").exists()
    with pytest.raises(SystemExit) as bad:
        main(["train", "-p", "lr", "0"])
    assert bad.value.code != 0 and "lr" in str(bad.value.code)


def test_notebook_parameters_match_trainconfig():
    """train.ipynb's parameters cell lists every TrainConfig field with the same default (one source of truth)."""
    import ast

    from aidetect.config import TrainConfig

    params = pm.inspect_notebook(ROOT / "nbs/train.ipynb")
    defaults = TrainConfig().to_dict()
    assert set(params) == set(defaults)
    assert {name: ast.literal_eval(p["default"]) for name, p in params.items()} == defaults
