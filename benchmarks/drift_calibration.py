"""False alarms and power of `aidetect drift` on the demo: windows of 50, 100 and 200 images drawn from the
demo's own training images (20 windows per size, fixed seeds), logged as the service logs them, then the same
windows darker (brightness x 0.6), blurred (Gaussian, sigma 1.5) and upscaled 2x. Prints, per window size, the
share of (window, feature) decisions flagged on unchanged images and the share of windows in which each shift's
moved feature is flagged, and writes them to JSON.

    .venv/bin/python benchmarks/drift_calibration.py outputs/demo --json-path benchmarks/drift-calibration-cpu.json

RUN is a trained demo run (`make demo`): its checkpoint scores the images and its `reference_profile.json` is the
reference. Each image is decoded, described and scored once per condition as the service does it
(`decode_image`, `image_stats`, the backend's P(ai) of `eval_input`); a window's log is then written with the
service's `PredictionLog` and read back with `read_log`, and `drift_table` decides, as `aidetect drift` does.

A window drawn from the training images is also part of the reference it is compared with, which makes any
two-sample test cautious. So the unchanged windows are checked twice: against the whole reference (as the
service's traffic of training images would be) and against the reference without the window's own images
("held out": independent samples, as new traffic from the same distribution is), where the share of flags
should come close to α times the share of features that vary.
"""
import argparse
import io
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

from aidetect.data import read_dataset, resolve_data, split_train_val
from aidetect.drift import drift_table, read_log
from aidetect.inference import decode_image, load_backend
from aidetect.prediction_log import PredictionLog
from aidetect.profile import image_stats, read_reference_profile
from aidetect.utils import write_json

SIZES, WINDOWS = (50, 100, 200), 20


def darker(img: Image.Image) -> Image.Image: return Image.eval(img, lambda v: round(v * 0.6))
def blurred(img: Image.Image) -> Image.Image: return img.filter(ImageFilter.GaussianBlur(1.5))
def upscaled(img: Image.Image) -> Image.Image: return img.resize((2 * img.width, 2 * img.height), Image.BICUBIC)


SHIFTS = {"darker": (darker, ("brightness",)), "blurred": (blurred, ("sharpness",)),
          "upscaled": (upscaled, ("width", "height"))}


def jpeg(img: Image.Image) -> bytes:
    """`img` as the JPEG a client would upload."""
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95)
    return buf.getvalue()


def records(backend, paths: list, shift=None, batch: int = 64) -> list[dict]:
    """What the service logs of an upload of each image (after `shift`): its description and P(ai)."""
    out = []
    for i in range(0, len(paths), batch):
        described = []
        for p in paths[i:i + batch]:
            img = Image.open(p).convert("RGB")
            data = jpeg(shift(img)) if shift else Path(p).read_bytes()
            rgb, info = decode_image(data)
            described.append((backend.preprocess.eval_input(rgb).numpy(), {**info, **image_stats(rgb)}))
        probs = backend.probs(np.stack([x for x, _ in described]))
        out += [{**info, "prob_ai": round(float(p), 7)} for (_, info), p in zip(described, probs, strict=True)]
    return out


def described(run: Path, paths: list, cache: Path | None) -> dict[str, list[dict]]:
    """The records of every image in each condition (unchanged and each shift), read from `cache` if it has them."""
    if cache and cache.is_file(): return json.loads(cache.read_text())
    backend = load_backend(run)
    conditions = {"unchanged": records(backend, paths)}
    for name, (shift, _) in SHIFTS.items(): conditions[name] = records(backend, paths, shift)
    if cache: write_json(cache, conditions, indent=None)
    return conditions


def window_log(recs: list[dict], idx: np.ndarray, folder: Path) -> pd.DataFrame:
    """Log the window's records with the service's `PredictionLog` and read the log back as `aidetect drift` does."""
    path = folder / "predictions.jsonl"
    log = PredictionLog(path)
    for k, i in enumerate(idx):
        log.write({"ts": f"2026-01-01T00:{k // 60:02d}:{k % 60:02d}Z", "endpoint": "/predict",
                   "filename": f"{i}.jpg", **recs[i]})
    log.close()
    current = read_log(path)
    path.unlink()
    return current


