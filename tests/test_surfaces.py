"""Hostile and careless input on the newer surfaces, through the real `aidetect` console script in subprocesses:
Vertex AI jobs (every typed word reaches the job literally; the printed YAML holds only the spec), sweeps (a
finished run is never deleted; one sweep of a name at a time; list-valued and relative-path parameters), the
dataset audit (odd files are listed, files outside the dataset are not read), the leaderboard and image decoding."""
import subprocess
import sys
from pathlib import Path

import yaml

from aidetect.vertex import expand_line

ROOT = Path(__file__).resolve().parents[1]
INJECTION = "${X:?$(echo INJECTED >&2)}"
EVIL = "serviceAccount: evil@example.iam.gserviceaccount.com"


def aidetect(*argv: str, cwd: Path = ROOT, timeout: float = 300) -> subprocess.CompletedProcess:
    """`aidetect ARGV...` as a user types it, in a subprocess running in `cwd`."""
    return subprocess.run([sys.executable, "-c", "from aidetect.cli import console; console()", *argv], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def vertex_dry_run(*argv: str) -> subprocess.CompletedProcess:
    return aidetect("vertex", *argv, "--dry-run", "--bucket", "gs://bkt", "--image", "img")


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
