"""`aidetect serve` as a real uvicorn process: parity with `Detector.predict`, uploads that must not cost memory
or break the server (bombs, extreme shapes), slow clients that must not take it down, metrics and the prediction
log (rotated and capped), ONNX Runtime, a short load run, and the web page in headless Chromium. Behaviour that
needs no real process (decoding, every bad request, limits) is tested in-process in nbs/13_inference.ipynb and
nbs/14_service.ipynb; the servers are the fixtures of conftest.py."""
import io
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import ONNX_LIMITS
from PIL import Image
from serve_load import free_port, load_test

from aidetect.data import load_image, read_dataset
from aidetect.model import Detector, read_checkpoint_meta
from aidetect.prediction_log import read_prediction_log
from aidetect.server import metric_value

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


def png(w: int, h: int, seed: int = 0) -> bytes:
    """A w×h PNG of random RGB noise."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def closed(sock: socket.socket, wait: float = 0.0) -> bool:
    """Whether the server has closed `sock` (waiting up to `wait` seconds for it)."""
    sock.settimeout(wait or 1e-3)
    try: return sock.recv(1 << 16) == b""
    except TimeoutError: return False
    except OSError: return True


def test_predict_matches_detector_predict(torch_server, demo_run, images):
    """The live service's prob_ai, single and batched, equals `Detector.predict` on the same JPEG files, to 1e-5;
    labels follow the checkpoint's threshold, which every answer and /ready report; /ready names the run and the
    checkpoint file, not the host's paths."""
    det = Detector.load(demo_run, device="cpu")
    expected = det.predict([load_image(p) for p in images])
    got = [torch_server.post("/predict", files={"file": (p.name, p.read_bytes(), "image/jpeg")}).json() for p in images]
    np.testing.assert_allclose([g["prob_ai"] for g in got], expected, atol=1e-5, rtol=0)
    assert {g["arch"] for g in got} == {"test_resnet"} and {g["run_id"] for g in got} == {demo_run.name}
    threshold = float(read_checkpoint_meta(demo_run / "best.safetensors").get("threshold", 0.5))
    assert all(g["label"] == ("ai" if g["prob_ai"] >= threshold else "human") for g in got)
    assert {g["threshold"] for g in got} == {threshold}
    ready = torch_server.process.ready
    assert (ready["checkpoint"], ready["run_id"], ready["threshold"]) == ("best.safetensors", demo_run.name, threshold)
    assert str(demo_run.parent) not in json.dumps(ready)
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


def test_extreme_shapes_cost_little(torch_server):
    """1×100000 and 100000×1 PNGs (about 350 kB, far under --max-pixels), three of each at once, are answered
    (the model sees their centre 2:1, so the work is bounded) within seconds, and the server's peak memory grows
    by less than 300 MB; /health answers meanwhile."""
    uploads = [png(1, 100_000, i) for i in range(3)] + [png(100_000, 1, i) for i in range(3)]
    before, start = torch_server.rss(), time.perf_counter()
    post = lambda data: httpx.post(torch_server.url + "/predict", files={"file": ("strip.png", data, "image/png")},
                                   timeout=60)
    with ThreadPoolExecutor(len(uploads)) as ex:
        answers = list(ex.map(post, uploads))
        health = httpx.get(torch_server.url + "/health", timeout=10)
    elapsed, after = time.perf_counter() - start, torch_server.rss()
    assert [r.status_code for r in answers] == [200] * 6, [r.text for r in answers]
    assert [(r.json()["width"], r.json()["height"]) for r in answers] == [(1, 100_000)] * 3 + [(100_000, 1)] * 3
    assert health.status_code == 200 and elapsed < 10, elapsed
    assert after["VmHWM"] - before["VmHWM"] < 300 * MB, (before, after)
    torch_server.tally["/predict", 200] += 6
    torch_server.predictions += 6


