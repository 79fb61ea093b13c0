"""Shared fixtures: a tiny demo dataset built once per session, quiet offline W&B, and running `aidetect serve`
processes (with the load client and launcher of benchmarks/serve_load.py, importable as `serve_load`)."""
import os
import shutil
import sys
from collections import Counter
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory):
    """A small demo dataset (Kaggle layout) in a temporary folder."""
    from aidetect.synthetic import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("data") / "demo", n_pairs=32, n_test_pairs=4, size=32)


class Server:
    """`aidetect serve` in a subprocess (`serve_load.ServeProcess`) that counts the answers it got per endpoint,
    so that /metrics and the prediction log can be checked against them."""

    def __init__(self, run: Path, backend: str, log: Path, *extra: str):
        import httpx
        from serve_load import ServeProcess
        self.process, self.log = ServeProcess(run, backend, log, *extra, timeout=120), log
        self.url, self.port, self.pid = self.process.url, self.process.port, self.process.proc.pid
        self.client = httpx.Client(base_url=self.url, timeout=30)
        self.tally = Counter()  # (endpoint, status) of every request sent through `post`
        self.predictions = 0

    def post(self, path: str, **kw):
        r = self.client.post(path, **kw)
        self.tally[path, r.status_code] += 1
        if r.status_code == 200:
            self.predictions += 1 if path == "/predict" else sum("prob_ai" in p for p in r.json()["predictions"])
        return r

    def rss(self) -> dict:
        """The server's resident memory now (VmRSS) and at its peak (VmHWM), in bytes."""
        status = Path(f"/proc/{self.pid}/status").read_text().splitlines()
        fields = (line.split(":", 1) for line in status)
        return {k: int(v.split()[0]) * 1024 for k, v in fields if k in ("VmRSS", "VmHWM")}

    def stop(self):
        self.client.close()
        self.process.stop()


@pytest.fixture(scope="session")
def serve_run(tiny_demo, tmp_path_factory) -> Path:
    """A checkpoint trained for one epoch on the tiny demo."""
    from aidetect.cli import main
    d = tmp_path_factory.mktemp("serve")
    (d / "tiny.yaml").write_text(f"data: {tiny_demo}\narch: test_resnet\nimg_size: 32\nbatch_size: 16\nepochs: 1\n"
                                 f"wandb_mode: disabled\nout_dir: {d / 'run'}\n")
    main(["train", "-q", "-f", str(d / "tiny.yaml")])
    return d / "run"


@pytest.fixture(scope="session")
def torch_server(serve_run, tmp_path_factory):
    """The trained checkpoint served with PyTorch, with small byte limits (2 MiB a file, 4 MiB a body, 8 files)."""
    s = Server(serve_run, "torch", tmp_path_factory.mktemp("log") / "predictions.jsonl",
               "--max-upload-mb", "2", "--max-request-mb", "4", "--max-files", "8")
    yield s
    s.stop()


# The ONNX server's short limits, which the tests of slow clients and of the bounded log rely on.
ONNX_LIMITS = dict(header_timeout=2.0, body_timeout=2.0, max_connections=80, max_requests=4,
                   log_max_bytes=4096, log_keep=2, log_images_max_bytes=32768)


@pytest.fixture(scope="session")
def onnx_server(serve_run, tmp_path_factory):
    """The trained checkpoint served with ONNX Runtime (exported on start-up), with the short limits of
    `ONNX_LIMITS`: 2 s to send a request head or body, 80 connections, 4 requests in progress, a log rotated at
    4 KiB with 2 old files kept, and kept uploads capped at 32 KiB."""
    mb = lambda key: str(ONNX_LIMITS[key] / (1 << 20))
    s = Server(serve_run, "onnx", tmp_path_factory.mktemp("log") / "predictions.jsonl",
               *(f"--{k.replace('_', '-')}={ONNX_LIMITS[k]}" for k in ("header_timeout", "body_timeout",
                                                                       "max_connections", "max_requests", "log_keep")),
               "--log-images", "--log-max-mb", mb("log_max_bytes"), "--log-images-max-mb", mb("log_images_max_bytes"))
    yield s
    s.stop()


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
                "--disable-dev-shm-usage", "--window-size=1280,1000", f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(arg)
    d = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=driver))
    d.set_page_load_timeout(60)
    yield d
    d.quit()
