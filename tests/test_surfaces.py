"""Hostile and careless input on the newer surfaces, through the real `aidetect` command line (the console script in
a subprocess where the process is under test, its `main` in this process where only the answer is):
Vertex AI jobs (every typed word reaches the job literally; the printed YAML holds only the spec), sweeps (a
finished run is never deleted; one sweep of a name at a time; list-valued and relative-path parameters), the
dataset audit (odd files are listed, files outside the dataset are not read), the leaderboard and image decoding."""
import contextlib
import fcntl
import io
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from aidetect.cli import main
from aidetect.vertex import expand_line

ROOT = Path(__file__).resolve().parents[1]
INJECTION = "${X:?$(echo INJECTED >&2)}"
EVIL = "serviceAccount: evil@example.iam.gserviceaccount.com"


def aidetect(*argv: str, cwd: Path = ROOT, timeout: float = 300) -> subprocess.CompletedProcess:
    """`aidetect ARGV...` as a user types it, in a subprocess running in `cwd`."""
    return subprocess.run([sys.executable, "-c", "from aidetect.cli import console; console()", *argv], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def aidetect_here(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`aidetect ARGV...` through the CLI's `main` in this process, run in `cwd`: what it prints, its warnings, and
    its exit status and message as the console script gives them. For calls whose answer, not their process, is
    under test (`aidetect` above runs the console script itself)."""
    out, err, code, here = io.StringIO(), io.StringIO(), 0, os.getcwd()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        try:
            if cwd: os.chdir(cwd)
            main(list(argv))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
            if isinstance(e.code, str): err.write(e.code + "\n")
        finally:
            os.chdir(here)
    return subprocess.CompletedProcess(list(argv), code, out.getvalue(),
                                       err.getvalue() + "".join(f"{w.message}\n" for w in seen))


def vertex_dry_run(*argv: str) -> subprocess.CompletedProcess:
    """`aidetect vertex ARGV... --dry-run` in this process: a dry run starts nothing, so no process is under test."""
    return aidetect_here("vertex", *argv, "--dry-run", "--bucket", "gs://bkt", "--image", "img")


def test_vertex_job_gets_every_typed_word_literally():
    hostile_out = f"runs/$(touch /tmp/aidetect-pwned) `id` 'q\n{EVIL}\n#"
    done = vertex_dry_run("train", "-p", "lr", INJECTION, "-p", "out_dir", f"{hostile_out}/run")
    assert done.returncode == 0, done.stderr
    (spec,) = yaml.safe_load_all(done.stdout)
    assert list(spec) == ["workerPoolSpecs"]  # no key smuggled into the spec through a comment or a value
    sh, c, line = spec["workerPoolSpecs"][0]["containerSpec"]["command"]
    mkdir, run = expand_line(line, {"X": "set"})  # a real sh; it fails on any stderr output (INJECTED)
    out = f"/gcs/bkt/{hostile_out}/run"
    assert mkdir == ["mkdir", "-p", out]
    assert run[run.index("lr") + 1] == INJECTION and run[run.index("out_dir") + 1] == out
    done = vertex_dry_run("train", "-p", "lr", INJECTION, "--nodes", "2", "--name", "my run; rm -rf ~")
    assert "'--display-name=my run; rm -rf ~'" in done.stdout  # the suggested gcloud line is quoted
    line = yaml.safe_load(done.stdout)["workerPoolSpecs"][0]["containerSpec"]["command"][2]
    for rank in ("0", "1"):  # two nodes: only aidetect's own ${RANK:?...} references are expanded
        _, run = expand_line(line, {"RANK": rank, "MASTER_ADDR": "h", "MASTER_PORT": "1", "X": "set"})
        assert f"--node-rank={rank}" in run and run[run.index("lr") + 1] == INJECTION


def test_vertex_dry_run_refuses_a_display_name_that_would_break_the_yaml():
    done = vertex_dry_run("train", "--name", f"x\n{EVIL}\n#")
    assert done.returncode != 0 and "display name" in done.stderr and "printable" in done.stderr
    assert EVIL not in done.stdout


@pytest.fixture(scope="module")
def generator_sweep(tiny_demo, tmp_path_factory):
    """`aidetect sweep` of one run trained on two generators (a YAML list as the value) with the data folder given
    relative to the folder the command runs in; then a call while another process holds the sweep, and a call with
    another fixed parameter (epochs). Returns the sweep folder and the three finished processes."""
    d = tmp_path_factory.mktemp("generator-sweep")
    (d / "tiny.yaml").write_text(f"data: {os.path.relpath(tiny_demo, d)}\narch: test_resnet\nimg_size: 32\n"
                                 "batch_size: 8\nwandb_mode: disabled\n")
    argv = ["sweep", "-f", "tiny.yaml", "-p", "train_generators", "[nearest, bilinear]", "-p", "lr", "3e-3",
            "--name", "s", "--out-dir", str(d / "sweeps"), "--notebook", str(ROOT / "nbs/train.ipynb")]
    first = aidetect(*argv, "-p", "epochs", "1", cwd=d)
    mtimes = {p: p.stat().st_mtime_ns for p in (d / "sweeps/s").rglob("*") if p.is_file()}
    with open(d / "sweeps/s/.sweep.lock", "a") as lock:  # held as a running call of the sweep holds it
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        second = aidetect_here(*argv, "-p", "epochs", "1", cwd=d)  # refusals: their answer is under test
    third = aidetect_here(*argv, "-p", "epochs", "2", cwd=d)
    assert mtimes == {p: p.stat().st_mtime_ns for p in (d / "sweeps/s").rglob("*") if p.is_file()}, "files changed"
    return d / "sweeps/s", first, second, third


def test_sweep_of_a_list_parameter_with_a_relative_data_path_trains(generator_sweep):
    sweep_dir, first, _, _ = generator_sweep
    assert first.returncode == 0, first.stderr[-3000:]
    (run,) = [p for p in sweep_dir.iterdir() if p.is_dir()]  # one run on both generators (`a,b`: one run each)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["params"]["train_generators"] == ["nearest", "bilinear"]
    assert Path(metrics["params"]["data"]).is_absolute()
    assert (run / "run.json").stat().st_mtime_ns <= (run / "metrics.json").stat().st_mtime_ns  # finished: written last


def test_a_second_call_of_a_running_sweep_is_refused(generator_sweep):
    _, _, second, _ = generator_sweep
    assert second.returncode != 0 and "sweep s: another process is running it" in second.stderr, second.stderr


def test_a_sweep_never_deletes_its_finished_runs(generator_sweep):
    sweep_dir, _, _, third = generator_sweep  # the fixture checked that no file of the sweep changed
    assert third.returncode != 0
    (run,) = [p for p in sweep_dir.iterdir() if p.is_dir()]
    assert f"{run.name}: epochs 1 -> 2" in third.stderr and "another --name" in third.stderr


def qtable1_jpeg(path: Path):
    """A valid greyscale JPEG whose only quantisation table has id 1 (libjpeg and Pillow decode it)."""
    from PIL import Image
    Image.new("L", (32, 32), 128).save(path, "JPEG", quality=75)
    data = bytearray(path.read_bytes())
    dqt, sof = data.index(b"\xff\xdb"), data.index(b"\xff\xc0")
    data[dqt + 4] = data[sof + 12] = 0x01  # the table's id, and the one component's table
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def odd_dataset(tmp_path_factory) -> tuple[Path, Path]:
    """Twelve 32-px PNGs (one with the EXIF camera maker '$\\x$'), one JPEG whose only quantisation table has id 1,
    and a train.csv row pointing at an image outside the dataset folder, which has Markup in its name."""
    import numpy as np
    from PIL import Image
    base = tmp_path_factory.mktemp("odd")
    root, outside = base / "set [x](http:e) <b>", base / "elsewhere.png"
    (root / "img").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        img = Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
        exif = Image.Exif()
        if i == 0: exif[0x010F] = "$\\x$"
        img.save(root / f"img/{i}.png", exif=exif)
        rows.append((f"img/{i}.png", i % 2))
    qtable1_jpeg(root / "img/qtable1.jpg")
    Image.new("RGB", (32, 32)).save(outside)
    rows += [("img/qtable1.jpg", 0), (str(outside), 1)]
    (root / "train.csv").write_text("file_name,label\n" + "".join(f"{f},{y}\n" for f, y in rows))
    return root, outside


def test_audit_goes_on_past_odd_files_and_reads_nothing_outside(odd_dataset, tmp_path):
    root, outside = odd_dataset
    done = aidetect("audit", str(root), "--out-dir", str(tmp_path / "a"))
    assert done.returncode == 0, done.stderr[-3000:]
    meta = (tmp_path / "a/metadata.csv").read_text()
    assert "qtable1.jpg" in meta and "$\\x$" in meta and str(outside) not in meta
    assert str(outside) not in (tmp_path / "a/groups.csv").read_text()
    assert "outside the dataset folder" in (tmp_path / "a/bad_files.csv").read_text()
    result = json.loads((tmp_path / "a/audit.json").read_text())
    assert result["shortcut_auc"] is not None and result["n_images"] == 13  # one JPEG among PNGs: estimated
    assert (tmp_path / "a/metadata.png").stat().st_size > 0  # the '$\x$' camera maker drawn as text
    report = (tmp_path / "a/audit.md").read_text()
    assert "<b>" not in report and "&lt;b&gt;" in report and "\\[x\\]\\(http:e\\)" in report
    done = aidetect_here("audit", str(root), "--out-dir", str(tmp_path / "b"), "--allow-outside", "--no-pairs",
                         "--no-plots")
    assert done.returncode == 0 and str(outside) in (tmp_path / "b/metadata.csv").read_text(), done.stderr[-3000:]


PEAK = """import io, sys
import numpy as np
from PIL import Image
from aidetect.data import load_image
from aidetect.inference import decode_image
a = np.zeros((5000, 6000), np.uint16); a[::7] = 40000  # 30 megapixels, 16-bit greyscale
b = io.BytesIO(); Image.fromarray(a).save(b, "PNG"); data = b.getvalue(); open(sys.argv[2], "wb").write(data); del a
status = lambda k: int(open("/proc/self/status").read().split(k + ":")[1].split()[0]) * 1024
start = status("VmRSS")
img = decode_image(data)[0] if sys.argv[1] == "service" else load_image(sys.argv[2])
print(len(data), (status("VmHWM") - start) / (img.size[0] * img.size[1]))
"""


@pytest.mark.parametrize("decoder", ["service", "files"])
def test_a_16_bit_image_decodes_within_a_few_bytes_per_pixel(decoder, tmp_path):
    done = subprocess.run([sys.executable, "-c", PEAK, decoder, str(tmp_path / "gray16.png")], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    size, per_pixel = map(float, done.stdout.split())
    assert size < 200_000 and per_pixel < 10, (size, per_pixel)  # float64 copies took about 28 bytes a pixel


def test_runs_skips_a_metrics_json_that_is_not_a_record(tmp_path):
    run = tmp_path / "runs/good"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"val_acc": 0.75, "params": {"lr": 0.001, "out_dir": str(run)}}))
    for name, text in (("list", "[1, 2]"), ("params", '{"val_acc": 0.5, "params": [1]}')):
        (tmp_path / "runs" / name).mkdir()
        (tmp_path / "runs" / name / "metrics.json").write_text(text)
    done = aidetect_here("runs", str(tmp_path / "runs"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "good" in done.stdout and "0.7500" in done.stdout
    assert done.stderr.count("is not a run record") == 2 and str(tmp_path / "runs/list") in done.stderr


class Payload:
    """What a hostile .pth holds: unpickling it runs a command."""
    def __init__(self, marker: Path): self.marker = marker
    def __reduce__(self): return (os.system, (f"touch {self.marker}",))


def test_pretrained_pth_is_never_unpickled_beyond_tensors(tiny_demo, tmp_path):
    import timm
    import torch
    torch.save({"model": timm.create_model("test_resnet").state_dict(), "x": Payload(tmp_path / "pwned")},
               tmp_path / "evil.pth")
    done = aidetect_here("train", "-q", "-p", "data", str(tiny_demo), "-p", "arch", "test_resnet", "-p", "img_size",
                         "32", "-p", "pretrained", str(tmp_path / "evil.pth"), "-p", "out_dir", str(tmp_path / "run"),
                         "-p", "wandb_mode", "disabled", "-p", "audit", "false", "-p", "cache", "off")
    assert done.returncode != 0 and "refused rather than unpickled" in done.stderr, done.stderr[-3000:]
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "run/metrics.json").exists()


def test_vertex_sweep_of_a_list_parameter_plans_one_job_per_training_set():
    from aidetect.vertex import plan_jobs
    done = vertex_dry_run("sweep", "-p", "train_generators", "nearest,bilinear")
    assert done.returncode == 0, done.stderr[-3000:]
    specs = list(yaml.safe_load_all(done.stdout))
    runs = [expand_line(s["workerPoolSpecs"][0]["containerSpec"]["command"][2])[1] for s in specs]
    assert [r[r.index("train_generators") + 1] for r in runs] == ['["nearest"]', '["bilinear"]']
    (job,) = plan_jobs("sweep", [], {"train_generators": "[nearest, bilinear]"}, "gs://bkt", "img")  # one set of two
    assert job["command"][job["command"].index("train_generators") + 1] == '["nearest", "bilinear"]'
