"""`aidetect drift` on real prediction logs: the demo run served (the service's app in-process, which writes the
same log as `aidetect serve`), sent its own test split (no drift), then darker, blurrier and much larger versions
of the same images (brightness, sharpness and size drift). Drift needs no web server: the command runs in a Python
without the serving extra."""
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageFilter

from aidetect.data import read_dataset
from aidetect.drift import drift
from aidetect.profile import PROFILE, write_reference_profile


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
    """(clean, moved): the prediction logs of the test split as it is, and shifted (`shifted`)."""
    d = tmp_path_factory.mktemp("logs")
    test_split = read_dataset(tiny_demo, "test").path
    clean, moved = d / "clean.jsonl", d / "moved.jsonl"
    serve_and_send(run, clean, [open(p, "rb").read() for p in test_split])
    serve_and_send(run, moved, [shifted(p) for p in test_split])
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
    page = (tmp_path / "moved" / "drift.html").read_text()
    assert "brightness" in page and "data:image/png;base64," in page

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
        assert client.get("/ready").json()["drift_report"]
        assert "brightness" in client.get("/drift").text and 'href = "drift"' in client.get("/").text


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


def test_drift_cli_needs_no_web_server(run, logs, tmp_path):
    """`aidetect drift RUN --log LOG` writes its report in a Python where the serving extra is not installed."""
    _, moved = logs
    done = subprocess.run([sys.executable, "-c", WITHOUT_SERVE, "drift", str(run), "--log", str(moved),
                           "--out-dir", str(tmp_path / "report")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "report" / "drift.json").read_text())
    assert "brightness" in report["drifted_features"]
    assert (tmp_path / "report" / "drift.html").is_file()
