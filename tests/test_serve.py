"""`aidetect serve` as a real uvicorn process: parity with `predict`, the bad-input suite, metrics and the
prediction log, ONNX Runtime, a short load run, and the web page in headless Chromium."""
import io
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from aidetect.data import load_image, read_dataset
from aidetect.model import Detector

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("AIDETECT_ARTIFACTS", ROOT / "outputs" / "test-artifacts"))
MB = 1 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`aidetect serve` in a subprocess on a free loopback port; counts the answers it got per endpoint."""

    def __init__(self, run: Path, backend: str, log: Path, *extra: str):
        self.port, self.log = free_port(), log
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-c", "from aidetect.cli import console; console()", "serve", "--checkpoint", str(run),
               "--backend", backend, "--port", str(self.port), "--log", str(log), "--log-level", "warning", *extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.client = httpx.Client(base_url=self.url, timeout=30)
        self.tally = Counter()  # (endpoint, status) of every request sent through `post`
        self.predictions = 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None: pytest.fail(f"server exited: {self.proc.stdout.read()}")
            try:
                if self.client.get("/ready").status_code == 200: return
            except httpx.TransportError: time.sleep(0.2)
        self.stop()
        pytest.fail("server did not become ready in 120 s")

    def post(self, path: str, **kw) -> httpx.Response:
        r = self.client.post(path, **kw)
        self.tally[path, r.status_code] += 1
        if r.status_code == 200:
            self.predictions += 1 if path == "/predict" else sum("prob_ai" in p for p in r.json()["predictions"])
        return r

    def rss(self) -> dict:
        status = Path(f"/proc/{self.proc.pid}/status").read_text().splitlines()
        fields = (line.split(":", 1) for line in status)
        return {k: int(v.split()[0]) * 1024 for k, v in fields if k in ("VmRSS", "VmHWM")}

    def stop(self):
        self.client.close()
        self.proc.terminate()
        try: self.proc.wait(20)
        except subprocess.TimeoutExpired: self.proc.kill()


@pytest.fixture(scope="module")
def run_dir(tiny_demo, tmp_path_factory):
    """A checkpoint trained for one epoch on the tiny demo."""
    from aidetect.cli import main
    d = tmp_path_factory.mktemp("serve")
    (d / "tiny.yaml").write_text(f"data: {tiny_demo}\narch: test_resnet\nimg_size: 32\nbatch_size: 16\nepochs: 1\n"
                                 f"wandb_mode: disabled\nout_dir: {d / 'run'}\n")
    main(["train", "-q", "-f", str(d / "tiny.yaml")])
    return d / "run"


@pytest.fixture(scope="module")
def images(tiny_demo) -> list[Path]:
    return [Path(p) for p in read_dataset(tiny_demo, "test").path]


@pytest.fixture(scope="module")
def torch_server(run_dir, tmp_path_factory):
    s = Server(run_dir, "torch", tmp_path_factory.mktemp("log") / "predictions.jsonl",
               "--max-upload-mb", "2", "--max-request-mb", "4", "--max-files", "8")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def onnx_server(run_dir, tmp_path_factory):
    s = Server(run_dir, "onnx", tmp_path_factory.mktemp("log") / "predictions.jsonl")
    yield s
    s.stop()


def encode(img: Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def png_bomb(w: int = 30000, h: int = 30000) -> bytes:
    """A real w×h 1-bit PNG of zeros: about 100 kB on disk, 900 megapixels decoded."""
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    row, z = b"\0" * (1 + (w + 7) // 8), zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(h)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def metric(text: str, name: str, **labels) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_predict_matches_notebook_predict(torch_server, run_dir, images):
    """Done 1: the live service's prob_ai equals `Detector.predict` on the same JPEG files, to 1e-5."""
    det = Detector.load(run_dir, device="cpu")
    expected = det.predict([load_image(p) for p in images])
    got = [torch_server.post("/predict", files={"file": (p.name, p.read_bytes(), "image/jpeg")}).json() for p in images]
    np.testing.assert_allclose([g["prob_ai"] for g in got], expected, atol=1e-5, rtol=0)
    assert {g["arch"] for g in got} == {"test_resnet"} and {g["run_id"] for g in got} == {run_dir.name}
    assert all(g["label"] == ("ai" if g["prob_ai"] >= 0.5 else "human") for g in got)
    files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in images]
    batch = torch_server.post("/predict/batch", files=files)
    np.testing.assert_allclose([g["prob_ai"] for g in batch.json()["predictions"]], expected, atol=1e-5, rtol=0)