def flag_counts(tables: list[pd.DataFrame]) -> dict:
    """How many (window, feature) decisions of `tables` flagged drift, in all and per feature."""
    flags = pd.DataFrame([t.drifted.eq(True) for t in tables])
    return dict(decisions=int(flags.size), flagged=int(flags.values.sum()), share=round(float(flags.values.mean()), 4),
                windows_with_any=int(flags.any(axis=1).sum()), per_feature={f: int(v) for f, v in flags.sum().items()})


def profile_rows(train: pd.DataFrame) -> np.ndarray:
    """The row of the reference profile of each training image: training profiles a seeded sample of its images."""
    sampled = train.sample(len(train), random_state=0).path.tolist()
    row = {p: k for k, p in enumerate(sampled)}
    return np.array([row[p] for p in train.path])


def main(run: Path, json_path: Path | None, alpha: float, cache: Path | None = None):
    reference, ref_probs = read_reference_profile(run)
    train, _ = split_train_val(read_dataset(resolve_data("demo")), 0.2, 0)  # the training images of the demo run
    paths = train.path.tolist()
    assert len(paths) == len(reference), (len(paths), len(reference))
    t0 = time.perf_counter()
    conditions = described(run, paths, cache)
    print(f"{len(paths)} training images described and scored in 4 conditions: {time.perf_counter() - t0:.0f} s")
    rows = profile_rows(train)
    unchanged = pd.DataFrame(conditions["unchanged"])
    assert np.allclose(unchanged.brightness.to_numpy(), reference.brightness.to_numpy()[rows], atol=1e-3)
    results, folder = {}, Path(tempfile.mkdtemp())
    for size in SIZES:
        res = results[size] = {}
        tables = {c: [] for c in ["held_out", *conditions]}
        for w in range(WINDOWS):
            idx = np.random.default_rng(1000 * size + w).choice(len(paths), size, replace=False)
            for c, recs in conditions.items():
                tables[c].append(drift_table(reference, ref_probs, window_log(recs, idx, folder), alpha=alpha))
            held_out = reference.drop(index=rows[idx]).reset_index(drop=True)
            tables["held_out"].append(drift_table(held_out, ref_probs, window_log(conditions["unchanged"], idx, folder),
                                                  alpha=alpha))
        res["false_alarms"] = flag_counts(tables["unchanged"])
        res["false_alarms_held_out"] = flag_counts(tables["held_out"])
        for name, (_, moved) in SHIFTS.items():
            hit = [bool(t.drifted[list(moved)].eq(True).all()) for t in tables[name]]
            res[name] = dict(moved=list(moved), windows_flagged=int(sum(hit)), share=round(float(np.mean(hit)), 4))
        fa, ho = res["false_alarms"], res["false_alarms_held_out"]
        print(f"windows of {size}: false alarms {fa['flagged']}/{fa['decisions']} decisions ({fa['share']:.1%}), "
              f"{fa['windows_with_any']}/{WINDOWS} windows with any; held out {ho['flagged']}/{ho['decisions']} "
              f"({ho['share']:.1%}), {ho['windows_with_any']}/{WINDOWS} windows, per feature {ho['per_feature']}; "
              "power: " + ", ".join(f"{n} {res[n]['windows_flagged']}/{WINDOWS}" for n in SHIFTS), flush=True)
    summary = dict(alpha=alpha, windows_per_size=WINDOWS, reference_images=len(reference),
                   window_seeds="1000 * size + w",
                   decision=dict(test="permutation KS / total variation", n_permutations=1000, min_images=20,
                                 threshold=0.1), cpus=os.cpu_count(), seconds=round(time.perf_counter() - t0, 1),
                   sizes={str(k): v for k, v in results.items()})
    if json_path: write_json(json_path, summary)
    return summary


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="a trained demo run folder (make demo)")
    ap.add_argument("--json-path", type=Path)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--cache", type=Path, help="a JSON file keeping the images' records between runs")
    args = ap.parse_args()
    main(args.run, args.json_path, args.alpha, args.cache)
