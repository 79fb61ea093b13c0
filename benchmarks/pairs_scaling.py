"""How the audit's pair search grows with the number of images: seconds of `recover_pairs` (human/AI pairs) and
`near_duplicates` (within each class) per dataset size, the exponent fitted to them, and for scale the seconds
per image of `embeddings` (the thumbnails both searches read), written to JSON.

    .venv/bin/python benchmarks/pairs_scaling.py --sizes 2000,8000,20000,40000,80000 \
        --json-path benchmarks/pairs-scaling-cpu.json

The searches are exact brute-force nearest neighbours, so their cost depends on the number of images and the
embedding's 63 dimensions, not on what the images show: the embeddings here are random unit vectors, half of
them "human" and half "AI" (each a human vector plus noise, so that every AI image has a pair to find), as
`dct_embedding` gives. `embeddings` is timed on photo-size JPEGs (`make_photo_dataset`, 768x512). Run it on an
otherwise idle machine: the figures are only as steady as the cores they share (the JSON keeps the 1-minute load
average before and after the searches; the CPU seconds, summed over threads, suffer less from other work).
"""
import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import sklearn

from aidetect.pairs import embeddings, near_duplicates, recover_pairs
from aidetect.synthetic import make_photo_dataset
from aidetect.utils import write_json

DIM = 63  # dct_embedding: the 8x8 block of low DCT frequencies without DC


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"): return line.split(":", 1)[1].strip()
    return platform.processor()


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def synthetic_embeddings(n: int, noise: float = 0.02, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and unit embeddings of `n` images: n/2 human ones and, for each, an AI one near it."""
    rng = np.random.default_rng(seed)
    human = unit(rng.normal(size=(n // 2, DIM)))
    ai = unit(human + rng.normal(scale=noise, size=human.shape))
    return np.repeat([0, 1], n // 2), np.concatenate([human, ai])


def best_of(repeats: int, fn, *args) -> tuple[float, float]:
    """The shortest wall-clock and CPU times (all threads) of `repeats` calls of `fn(*args)`, in seconds."""
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn(*args)
        wall.append(time.perf_counter() - t); cpu.append(time.process_time() - c)
    return round(min(wall), 3), round(min(cpu), 3)


def exponent(sizes, seconds) -> float:
    """The slope of log(seconds) against log(size): time grows as size ** exponent."""
    return float(np.polyfit(np.log(sizes), np.log(seconds), 1)[0])


def time_searches(sizes: list[int], repeats: int) -> list[dict]:
    rows = []
    for n in sizes:
        labels, emb = synthetic_embeddings(n)
        pairs = recover_pairs(labels, emb)  # also the warm-up
        row = dict(n_images=n, pairs_found=len(pairs))
        for name, fn in (("recover_pairs", recover_pairs), ("near_duplicates", near_duplicates)):
            row[f"{name}_s"], row[f"{name}_cpu_s"] = best_of(repeats, fn, labels, emb)
        row["total_s"] = round(row["recover_pairs_s"] + row["near_duplicates_s"], 3)
        row["total_cpu_s"] = round(row["recover_pairs_cpu_s"] + row["near_duplicates_cpu_s"], 3)
        rows.append(row)
        print(f"{n:>7,} images: recover_pairs {row['recover_pairs_s']:7.2f} s "
              f"({row['recover_pairs_cpu_s']:.2f} s CPU), near_duplicates {row['near_duplicates_s']:7.2f} s "
              f"({row['near_duplicates_cpu_s']:.2f} s CPU); "
              f"{len(pairs):,} of {n // 2:,} pairs found", flush=True)
    return rows


def time_embeddings(n_photos: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="aidetect-pairs-") as tmp:
        paths = sorted(str(p) for p in (make_photo_dataset(tmp, n=n_photos) / "train_data").glob("*.jpg"))
        embeddings(paths[:16])  # warm-up: thread pool, scipy's fft
        t, c = time.perf_counter(), time.process_time()
        embeddings(paths)
        seconds, cpu = time.perf_counter() - t, time.process_time() - c
    ms, cpu_ms = round(1000 * seconds / n_photos, 3), round(1000 * cpu / n_photos, 3)
    print(f"embeddings: {ms} ms ({cpu_ms} ms CPU) per 768x512 JPEG ({n_photos} images, default threads)")
    return dict(n_images=n_photos, image_size=[768, 512], ms_per_image=ms, cpu_ms_per_image=cpu_ms)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="2000,8000,20000,40000,80000", help="comma-separated numbers of images")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per size; the shortest counts")
    ap.add_argument("--photos", type=int, default=512, help="photo-size JPEGs to time `embeddings` on (0: skip)")
    ap.add_argument("--json-path", default="", help="write the results to this JSON file")
    a = ap.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    load_before = os.getloadavg()[0]
    rows = time_searches(sizes, a.repeats)
    keys = [f"{k}{c}_s" for k in ("recover_pairs", "near_duplicates", "total") for c in ("", "_cpu")]
    fit = {k: round(exponent(sizes, [r[k] for r in rows]), 2) for k in keys}
    largest = {k: round(exponent(sizes[-2:], [r[k] for r in rows[-2:]]), 2) for k in keys} if len(sizes) > 2 else {}
    print("fitted exponent (all sizes):", fit, "\ntwo largest sizes:", largest)
    result = dict(what="seconds of the audit's pair search (aidetect.pairs) per number of images",
                  when=time.strftime("%Y-%m-%d"),
                  machine=dict(cpu=cpu_model(), cores=os.cpu_count(),
                               python=platform.python_version(), numpy=np.__version__,
                               scikit_learn=sklearn.__version__,
                               load_average=[round(load_before, 2), round(os.getloadavg()[0], 2)]),
                  embedding_dim=DIM, repeats=a.repeats, results=rows, exponent=fit,
                  exponent_two_largest=largest,
                  embeddings=time_embeddings(a.photos) if a.photos else None)
    if a.json_path: write_json(a.json_path, result)
    return result


if __name__ == "__main__":
    main()
