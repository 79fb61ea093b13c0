"""`aidetect serve` as a real uvicorn process: parity with `Detector.predict`, uploads that must not cost memory
or break the server, metrics and the prediction log, ONNX Runtime, a short load run, and the web page in headless
Chromium. Behaviour that needs no real process (decoding, every bad request, limits) is tested in-process in
nbs/08_inference.ipynb and nbs/09_service.ipynb; the servers are the fixtures of conftest.py."""
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from serve_load import free_port, load_test

from aidetect.data import load_image, read_dataset
from aidetect.model import Detector
from aidetect.service import metric_value

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("AIDETECT_ARTIFACTS", ROOT / "outputs" / "test-artifacts"))
MB = 1 << 20


@pytest.fixture(scope="module")
def images(tiny_demo) -> list[Path]:
    return [Path(p) for p in read_dataset(tiny_demo, "test").path]


def png_bomb(w: int = 30000, h: int = 30000) -> bytes:
    """A real w×h 1-bit PNG of zeros: about 100 kB on disk, 900 megapixels decoded."""
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    row, z = b"\0" * (1 + (w + 7) // 8), zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(h)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_predict_matches_detector_predict(torch_server, serve_run, images):
    """The live service's prob_ai, single and batched, equals `Detector.predict` on the same JPEG files, to 1e-5."""
    det = Detector.load(serve_run, device="cpu")
    expected = det.predict([load_image(p) for p in images])
    got = [torch_server.post("/predict", files={"file": (p.name, p.read_bytes(), "image/jpeg")}).json() for p in images]
    np.testing.assert_allclose([g["prob_ai"] for g in got], expected, atol=1e-5, rtol=0)
    assert {g["arch"] for g in got} == {"test_resnet"} and {g["run_id"] for g in got} == {serve_run.name}
    assert all(g["label"] == ("ai" if g["prob_ai"] >= 0.5 else "human") for g in got)
    files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in images]
    batch = torch_server.post("/predict/batch", files=files)
    np.testing.assert_allclose([g["prob_ai"] for g in batch.json()["predictions"]], expected, atol=1e-5, rtol=0)


def test_bombs_and_oversized_bodies_cost_no_memory(torch_server, images):
    """A real 30000x30000 PNG bomb (alone and inside a batch), a file above the per-file limit and a body above the
    request limit get their 413 over a real socket; the server's peak memory stays within 300 MB of what it was,
    and it answers /health and the next good request afterwards."""
    jpeg, bomb = images[0].read_bytes(), png_bomb()
    before = torch_server.rss()
    f = lambda name, data, ctype="image/jpeg": {"files": {"file": (name, data, ctype)}}
    cases = {"decompression bomb 30000x30000": (f("bomb.png", bomb, "image/png"), "too_many_pixels"),
             "file above the byte limit": (f("big.jpg", jpeg + b"\0" * (3 * MB)), "upload_too_large"),
             "body above the byte limit": (f("huge.jpg", b"\0" * (5 * MB)), "upload_too_large")}
    for name, (kw, kind) in cases.items():
        r = torch_server.post("/predict", **kw)
        assert (r.status_code, r.json()["error"]) == (413, kind), (name, r.text)
        assert r.json()["detail"] and "Traceback" not in r.text, name
        assert torch_server.post("/predict", **f("ok.jpg", jpeg)).status_code == 200, f"not served after {name}"
    r = torch_server.post("/predict/batch", files=[("files", ("a.jpg", jpeg, "image/jpeg")),
                                                   ("files", ("b.png", bomb, "image/png"))])
    assert [p.get("error") for p in r.json()["predictions"]] == [None, "too_many_pixels"]
    assert torch_server.client.get("/health").json() == {"status": "ok"}
    after = torch_server.rss()
    assert after["VmHWM"] - before["VmHWM"] < 300 * MB, (before, after)  # the bomb was never decoded


def test_load_smoke(torch_server, images):
    """A short run of the load client: every request answered with 200 (speed is measured by the benchmark)."""
    r = load_test(torch_server.url, images[0].read_bytes(), clients=4, duration=2, warmup=0.5)
    assert r["errors"] == 0 and r["requests"] > 0, r
    torch_server.tally["/predict", 200] += r["requests_total"]
    torch_server.predictions += r["requests_total"]


