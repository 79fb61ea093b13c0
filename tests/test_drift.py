"""`aidetect drift` on real prediction logs: the demo run served (the service's app in-process, which writes the
same log as `aidetect serve`), sent its own test split and some training images (no drift), then darker, blurrier
and much larger versions of the same images (brightness, sharpness and size drift). The decisions keep their
false-alarm rate at the window's size and catch each shift; a log with a truncated line, garbage and records of an
older service still gets its report. Drift needs no web server: the command runs in a Python without the serving
extra."""
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from drift_calibration import SHIFTS, records
from PIL import Image, ImageFilter

from aidetect.data import read_dataset
from aidetect.drift import drift, drift_table
from aidetect.inference import load_backend
from aidetect.profile import PROFILE, read_reference_profile, write_reference_profile


@pytest.fixture(scope="module")
def run(demo_run, tiny_demo, tmp_path_factory):
    """A copy of the served run with its reference profile, written as training does at its end."""
    run = tmp_path_factory.mktemp("drift") / "run"
    shutil.copytree(demo_run, run, ignore=shutil.ignore_patterns(".*", "*.onnx"))  # not what others write meanwhile
    write_reference_profile(run, read_dataset(tiny_demo))  # the validation P(ai) from predictions_val.csv
    return run


def shifted(path) -> bytes:
    """The image darker, blurred and 4x larger, as a JPEG."""
    img = Image.open(path).convert("RGB")
    img = Image.eval(img, lambda v: v // 3).resize((img.width * 4, img.height * 4)).filter(ImageFilter.GaussianBlur(3))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def serve_and_send(run, log, uploads: list[bytes]):
    """Serve `run` with its prediction log at `log` and upload each image to /predict."""
    from fastapi.testclient import TestClient

    from aidetect.inference import load_backend
    from aidetect.server import ServeSettings
    from aidetect.service import create_app
    with TestClient(create_app(load_backend(run), ServeSettings(log=str(log)))) as client:
        for i, data in enumerate(uploads):
            r = client.post("/predict", files={"file": (f"{i}.jpg", data)})
            assert r.status_code == 200, r.text
    assert len(log.read_text().splitlines()) == len(uploads)


@pytest.fixture(scope="module")
def logs(run, tiny_demo, tmp_path_factory) -> tuple[Path, Path]:
    """(clean, moved): the prediction logs of the test split and 16 training images (24, above drift's minimum of 20
    images) as they are, and shifted (`shifted`)."""
    d = tmp_path_factory.mktemp("logs")
    images = [*read_dataset(tiny_demo, "test").path, *read_dataset(tiny_demo).path[:16]]
    clean, moved = d / "clean.jsonl", d / "moved.jsonl"
    serve_and_send(run, clean, [open(p, "rb").read() for p in images])
    serve_and_send(run, moved, [shifted(p) for p in images])
    return clean, moved


def test_drift_on_real_prediction_logs(run, logs, tiny_demo, tmp_path):
    assert json.loads((run / PROFILE).read_text())["n_sampled"] == len(read_dataset(tiny_demo))
    clean, moved = logs

    # the tiny demo's images are crops of 15 photographs, not independent draws: the clean log is tested at 1%
    same = drift(str(run), log=str(clean), out_dir=str(tmp_path / "same"), alpha=0.01)
    assert same["drifted_features"] == [], same["features"]
    assert not same["dataset_drift"]

    report = drift(str(run), log=str(moved), out_dir=str(tmp_path / "moved"))
    assert {"brightness", "sharpness", "width", "height"} <= set(report["drifted_features"]), report["features"]
    saved = json.loads((tmp_path / "moved" / "drift.json").read_text())
    assert saved["features"]["brightness"]["drifted"] and saved["features"]["brightness"]["p_value"] < 0.05
    assert set(saved["features"]) == {"format", "width", "height", "brightness", "contrast", "sharpness", "prob_ai"}
    assert (saved["alpha"], saved["n_current"], saved["features"]["brightness"]["n"]) == (0.05, 24, 24)
    page = (tmp_path / "moved" / "drift.html").read_text()
    assert "brightness" in page and "data:image/png;base64," in page and "at α = 0.05 on 24 images" in page

    # the same as an experiment notebook: papermill writes the executed record and the report
    import papermill
    papermill.execute_notebook("nbs/drift.ipynb", str(tmp_path / "drift.ipynb"), progress_bar=False,
                               parameters=dict(run_dir=str(run), log=str(moved), out_dir=str(tmp_path / "nb")))
    assert json.loads((tmp_path / "nb" / "drift.json").read_text())["features"]["sharpness"]["drifted"]

    # written into the run folder (the default), the report is linked from the service's page
    from fastapi.testclient import TestClient

    from aidetect.inference import load_backend
    from aidetect.server import ServeSettings
    from aidetect.service import create_app
    drift(str(run), log=str(moved))
    with TestClient(create_app(load_backend(run), ServeSettings(no_log=True))) as client:
        ready = client.get("/ready").json()
        assert ready["drift_report"] and ready["drift"]["alpha"] == 0.05 and ready["drift"]["n_current"] == 24
        assert "at α = 0.05 on 24 images" in ready["drift"]["verdict"], ready["drift"]
        assert "brightness" in client.get("/drift").text and 'href = "drift"' in client.get("/").text


def test_false_alarms_and_power_at_the_window_size(run, tiny_demo):
    """Windows of 24 of the 64 training images, each checked against the other 40 as reference (independent, as new
    traffic would be), scored by the served model: at most 5% of the (window, feature) decisions flag; the same
    windows darker (x 0.6), blurred (sigma 1.5) or upscaled 2x have the moved feature flagged in at least 90% of them.
    The benchmark benchmarks/drift_calibration.py measures the same on the demo, at 50, 100 and 200 images."""
    reference, ref_probs = read_reference_profile(run)
    paths = read_dataset(tiny_demo).path.tolist()
    order = [paths.index(p) for p in read_dataset(tiny_demo).sample(len(paths), random_state=0).path]  # profile's rows
    backend = load_backend(run)
    described = {"unchanged": pd.DataFrame(records(backend, paths)),
                 **{n: pd.DataFrame(records(backend, paths, f)) for n, (f, _) in SHIFTS.items()}}
    assert np.allclose(described["unchanged"].brightness.to_numpy()[order], reference.brightness, atol=1e-3)
    flags, hits = [], {n: 0 for n in SHIFTS}
    for seed in range(20):
        window = np.random.default_rng(seed).choice(len(paths), 24, replace=False)
        rest = reference.drop(index=[order.index(i) for i in window])
        flags += drift_table(rest, ref_probs, described["unchanged"].iloc[window]).drifted.tolist()
        for name, (_, moved) in SHIFTS.items():
            hits[name] += bool(drift_table(rest, ref_probs, described[name].iloc[window]).drifted[list(moved)].all())
    assert np.mean(flags) <= 0.05, np.mean(flags)
    assert all(h >= 18 for h in hits.values()), hits


def test_drift_cli_errors(run, tmp_path):
    with pytest.raises(FileNotFoundError, match="predictions.jsonl"):
        drift(str(run))  # the served copies logged elsewhere: the default log is absent
    with pytest.raises(FileNotFoundError, match=PROFILE):
        drift(str(tmp_path), log=str(tmp_path / "x.jsonl"))


# Python with the serving extra's packages missing: importing any of them fails, as where it is not installed.
WITHOUT_SERVE = """
import sys
for name in ("fastapi", "starlette", "uvicorn", "multipart", "python_multipart", "prometheus_client", "onnx",
             "onnxscript", "onnxruntime"):
    sys.modules[name] = None
from aidetect.cli import main
main(sys.argv[1:])
"""


def imperfect(log: Path, dest: Path) -> Path:
    """`log` as a careless world leaves it: a line of garbage, records of an older service without `contrast` after
    the sixth, and a copy of the first record cut mid-write at the end (the service killed)."""
    lines = log.read_text().splitlines()
    older = [json.dumps({k: v for k, v in json.loads(line).items() if k != "contrast"}) for line in lines[6:]]
    dest.write_text("\n".join([*lines[:6], "\x00\x00garbage", *older, lines[0][:40]]))
    return dest


def test_drift_cli_needs_no_web_server(run, logs, tmp_path):
    """`aidetect drift RUN --log LOG` writes its report in a Python where the serving extra is not installed, from an
    imperfect log: the bad lines skipped and counted, contrast reported as too few images, the rest decided."""
    _, moved = logs
    log = imperfect(moved, tmp_path / "imperfect.jsonl")
    done = subprocess.run([sys.executable, "-c", WITHOUT_SERVE, "drift", str(run), "--log", str(log),
                           "--out-dir", str(tmp_path / "report")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "report" / "drift.json").read_text())
    assert "brightness" in report["drifted_features"] and report["features"]["brightness"]["n"] == 24
    assert (report["skipped_lines"], report["n_current"], report["undecided_features"]) == (2, 24, ["contrast"])
    contrast = report["features"]["contrast"]
    assert (contrast["decision"], contrast["n"], contrast["drifted"]) == ("too few images (6 < 20)", 6, None)
    page = (tmp_path / "report" / "drift.html").read_text()
    assert "2 line(s) of the log skipped" in page and "too few images to decide on contrast" in page
    assert "2 log line(s) skipped" in done.stdout
