"""Sweeps end to end with real papermill runs: two runs at once, one of them killed mid-way; the next call trains
exactly that run again (resuming it), the one after trains nothing; the leaderboard and the comparison notebook
show both runs with their swept parameters."""
import json
import os
import signal
import threading
import time
from pathlib import Path

import nbformat
import papermill as pm
import pytest

from aidetect.runs import format_runs, runs
from aidetect.sweep import sweep

ROOT = Path(__file__).resolve().parents[1]
GRID = [["lr", "1e-3,3e-3"]]
NAMES = ["lr=0.001", "lr=0.003"]
VICTIM = "lr=0.001"


def lock_holders(path: Path) -> list[int]:
    """The processes that have `path` open: the training process holding a run folder's `.lock`."""
    target, pids = str(path.resolve()), []
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        try:
            if os.readlink(fd) == target: pids.append(int(fd.parts[2]))
        except OSError: continue  # gone, or another user's process
    return sorted(set(pids))


def kill_mid_run(run_dir: Path, killed: list, timeout: float = 300):
    """Once `run_dir` has a resumable state and no metrics yet, SIGKILL the process training in it."""
    end = time.time() + timeout
    while time.time() < end:
        if (run_dir / "last_state.pt").exists() and not (run_dir / "metrics.json").exists():
            pids = lock_holders(run_dir / ".lock")
            for pid in pids: os.kill(pid, signal.SIGKILL)
            if pids: return killed.extend(pids)
        time.sleep(0.02)


@pytest.fixture(scope="module")
def demo_sweep(tiny_demo, tmp_path_factory):
    """Three calls of the same 2-run sweep (2 epochs, 2 jobs); a run is killed mid-way during the first."""
    d = tmp_path_factory.mktemp("sweep")
    (d / "tiny.yaml").write_text(f"data: {tiny_demo}\narch: test_resnet\nimg_size: 32\nbatch_size: 8\nepochs: 2\n"
                                 "wandb_mode: disabled\n")
    args = dict(File=[str(d / "tiny.yaml")], Param=GRID, name="demo", jobs=2, out_dir=str(d / "sweeps"))
    sweep_dir, killed, calls = d / "sweeps" / "demo", [], {}
    killer = threading.Thread(target=kill_mid_run, args=(d / "sweeps" / "demo" / VICTIM, killed), daemon=True)
    killer.start()
    mtimes = lambda: {n: (sweep_dir / n / "metrics.json").stat().st_mtime_ns for n in NAMES
                      if (sweep_dir / n / "metrics.json").exists()}
    t0 = time.time()
    with pytest.raises(ValueError) as failure: sweep(**args)
    calls["first"] = dict(error=str(failure.value), killed=killed, seconds=time.time() - t0, mtimes=mtimes(),
                          record=json.loads((sweep_dir / "sweep.json").read_text()))
    for name in ("second", "third"):
        t0 = time.time()
        calls[name] = dict(table=sweep(**args), seconds=time.time() - t0, mtimes=mtimes(),
                           record=json.loads((sweep_dir / "sweep.json").read_text()))
    print({k: round(v["seconds"], 1) for k, v in calls.items()})
    return sweep_dir, calls


def test_first_call_lists_the_killed_run_and_finishes_the_others(demo_sweep):
    sweep_dir, calls = demo_sweep
    first = calls["first"]
    assert first["killed"], "the run was not caught mid-way"
    status = {r["run"]: r["status"] for r in first["record"]["runs"]}
    assert status == {n: "failed" if n == VICTIM else "finished" for n in NAMES}
    assert "1 of 2 runs failed" in first["error"] and VICTIM in first["error"]
    victim = next(r for r in first["record"]["runs"] if r["run"] == VICTIM)
    assert "died" in victim["error"].lower() or "signal" in victim["error"].lower(), victim["error"]
    assert first["record"]["swept"] == {"lr": "1e-3,3e-3"}
    for name in NAMES:  # each run keeps its executed notebook, parameters and log
        assert {"train.ipynb", "params.yaml", "papermill.log"} <= {p.name for p in (sweep_dir / name).iterdir()}


def test_second_call_resumes_exactly_the_killed_run(demo_sweep):
    sweep_dir, calls = demo_sweep
    table = calls["second"]["table"]
    assert table.status.to_dict() == {n: "resumed" if n == VICTIM else "skipped" for n in NAMES}
    others = {n: t for n, t in calls["second"]["mtimes"].items() if n != VICTIM}
    assert others == calls["first"]["mtimes"]  # the finished runs were left alone
    assert "Resuming" in (sweep_dir / VICTIM / "papermill.log").read_text()
    metrics = json.loads((sweep_dir / VICTIM / "metrics.json").read_text())
    assert (metrics["params"]["lr"], metrics["params"]["resume"]) == (1e-3, True)
    assert {r["run"]: r["status"] for r in calls["second"]["record"]["runs"]} == table.status.to_dict()


def test_third_call_trains_nothing(demo_sweep):
    _, calls = demo_sweep
    third = calls["third"]
    assert set(third["table"].status) == {"skipped"}
    assert third["mtimes"] == calls["second"]["mtimes"]  # no metrics.json rewritten
    assert third["seconds"] < 15


def test_leaderboard_and_compare_notebook_show_both_runs(demo_sweep, tmp_path):
    sweep_dir, _ = demo_sweep
    board = runs(str(sweep_dir), csv=str(tmp_path / "board.csv"))
    assert sorted(board.index) == sorted(NAMES) and set(board.attrs["params"]) == {"lr"}
    assert board.val_acc.is_monotonic_decreasing and board.train_s.notna().all()
    assert (board.best_epoch <= 2).all() and (tmp_path / "board.csv").read_text().startswith("run,")
    text = format_runs(board)
    assert all(n in text for n in NAMES) and "val_auc" in text
    # the comparison notebook, run from nbs/ as Jupyter would
    out = tmp_path / "compare.ipynb"
    pm.execute_notebook(ROOT / "nbs/compare.ipynb", out, cwd=ROOT / "nbs", progress_bar=False,
                        parameters=dict(runs=str(sweep_dir), sort="val_auc"))
    outputs = [o for c in nbformat.read(out, as_version=4).cells if c.cell_type == "code" for o in c.outputs]
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert all(n in html for n in NAMES) and ">lr<" in html
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 2  # curves, parameters
