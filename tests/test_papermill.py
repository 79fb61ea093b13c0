"""The experiment notebooks run under papermill exactly as the README says, with parameters reaching the run."""
import json
import subprocess
import sys
import time
from pathlib import Path

import papermill as pm
import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(arch="test_resnet", img_size=32, batch_size=8, wandb_mode="disabled")


def run_train(tmp_path, data, **params):
    out = tmp_path / "run"
    pm.execute_notebook(ROOT / "nbs/train.ipynb", tmp_path / "train.ipynb", cwd=ROOT, progress_bar=False,
                        parameters=dict(data=str(data), out_dir=str(out), **{**TINY, **params}))
    return out


def test_train_notebook_records_exact_parameters(tmp_path, tiny_demo):
    out = run_train(tmp_path, tiny_demo, lr=0.000123, epochs=1)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["params"]["lr"] == 0.000123 and metrics["params"]["epochs"] == 1
    for key in ("val_acc", "val_auc", "val_f1", "skipped_files"):
        assert key in metrics
    for name in ("best.safetensors", "last.safetensors", "history.csv", "val_roc.png", "val_confusion.png"):
        assert (out / name).exists(), name
    # the evaluation notebook scores that run on the demo's labelled test split
    pm.execute_notebook(ROOT / "nbs/evaluate.ipynb", tmp_path / "evaluate.ipynb", cwd=ROOT, progress_bar=False,
                        parameters=dict(checkpoint=str(out), data=str(tiny_demo), split="test", device="cpu",
                                        submission=str(tmp_path / "submission.csv")))
    assert json.loads((out / "eval_test.json").read_text())["test_n"] == 8
    assert (tmp_path / "submission.csv").read_text().startswith("id,label")


def test_papermill_cli_with_yaml_and_overrides(tmp_path, tiny_demo):
    """The README's command form: -f params file, -p overrides (lr as 1e-4 text), kernel started in the repo root."""
    params = tmp_path / "p.yaml"
    params.write_text(f"data: {tiny_demo}\narch: test_resnet\nimg_size: 32\nbatch_size: 8\nepochs: 3\n"
                      f"wandb_mode: disabled\nout_dir: {tmp_path / 'run'}\n")
    subprocess.run([sys.executable, "-m", "papermill", "nbs/train.ipynb", str(tmp_path / "out.ipynb"),
                    "-f", str(params),
                    "-p", "lr", "1e-4", "-p", "epochs", "1", "--no-progress-bar"], cwd=ROOT, check=True)
    used = json.loads((tmp_path / "run/metrics.json").read_text())["params"]
    assert (used["lr"], used["epochs"], used["arch"]) == (1e-4, 1, "test_resnet")


def test_bad_arch_fails_fast_naming_the_parameter(tmp_path):
    start = time.time()
    with pytest.raises(pm.PapermillExecutionError) as e:
        pm.execute_notebook(ROOT / "nbs/train.ipynb", tmp_path / "o.ipynb", cwd=ROOT, progress_bar=False,
                            parameters=dict(arch="not_a_model", out_dir=str(tmp_path / "run")))
    assert "arch" in str(e.value)
    assert not (tmp_path / "run").exists()  # stopped before any work
    assert time.time() - start < 60


def test_console_script(tmp_path, tiny_demo):
    subprocess.run(["aidetect", "train", "-q", "-p", "data", str(tiny_demo), "-p", "arch", "test_resnet",
                    "-p", "img_size", "32", "-p", "epochs", "1", "-p", "wandb_mode", "disabled",
                    "-p", "out_dir", str(tmp_path / "run")], check=True)
    assert (tmp_path / "run/best.safetensors").exists()
    bad = subprocess.run(["aidetect", "train", "-p", "lr", "0"], capture_output=True, text=True)
    assert bad.returncode != 0 and "lr" in bad.stderr


def test_notebook_parameters_match_trainconfig():
    """train.ipynb's parameters cell lists every TrainConfig field with the same default (one source of truth)."""
    import ast

    from aidetect.config import TrainConfig

    params = pm.inspect_notebook(ROOT / "nbs/train.ipynb")
    defaults = TrainConfig().to_dict()
    assert set(params) == set(defaults)
    assert {name: ast.literal_eval(p["default"]) for name, p in params.items()} == defaults