def test_bad_input_suite(torch_server, run_dir, images):
    """Done 2: each bad upload gets a 4xx JSON error naming the problem; awkward but valid images succeed;
    memory stays bounded and the server answers /health and the next good request afterwards."""
    jpeg = images[0].read_bytes()
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8))
    big = encode(photo)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90°
    rotated = encode(photo.crop((0, 0, 200, 100)), exif=exif)
    gif = io.BytesIO()
    photo.convert("P").save(gif, "GIF", save_all=True, append_images=[photo.rotate(90).convert("P")])
    pal = Image.new("P", (40, 40))
    pal.putpalette([0, 0, 0, 255, 0, 0] * 128)
    good = {"rgba.png": encode(Image.new("RGBA", (50, 40), (0, 90, 200, 100)), "PNG"),
            "palette.png": encode(pal, "PNG", transparency=0),
            "cmyk.jpg": encode(Image.new("CMYK", (64, 48), (10, 200, 30, 5)), "JPEG"),
            "gray16.png": encode(Image.new("I;16", (40, 40), 40000), "PNG"),
            "gray.jpg": encode(photo.convert("L")), "exif-rotated.jpg": rotated, "animated.gif": gif.getvalue(),
            "photo.webp": encode(photo, "WEBP"), "photo.bmp": encode(photo, "BMP"), "photo.tif": encode(photo, "TIFF")}
    for name, data in good.items():
        r = torch_server.post("/predict", files={"file": (name, data, "application/octet-stream")})
        assert r.status_code == 200, (name, r.text)
        if name == "exif-rotated.jpg": assert (r.json()["width"], r.json()["height"]) == (100, 200)  # upright

    before = torch_server.rss()
    f = lambda name, data, ctype="image/jpeg": {"files": {"file": (name, data, ctype)}}
    bad = {  # name: (request, status, error kind)
        "not an image": (f("notes.txt", b"just some text, no pixels", "text/plain"), 415, "not_an_image"),
        "random bytes": (f("x.jpg", np.random.default_rng(1).bytes(5000)), 415, "not_an_image"),
        "truncated JPEG": (f("cut.jpg", big[: len(big) // 2]), 400, "corrupt_image"),
        "JPEG cut in its header": (f("cut.jpg", big[:300]), 400, "corrupt_image"),
        "empty upload": (f("empty.jpg", b""), 400, "empty_upload"),
        "misnamed field": ({"files": {"image": ("a.jpg", jpeg, "image/jpeg")}}, 422, "missing_field"),
        "no field": ({}, 422, "missing_field"),
        "text instead of a file": ({"data": {"file": "a.jpg"}}, 422, "invalid_field"),
        "raw body, not multipart": ({"content": jpeg, "headers": {"content-type": "image/jpeg"}}, 422,
                                    "missing_field"),
        "multipart without a boundary": ({"content": b"--x\r\nnonsense",
                                          "headers": {"content-type": "multipart/form-data"}}, 400, "bad_request"),
        "decompression bomb 30000x30000": (f("bomb.png", png_bomb(), "image/png"), 413, "too_many_pixels"),
        "file above the byte limit": (f("big.jpg", jpeg + b"\0" * (3 * MB)), 413, "upload_too_large"),
        "body above the byte limit": (f("huge.jpg", b"\0" * (5 * MB)), 413, "upload_too_large"),
    }
    for name, (kw, status, kind) in bad.items():
        r = torch_server.post("/predict", **kw)
        assert (r.status_code, r.json()["error"]) == (status, kind), (name, r.text)
        assert r.json()["detail"] and "Traceback" not in r.text, name
        assert torch_server.post("/predict", **f("ok.jpg", jpeg)).status_code == 200, f"not served after {name}"
    r = torch_server.post("/predict/batch", files=[("files", ("a.jpg", jpeg, "image/jpeg"))] * 9)
    assert (r.status_code, r.json()["error"]) == (413, "too_many_files")
    r = torch_server.post("/predict/batch", files=[("files", ("a.jpg", jpeg, "image/jpeg")),
                                                   ("files", ("b.png", png_bomb(), "image/png"))])
    assert [p.get("error") for p in r.json()["predictions"]] == [None, "too_many_pixels"]
    assert torch_server.client.get("/predict").status_code == 405
    assert torch_server.client.get("/health").json() == {"status": "ok"}
    after = torch_server.rss()
    assert after["VmHWM"] - before["VmHWM"] < 300 * MB, (before, after)  # the bomb was never decoded


def test_load_smoke(torch_server, images):
    """A short run of the load client: every request answered with 200 (speed is measured by the benchmark)."""
    from aidetect.serve import load_test
    r = load_test(torch_server.url, images[0].read_bytes(), clients=4, duration=2, warmup=0.5)
    assert r["errors"] == 0 and r["requests"] > 0, r
    torch_server.tally["/predict", 200] += r["requests_total"]
    torch_server.predictions += r["requests_total"]


def test_metrics_and_prediction_log(torch_server):
    """Done 5: /metrics counted exactly the requests above, and the log has one record per prediction."""
    text = torch_server.client.get("/metrics").text
    for (path, status), n in torch_server.tally.items():
        assert metric(text, "aidetect_requests_total", endpoint=path, method="POST", status=status) == n, (path, status)
    assert metric(text, "aidetect_errors_total", kind="too_many_pixels") == 2
    assert metric(text, "aidetect_errors_total", kind="missing_field") == 3
    labels = sum(metric(text, "aidetect_predictions_total", label=c) for c in ("human", "ai"))
    records = [json.loads(line) for line in torch_server.log.read_text().splitlines()]
    assert labels == len(records) == torch_server.predictions
    fields = {"ts", "width", "height", "brightness", "contrast", "sharpness", "prob_ai", "arch", "run_id"}
    assert fields <= set(records[0])
    assert "image" not in records[0]


def test_serve_refuses_a_corrupt_checkpoint(tmp_path):
    """A corrupt checkpoint stops start-up with a message: no server answering 503."""
    (tmp_path / "best.safetensors").write_bytes(b"\0" * 100)
    r = subprocess.run([sys.executable, "-c", "from aidetect.cli import console; console()", "serve", "--checkpoint",
                        str(tmp_path), "--port", str(free_port())], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "aidetect serve: cannot serve" in r.stderr and "best.safetensors" in r.stderr


def test_onnx_backend_matches_torch(onnx_server, run_dir, images):
    """The ONNX Runtime service agrees with PyTorch to 1e-4, from a dynamic-batch export."""
    det = Detector.load(run_dir, device="cpu")
    r = onnx_server.post("/predict/batch", files=[("files", (p.name, p.read_bytes(), "image/jpeg")) for p in images])
    got = r.json()["predictions"]
    assert {g["backend"] for g in got} == {"onnx"}
    np.testing.assert_allclose([g["prob_ai"] for g in got], det.predict([load_image(p) for p in images]), atol=1e-4)
    assert (run_dir / "best.onnx").is_file()


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


def test_web_page_in_headless_chromium(browser, onnx_server, run_dir, images, tmp_path):
    """Done 4: open /, upload an image, read the verdict off the page; save a screenshot."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    browser.get(onnx_server.url + "/")
    WebDriverWait(browser, 20).until(lambda d: "test_resnet" in d.find_element(By.ID, "model").text)
    browser.find_element(By.ID, "file").send_keys(str(images[1]))
    verdict = browser.find_element(By.ID, "verdict")
    WebDriverWait(browser, 30).until(lambda d: verdict.get_attribute("data-label"))
    expected = float(Detector.load(run_dir, device="cpu").predict([load_image(images[1])])[0])
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