def test_metrics_and_prediction_log(torch_server):
    """/metrics counted exactly the requests the tests above sent, by endpoint and status, and the errors by kind;
    the prediction log has one record per prediction, with the drift statistics and no image."""
    text = torch_server.client.get("/metrics").text
    for (path, status), n in torch_server.tally.items():
        assert metric_value(text, "aidetect_requests_total", endpoint=path, method="POST", status=status) == n, \
            (path, status)
    assert metric_value(text, "aidetect_errors_total", kind="too_many_pixels") == 2
    assert metric_value(text, "aidetect_errors_total", kind="upload_too_large") == 2
    labels = metric_value(text, "aidetect_predictions_total")
    records = [json.loads(line) for line in torch_server.log.read_text().splitlines()]
    assert labels == len(records) == torch_server.predictions
    fields = {"ts", "width", "height", "brightness", "contrast", "sharpness", "prob_ai", "arch", "run_id"}
    assert fields <= set(records[0])
    assert "image" not in records[0]


def test_serve_refuses_a_corrupt_checkpoint(tmp_path):
    """A corrupt checkpoint stops start-up with a message and exit status 1: no server answering 503."""
    (tmp_path / "best.safetensors").write_bytes(b"\0" * 100)
    r = subprocess.run([sys.executable, "-c", "from aidetect.cli import console; console()", "serve", "--checkpoint",
                        str(tmp_path), "--port", str(free_port())], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "aidetect serve: cannot serve" in r.stderr and "best.safetensors" in r.stderr


def test_onnx_backend_matches_torch(onnx_server, serve_run, images):
    """The ONNX Runtime service agrees with PyTorch to 1e-4, from a dynamic-batch export made at start-up."""
    det = Detector.load(serve_run, device="cpu")
    r = onnx_server.post("/predict/batch", files=[("files", (p.name, p.read_bytes(), "image/jpeg")) for p in images])
    got = r.json()["predictions"]
    assert {g["backend"] for g in got} == {"onnx"}
    np.testing.assert_allclose([g["prob_ai"] for g in got], det.predict([load_image(p) for p in images]), atol=1e-4)
    assert (serve_run / "best.onnx").is_file()


@pytest.fixture
def browser(tmp_path):
    """Headless Debian Chromium through Selenium and /usr/bin/chromedriver (nothing downloaded)."""
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not (Path(chromium).exists() and Path(driver).exists()):
        pytest.skip("Chromium and chromedriver are not installed: run `make setup-browser`")
    webdriver = pytest.importorskip("selenium.webdriver")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=900,1000", f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(arg)
    d = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=driver))
    d.set_page_load_timeout(30)
    yield d
    d.quit()


def test_web_page_in_headless_chromium(browser, onnx_server, serve_run, images, tmp_path):
    """The page at / shows the model; uploading an image shows its verdict and P(ai), as `Detector.predict` gives
    them; a file that is not an image shows the service's message instead. A screenshot is saved."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    browser.get(onnx_server.url + "/")
    WebDriverWait(browser, 20).until(lambda d: "test_resnet" in d.find_element(By.ID, "model").text)
    browser.find_element(By.ID, "file").send_keys(str(images[1]))
    verdict = browser.find_element(By.ID, "verdict")
    WebDriverWait(browser, 30).until(lambda d: verdict.get_attribute("data-label"))
    expected = float(Detector.load(serve_run, device="cpu").predict([load_image(images[1])])[0])
    label, prob = verdict.get_attribute("data-label"), float(verdict.get_attribute("data-prob-ai"))
    assert abs(prob - expected) < 1e-4 and label == ("ai" if expected >= 0.5 else "human")
    assert f"{100 * prob:.1f}%" in verdict.text
    assert ("AI-generated" if label == "ai" else "Real photograph") in verdict.text
    assert browser.execute_script("return document.getElementById('preview').naturalWidth") > 0
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "serve-web-page.png"))
    # a file that is not an image: the page shows the service's message instead of a verdict
    (tmp_path / "notes.txt").write_text("not an image")
    browser.find_element(By.ID, "file").send_keys(str(tmp_path / "notes.txt"))
    WebDriverWait(browser, 30).until(lambda d: verdict.get_attribute("data-error") == "not_an_image")
    assert "Cannot predict" in verdict.text and verdict.get_attribute("data-label") is None
