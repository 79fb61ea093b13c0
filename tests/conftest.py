"""Shared fixtures: a tiny demo dataset and one run trained on it through the papermill train notebook, each made
once per test session (once for all pytest-xdist workers), quiet offline W&B, and running `aidetect serve`
processes (with the load client and launcher of benchmarks/serve_load.py, importable as `serve_load`)."""
import fcntl
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")
# pytest-xdist keeps every core busy with a worker: its torch (and the kernels and processes it starts) uses one thread
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
ROOT = Path(__file__).resolve().parents[1]


# pytest-xdist hands out whole test modules and notebooks (--dist loadscope --no-loadscope-reorder) in the order
# collected: the longest go first, so that the shared run is trained early, the many short notebooks fill the end and
# the workers finish together. Test modules not listed follow these; notebooks come last.
LONGEST_FIRST = ["test_serve.py", "test_sweep.py", "test_surfaces.py", "test_lab.py", "test_drift.py", "test_ddp.py",
                 "test_generalize.py", "test_papermill.py", "test_audit.py", "test_bench.py", "test_reliability.py"]


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank) + (item.path.suffix == ".ipynb")))  # stable


def shared(tmp_path_factory, name: str, make) -> Path:
    """The folder `name`, made by `make(folder)` once per test session: under pytest-xdist the first worker that
    asks makes it while the others wait on a lock, then all use the same folder."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"): base = base.parent  # the session's folder, above each worker's own
    folder, done = base / "shared" / name, base / "shared" / f"{name}.done"
    folder.parent.mkdir(exist_ok=True)
    with open(base / "shared" / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # what a worker that failed left
            make(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory) -> Path:
    """A small demo dataset (Kaggle layout): 64 training images (32 photo/AI pairs) and 8 test images, 32 px."""
    from aidetect.synthetic import make_demo_dataset
    return shared(tmp_path_factory, "demo", lambda d: make_demo_dataset(d, n_pairs=32, n_test_pairs=4, size=32))


# The shared run: a parameter file, overridden on papermill's command line as the README shows it.
DEMO_RUN_FILE = "arch: test_resnet\nimg_size: 32\nbatch_size: 8\nepochs: 3\nwandb_mode: disabled\n"
DEMO_RUN_OVERRIDES = dict(lr="3e-3", epochs="1")


@pytest.fixture(scope="session")
def demo_run(tiny_demo, tmp_path_factory) -> Path:
    """A one-epoch run on the tiny demo, trained once per session by the README's command form: papermill's CLI
    on nbs/train.ipynb with a -f parameter file and -p overrides (`DEMO_RUN_FILE`, `DEMO_RUN_OVERRIDES`). The
    papermill, evaluation, reliability, serving and drift tests read it; none of them changes its record."""
    def make(d: Path):
        d.mkdir()
        (d / "params.yaml").write_text(f"data: {tiny_demo}\n{DEMO_RUN_FILE}out_dir: {d / 'run'}\n"
                                       f"cache: {d / 'cache'}\n")
        overrides = [a for k, v in DEMO_RUN_OVERRIDES.items() for a in ("-p", k, v)]
        done = subprocess.run([sys.executable, "-m", "papermill", "nbs/train.ipynb", str(d / "train.ipynb"),
                               "-f", str(d / "params.yaml"), *overrides, "--no-progress-bar"],
                              cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
    return shared(tmp_path_factory, "demo-run", make) / "run"


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
def torch_server(demo_run, tmp_path_factory):
    """The trained checkpoint served with PyTorch, with small byte limits (2 MiB a file, 4 MiB a body, 8 files)."""
    s = Server(demo_run, "torch", tmp_path_factory.mktemp("log") / "predictions.jsonl",
               "--max-upload-mb", "2", "--max-request-mb", "4", "--max-files", "8")
    yield s
    s.stop()


# The ONNX server's short limits, which the tests of slow clients and of the bounded log rely on.
ONNX_LIMITS = dict(header_timeout=2.0, body_timeout=2.0, max_connections=80, max_requests=4,
                   log_max_bytes=4096, log_keep=2, log_images_max_bytes=32768)


@pytest.fixture(scope="session")
def onnx_server(demo_run, tmp_path_factory):
    """The trained checkpoint served with ONNX Runtime (exported on start-up), with the short limits of
    `ONNX_LIMITS`: 2 s to send a request head or body, 80 connections, 4 requests in progress, a log rotated at
    4 KiB with 2 old files kept, and kept uploads capped at 32 KiB."""
    mb = lambda key: str(ONNX_LIMITS[key] / (1 << 20))
    s = Server(demo_run, "onnx", tmp_path_factory.mktemp("log") / "predictions.jsonl",
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
