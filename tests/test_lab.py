"""JupyterLab on the project, as `make lab` starts it: a real server on loopback with a token. /lab opens
nbs/train.ipynb in headless Chromium (a screenshot is saved), and a kernel started through the server's REST API
imports this checkout's aidetect and trains one demo batch over the websocket, its progress bar a widget."""
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from serve_load import free_port

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "outputs" / "test-artifacts"
WIDGET = "application/vnd.jupyter.widget-view+json"


class Lab:
    """`jupyter lab` in a subprocess, with its settings, workspaces and runtime files in a temporary folder."""

    def __init__(self, tmp: Path):
        self.port, self.token = free_port(), uuid.uuid4().hex
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"), "JUPYTER_CONFIG_DIR": str(tmp / "config"),
               "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
        cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0", f"--ServerApp.root_dir={ROOT}",
               f"--IdentityProvider.token={self.token}", f"--LabApp.workspaces_dir={tmp / 'workspaces'}",
               f"--LabApp.user_settings_dir={tmp / 'settings'}", *["--allow-root"] * (os.geteuid() == 0),
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
        news = tmp / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
        news.parent.mkdir(parents=True)
        news.write_text('{"fetchNews": "false", "checkForUpdates": false}')  # no news prompt over the screenshot
        self.log = tmp / "lab.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.client = httpx.Client(base_url=self.url, headers={"Authorization": f"token {self.token}"}, timeout=30)
        self._wait()

    def _wait(self, timeout: float = 60):
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None: pytest.fail(f"jupyter lab exited:\n{self.log.read_text()[-3000:]}")
            try:
                if self.client.get("/api/status").status_code == 200: return
            except httpx.TransportError: pass
            time.sleep(0.3)
        pytest.fail(f"jupyter lab did not answer in {timeout} s:\n{self.log.read_text()[-3000:]}")

    def execute(self, code: str, path: str = "nbs", timeout: float = 120) -> list[dict]:
        """Run `code` in a new kernel (working in `path`) over the websocket; the iopub messages it caused."""
        import websocket
        kernel = self.client.post("/api/kernels", json={"name": "python3", "path": path}).json()["id"]
        ws = websocket.create_connection(f"ws://127.0.0.1:{self.port}/api/kernels/{kernel}/channels"
                                         f"?token={self.token}", timeout=timeout)
        try:
            msg_id = uuid.uuid4().hex
            ws.send(json.dumps({"header": {"msg_id": msg_id, "username": "test", "session": uuid.uuid4().hex,
                                           "msg_type": "execute_request", "version": "5.3"},
                                "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                                "content": {"code": code, "silent": False, "store_history": False,
                                            "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}}))
            replies, end = [], time.time() + timeout
            while time.time() < end:
                msg = json.loads(ws.recv())
                if msg.get("parent_header", {}).get("msg_id") != msg_id or msg["channel"] != "iopub": continue
                if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle": return replies
                replies.append(msg)
            pytest.fail(f"the cell did not finish in {timeout} s: {replies[-5:]}")
        finally:
            ws.close()
            self.client.delete(f"/api/kernels/{kernel}")

    def stop(self):
        try: self.client.post("/api/shutdown")  # stops its kernels too
        except httpx.TransportError: pass
        try: self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.client.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    pytest.importorskip("jupyterlab", reason="JupyterLab is not installed: pip install -e '.[lab]' (make setup-lab)")
    server = Lab(tmp_path_factory.mktemp("lab"))
    yield server
    server.stop()
    assert server.proc.returncode is not None




def test_lab_opens_the_training_notebook(lab, browser):
    """/lab with the token shows nbs/train.ipynb: its rendered title and its `parameters` cell's code."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    browser.get(f"{lab.url}/lab/tree/nbs/train.ipynb?token={lab.token}")
    title = "//div[contains(@class,'jp-MarkdownOutput')]//h1[contains(., 'Train a detector')]"
    WebDriverWait(browser, 90).until(lambda d: d.find_elements(By.XPATH, title))
    WebDriverWait(browser, 30).until(lambda d: any("out_dir" in e.text for e in d.find_elements(
        By.CSS_SELECTOR, ".jp-NotebookPanel .jp-CodeCell .cm-content")))
    assert "train.ipynb" in browser.find_element(By.CSS_SELECTOR, ".lm-TabBar-tab.jp-mod-current").text
    time.sleep(1)  # let the last cells paint before the screenshot
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "lab-train.png"))


TRAIN_ONE_BATCH = """
import os, tempfile, aidetect
from aidetect.config import TrainConfig
from aidetect.synthetic import make_demo_dataset
from aidetect.train import fit
d = tempfile.mkdtemp()
root = make_demo_dataset(f"{d}/demo", n_pairs=10, n_test_pairs=2, size=32)  # 16 training images: one batch
m = fit(TrainConfig(data=str(root), arch="test_resnet", img_size=32, epochs=1, batch_size=16, cache="off",
                    wandb_mode="disabled", out_dir=f"{d}/run"))
print("RESULT", aidetect.__file__, os.getcwd(), m["n_train"], m["best_epoch"])
"""


def test_kernel_trains_one_demo_batch_through_the_server(lab):
    """A kernel from the server's REST API runs in nbs/, imports this checkout's aidetect, trains one batch; the
    progress bar is a Jupyter widget (ipywidgets), not text."""
    replies = lab.execute(TRAIN_ONE_BATCH)
    errors = [m["content"] for m in replies if m["msg_type"] == "error"]
    assert not errors, "\n".join(e["ename"] + ": " + e["evalue"] for e in errors)
    out = "".join(m["content"]["text"] for m in replies if m["msg_type"] == "stream")
    result = next(line.split()[1:] for line in out.splitlines() if line.startswith("RESULT"))
    assert Path(result[0]).parent == ROOT / "aidetect" and Path(result[1]) == ROOT / "nbs"
    assert result[2:] == ["16", "1"]
    assert any(WIDGET in m["content"].get("data", {}) for m in replies if m["msg_type"] == "display_data")
