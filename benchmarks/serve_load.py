"""Load client and load benchmark of `aidetect serve` on loopback: requests/s and p50/p99 latency for the torch
and onnx backends with 1 and 8 concurrent clients, written to JSON.

    .venv/bin/python benchmarks/serve_load.py --checkpoint outputs/serve-demo \
        --duration 60 --out benchmarks/serve-load-cpu.json

Run it on an otherwise idle machine: the figures are only as steady as the cores they share.

Each backend runs in its own `aidetect serve` process (`ServeProcess`); the client (`load_test`, raw HTTP/1.1
keep-alive connections on asyncio) runs in this process on the same machine, so it must cost little CPU next
to the server it measures. After each backend's runs, the service's /metrics and prediction log are checked
against what the client counted. tests/test_serve.py uses the same client and launcher.
"""
import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np

from aidetect.data import read_dataset
from aidetect.model import read_checkpoint_meta
from aidetect.prediction_log import read_prediction_log
from aidetect.server import metric_value
from aidetect.synthetic import demo_dataset


def multipart_body(field: str, filename: str, data: bytes, content_type: str = "application/octet-stream",
                   boundary: str = "aidetect-load-boundary") -> tuple[bytes, str]:
    """A multipart/form-data body with one file, and its Content-Type header."""
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n").encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


async def _client(host: str, port: int, request: bytes, until: float, warm_until: float, out: dict):
    """Send `request` over one keep-alive connection until `until`; record latencies after `warm_until`."""
    reader = writer = None
    while time.perf_counter() < until:
        try:
            if writer is None: reader, writer = await asyncio.open_connection(host, port)
            t = time.perf_counter()
            writer.write(request)
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"content-length": length = int(v)
            await reader.readexactly(length)
            if t >= warm_until: out["lat"].append(time.perf_counter() - t)
            out["sent"] += 1
            if status != 200: out["errors"][str(status)] = out["errors"].get(str(status), 0) + 1
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as e:
            out["sent"] += 1
            out["errors"][type(e).__name__] = out["errors"].get(type(e).__name__, 0) + 1
            if writer: writer.close()
            reader = writer = None
            await asyncio.sleep(0.01)
    if writer: writer.close()


def load_test(url: str, image: bytes, clients: int = 8, duration: float = 60.0, warmup: float = 2.0,
              path: str = "/predict", filename: str = "image.jpg") -> dict:
    """POST `image` to `url + path` from `clients` concurrent connections for `duration` s; report rps and latency."""
    u = urlsplit(url)
    body, ctype = multipart_body("file", filename, image)
    request = (f"POST {path} HTTP/1.1\r\nHost: {u.netloc}\r\nContent-Type: {ctype}\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    out = dict(lat=[], sent=0, errors={})

    async def main():
        start = time.perf_counter()
        await asyncio.gather(*[_client(u.hostname, u.port, request, start + warmup + duration, start + warmup, out)
                               for _ in range(clients)])
    asyncio.run(main())
    lat = np.array(out["lat"]) * 1000
    pct = lambda q: round(float(np.percentile(lat, q)), 2) if len(lat) else None
    return dict(clients=clients, duration_s=duration, requests=len(lat), requests_total=out["sent"],
                errors=sum(out["errors"].values()), errors_by_kind=out["errors"],
                rps=round(len(lat) / duration, 1), p50_ms=pct(50), p90_ms=pct(90), p99_ms=pct(99),
                mean_ms=round(float(lat.mean()), 2) if len(lat) else None)


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProcess:
    """`aidetect serve` in a subprocess on a free loopback port, stopped by `stop()` or at the end of a `with`."""

    def __init__(self, checkpoint: str | os.PathLike, backend: str = "torch", log: str | os.PathLike | None = None,
                 *extra: str, timeout: float = 180):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-c", "from aidetect.cli import console; console()", "serve",
               "--checkpoint", str(checkpoint), "--backend", backend, "--port", str(self.port),
               "--log-level", "warning", *(["--log", str(log)] if log else ["--no-log"]), *extra]
        self.output = tempfile.TemporaryFile("w+")  # a file, not a pipe: a chatty server never blocks on it
        self.proc = subprocess.Popen(cmd, stdout=self.output, stderr=subprocess.STDOUT, text=True)
        try: self.ready = self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> dict:
        """The answer of /ready, polled until the server gives one; an error if it exits or times out first."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None: raise RuntimeError(f"aidetect serve exited: {self.read_output()}")
            try:
                r = httpx.get(self.url + "/ready", timeout=5)
                if r.status_code == 200: return r.json()
            except httpx.TransportError: pass
            if time.monotonic() > deadline: raise TimeoutError(f"aidetect serve not ready after {timeout:.0f} s")
            time.sleep(0.2)

    def read_output(self) -> str:
        """What the server has printed so far (stdout and stderr)."""
        self.output.seek(0)
        return self.output.read()

    def stop(self):
        self.proc.terminate()
        try: self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.output.close()

    def __enter__(self): return self
    def __exit__(self, *exc): self.stop()


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"): return line.split(":", 1)[1].strip()
    return platform.processor()


def bench_backend(checkpoint: str, backend: str, image: bytes, clients: list[int], duration: float,
                  warmup: float, log: Path) -> dict:
    with ServeProcess(checkpoint, backend, log) as server:
        runs, sent = [], 0
        for n in clients:
            r = load_test(server.url, image, clients=n, duration=duration, warmup=warmup)
            sent += r["requests_total"]
            runs.append(r)
            print(json.dumps({"backend": backend, **r}), flush=True)
        text = httpx.get(server.url + "/metrics", timeout=10).text
    counted = metric_value(text, "aidetect_requests_total", endpoint="/predict", method="POST", status="200")
    predictions = metric_value(text, "aidetect_predictions_total")
    log_lines = len(read_prediction_log(log))  # with its rotated files
    return dict(backend=backend, ready=server.ready, runs=runs,
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
    import onnxruntime
    import torch
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