def test_slow_clients_cannot_take_the_service_down(onnx_server, images):
    """100 connections that send half a request head (more than --max-connections 80) and 5 that trickle one a
    byte at a time: /health and /predict still answer 200 within seconds; the oldest slow connections are closed
    at once to make room, all of them at the 2 s header deadline. Then 4 requests whose bodies stall (the
    --max-requests limit): /predict gets 503 `busy` while /health answers, and once the 2 s body deadline has
    closed them, /predict answers 200 again."""
    limit, addr = ONNX_LIMITS["header_timeout"], ("127.0.0.1", onnx_server.port)
    jpeg = {"file": ("a.jpg", images[0].read_bytes(), "image/jpeg")}
    slow = [socket.create_connection(addr) for _ in range(100)]
    for sock in slow: sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data")
    opened, trickling, stop = time.monotonic(), [socket.create_connection(addr) for _ in range(5)], threading.Event()
    def trickle():
        while not stop.is_set():
            for sock in trickling:
                try: sock.send(b"G")
                except OSError: pass
            time.sleep(0.2)
    threading.Thread(target=trickle, daemon=True).start()
    try:
        t = time.perf_counter()
        assert httpx.get(onnx_server.url + "/health", timeout=10).status_code == 200
        assert httpx.post(onnx_server.url + "/predict", files=jpeg, timeout=10).status_code == 200
        assert time.perf_counter() - t < 5
        assert sum(closed(sock) for sock in slow) >= 20  # past 80 connections, the oldest idle ones went at once
        time.sleep(max(0.0, opened + limit + 1.5 - time.monotonic()))
        assert all(closed(sock, 1.0) for sock in slow + trickling)
    finally:
        stop.set()
        for sock in slow + trickling: sock.close()

    head = (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 100000\r\n\r\n--b\r\n")
    stalled = [socket.create_connection(addr) for _ in range(ONNX_LIMITS["max_requests"])]
    for sock in stalled: sock.sendall(head)
    try:
        time.sleep(0.5)
        r = httpx.post(onnx_server.url + "/predict", files=jpeg, timeout=10)
        assert (r.status_code, r.json()["error"]) == (503, "busy"), r.text
        assert httpx.get(onnx_server.url + "/health", timeout=10).status_code == 200
        assert all(closed(sock, ONNX_LIMITS["body_timeout"] + 2) for sock in stalled)
        time.sleep(0.2)
        assert httpx.post(onnx_server.url + "/predict", files=jpeg, timeout=10).status_code == 200
    finally:
        for sock in stalled: sock.close()


def test_log_rotates_and_kept_images_are_capped(onnx_server):
    """With a 4 KiB log kept in 2 old files and 32 KiB of kept images, 24 distinct uploads leave 3 log files of at
    most 4 KiB, read back oldest first and ending with the last upload; kept images stay under 32 KiB, and the
    images of the latest records are there."""
    uploads = [(f"noise{i:02d}.png", png(32, 32, 100 + i)) for i in range(24)]
    for i in range(0, 24, 8):
        r = onnx_server.post("/predict/batch", files=[("files", (n, d, "image/png")) for n, d in uploads[i:i + 8]])
        assert all("prob_ai" in p for p in r.json()["predictions"]), r.text
    log = onnx_server.log
    files = sorted(log.parent.glob(log.name + "*"))
    assert [f.name for f in files] == [log.name, log.name + ".1", log.name + ".2"]
    assert all(f.stat().st_size <= ONNX_LIMITS["log_max_bytes"] for f in files)
    df = read_prediction_log(log)
    assert len(df) > sum(1 for _ in log.open()) and df.ts.iloc[0] <= df.ts.iloc[-1]  # the oldest file first
    assert set(df.filename[-4:]) <= {n for n, _ in uploads[-8:]}
    images = list((log.parent / "predictions-images").iterdir())
    assert 0 < sum(f.stat().st_size for f in images) <= ONNX_LIMITS["log_images_max_bytes"]
    assert (log.parent / df.image.iloc[-1]).is_file()


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


def test_serve_refuses_a_corrupt_checkpoint(tmp_path, demo_run):
    """A checkpoint whose weights were damaged under an intact header (the checksum in the header catches it)
    stops start-up with a message naming the file and exit status 1: no server answering 503. (A file that is
    not a checkpoint at all is refused the same way, tested in-process in nbs/14_service.ipynb.)"""
    data = bytearray((demo_run / "best.safetensors").read_bytes())
    data[-200:-100] = bytes(b ^ 0xFF for b in data[-200:-100])  # inside the last tensor; the header is intact
    (tmp_path / "best.safetensors").write_bytes(bytes(data))
    assert read_checkpoint_meta(tmp_path / "best.safetensors")["arch"] == "test_resnet"  # the header still reads
    r = subprocess.run([sys.executable, "-c", "from aidetect.cli import console; console()", "serve", "--checkpoint",
                        str(tmp_path), "--port", str(free_port())], capture_output=True, text=True, timeout=180)
    assert r.returncode == 1 and "aidetect serve: cannot serve" in r.stderr, r.stderr
    assert str(tmp_path / "best.safetensors") in r.stderr and "corrupt" in r.stderr and "checksum" in r.stderr


def test_onnx_backend_matches_torch(onnx_server, demo_run, images):
    """The ONNX Runtime service agrees with PyTorch to 1e-4, from a dynamic-batch export made at start-up."""
    det = Detector.load(demo_run, device="cpu")
    r = onnx_server.post("/predict/batch", files=[("files", (p.name, p.read_bytes(), "image/jpeg")) for p in images])
    got = r.json()["predictions"]
    assert {g["backend"] for g in got} == {"onnx"}
    np.testing.assert_allclose([g["prob_ai"] for g in got], det.predict([load_image(p) for p in images]), atol=1e-4)
    assert (demo_run / "best.onnx").is_file()




def test_web_page_in_headless_chromium(browser, onnx_server, demo_run, images, tmp_path):
    """The page at / shows the model; uploading an image shows its verdict and P(ai), as `Detector.predict` gives
    them; a file that is not an image shows the service's message instead. A screenshot is saved."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    browser.get(onnx_server.url + "/")
    WebDriverWait(browser, 20).until(lambda d: "test_resnet" in d.find_element(By.ID, "model").text)
    browser.find_element(By.ID, "file").send_keys(str(images[1]))
    verdict = browser.find_element(By.ID, "verdict")
    WebDriverWait(browser, 30).until(lambda d: verdict.get_attribute("data-label"))
    expected = float(Detector.load(demo_run, device="cpu").predict([load_image(images[1])])[0])
    label, prob = verdict.get_attribute("data-label"), float(verdict.get_attribute("data-prob-ai"))
    threshold = float(verdict.get_attribute("data-threshold"))
    assert threshold == onnx_server.process.ready["threshold"]
    assert abs(prob - expected) < 1e-4 and label == ("ai" if expected >= threshold else "human")
    assert f"{100 * prob:.1f}%" in verdict.text and f"threshold {100 * threshold:.1f}%" in verdict.text
    assert ("AI-generated" if label == "ai" else "Real photograph") in verdict.text
    assert browser.execute_script("return document.getElementById('preview').naturalWidth") > 0
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "serve-web-page.png"))
    # a file that is not an image: the page shows the service's message instead of a verdict
    (tmp_path / "notes.txt").write_text("not an image")
    browser.find_element(By.ID, "file").send_keys(str(tmp_path / "notes.txt"))
    WebDriverWait(browser, 30).until(lambda d: verdict.get_attribute("data-error") == "not_an_image")
    assert "Cannot predict" in verdict.text and verdict.get_attribute("data-label") is None
