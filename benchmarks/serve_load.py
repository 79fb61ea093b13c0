"""Load benchmark of `aidetect serve` on loopback: requests/s and p50/p99 latency for the torch and onnx
backends with 1 and 8 concurrent clients, written to JSON.

    flock /tmp/cpu.lock .venv/bin/python benchmarks/serve_load.py --checkpoint outputs/serve-demo \
        --duration 60 --out benchmarks/serve-load-cpu.json

Each backend runs in its own `aidetect serve` process; the client (`aidetect.serve.load_test`, raw HTTP/1.1
keep-alive connections on asyncio) runs in this process on the same machine. After each backend's runs,
the service's /metrics and prediction log are checked against what the client counted.
"""
import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import onnxruntime
import torch

from aidetect.data import demo_dataset, read_dataset
from aidetect.model import read_checkpoint_meta
from aidetect.serve import load_test


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metric(text: str, name: str, **labels) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"): return line.split(":", 1)[1].strip()
    return platform.processor()


def bench_backend(checkpoint: str, backend: str, image: bytes, clients: list[int], duration: float,
                  warmup: float, log: Path) -> dict:
    port = free_port()
    cmd = [sys.executable, "-c", "from aidetect.cli import console; console()", "serve", "--checkpoint", checkpoint,
           "--backend", backend, "--port", str(port), "--log", str(log), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None: sys.exit(f"server exited: {proc.stdout.read()}")
            try:
                ready = httpx.get(url + "/ready", timeout=5).json()
                break
            except httpx.TransportError:
                if time.monotonic() > deadline: sys.exit("server not ready after 180 s")
                time.sleep(0.3)
        runs, sent = [], 0
        for n in clients:
            r = load_test(url, image, clients=n, duration=duration, warmup=warmup)
            sent += r["requests_total"]
            runs.append(r)
            print(json.dumps({"backend": backend, **r}), flush=True)
        text = httpx.get(url + "/metrics", timeout=10).text
        counted = metric(text, "aidetect_requests_total", endpoint="/predict", method="POST", status="200")
        predictions = sum(metric(text, "aidetect_predictions_total", label=c) for c in ("human", "ai"))
    finally:
        proc.terminate()
        proc.wait(30)
    log_lines = sum(1 for _ in log.open())
    return dict(backend=backend, ready=ready, runs=runs,
                check=dict(client_requests=sent, metrics_predict_200=counted, metrics_predictions=predictions,
                           log_records=log_lines, consistent=sent == counted == predictions == log_lines))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="outputs/serve-demo", help="run folder or checkpoint")
    ap.add_argument("--image", default=None, help="image to post (default: the first demo test JPEG)")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of measured load per run")
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--backends", nargs="+", default=["torch", "onnx"])
    ap.add_argument("--out", default="benchmarks/serve-load-cpu.json")
    args = ap.parse_args(argv)
    image_path = Path(args.image) if args.image else Path(read_dataset(demo_dataset(), "test").path[0])
    image = image_path.read_bytes()
    meta = read_checkpoint_meta(Path(args.checkpoint) / "best.safetensors" if Path(args.checkpoint).is_dir()
                                else args.checkpoint)
    with tempfile.TemporaryDirectory() as d:
        results = [bench_backend(args.checkpoint, b, image, args.clients, args.duration, args.warmup,
                                 Path(d) / f"{b}.jsonl") for b in args.backends]
    report = dict(
        what="aidetect serve on loopback: POST /predict with one JPEG, keep-alive connections, client on the same host",
        when=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        machine=dict(cpu=cpu_model(), cores=os.cpu_count(), python=platform.python_version(), torch=torch.__version__,
                     onnxruntime=onnxruntime.__version__, torch_threads=torch.get_num_threads()),
        model=dict(arch=meta["arch"], run_id=meta.get("run_id"), img_size=meta["preprocess"]["img_size"]),
        image=dict(path=str(image_path), bytes=len(image)),
        duration_s=args.duration, warmup_s=args.warmup,
        summary=[dict(backend=r["backend"], **{k: run[k] for k in ("clients", "rps", "p50_ms", "p99_ms", "errors")})
                 for r in results for run in r["runs"]],
        results=results)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    for s in report["summary"]: print(s)
    return report


if __name__ == "__main__":
    main()
