"""The records behind the trust guide (nbs/tutorials/trust-demo/), from a trained demo run whose folder already holds
its card and `aidetect robustness RUN --data demo --split test`:

- card.json: the run's card, without the paths of the machine that measured it;
- robustness_test.csv: the run's robustness record, verdicts included;
- stability_variants.csv: the share of right and of wrong answers each re-encoding flips, on validation, the clean
  test split and the test split blurred by σ 1;
- stability_strengths.csv: each candidate sharpening strength fitted on validation alone, as `fit_trust` would with
  that strength only, and what it then gives on the test split, clean and blurred by σ 1 (the test split is scored
  after the choice, for the reader: it plays no part in it);
- composites.csv, composites_real.csv, composite_example.jpg: the patch map on composites (a real photograph with one
  rectangle re-synthesized by a demo generator, saved as JPEG 90) and on untouched real photographs.

    python benchmarks/trust_records.py outputs/demo nbs/tutorials/trust-demo
"""
import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageDraw, ImageFilter

from aidetect.data import load_image, read_dataset, resolve_data
from aidetect.explain import composite_iou, make_composite, map_verdict, overlay, patch_map, pixel_map
from aidetect.model import Detector
from aidetect.preprocess import reencode
from aidetect.profile import read_reference_profile
from aidetect.synthetic import photo_crop, real_photos
from aidetect.trust import (
    CANDIDATE_VARIANTS,
    SHARPEN_STRENGTHS,
    fit_trust,
    judge,
    scores_and_features,
    selective_metrics,
    stability_variants,
)

SCORED = (*CANDIDATE_VARIANTS, ("rescale", 0.95), ("rescale", 0.9))


def _scores(detector: Detector, images: list) -> tuple[np.ndarray, list[dict]]:
    fn = lambda x: detector.probs(torch.from_numpy(x)).numpy()
    probs, features = scores_and_features(fn, detector.preprocess, images, SCORED)
    return probs, features.to_dict("records")


def _columns(strength: int) -> list[int]:
    return [0, *(1 + SCORED.index(v) for v in stability_variants(strength))]


def variant_flips(labels: dict, probs: dict, threshold: float) -> pd.DataFrame:
    "Per scored re-encoding and set: the share of right answers and of wrong answers whose label it flips."
    rows = []
    for j, (kind, amount) in enumerate(SCORED, 1):
        row = dict(variant=f"{kind} {amount:g}")
        for name, p in probs.items():
            answer, wrong = p[:, 0] >= threshold, (p[:, 0] >= threshold) != labels[name]
            flipped = (p[:, j] >= threshold) != answer
            row.update({f"{name}_right": flipped[~wrong].mean(), f"{name}_wrong": flipped[wrong].mean()})
        rows.append(row)
    return pd.DataFrame(rows)


def stability_strengths(run: Path, out: Path) -> pd.DataFrame:
    "Per sharpening strength: validation unsure (and its bound), then the test split's figures under that choice."
    detector = Detector.load(run)
    features, _ = read_reference_profile(run)
    val = pd.read_csv(run / "predictions_val.csv")
    test = read_dataset(resolve_data("demo"), "test")
    val_probs, val_feats = _scores(detector, [load_image(p) for p in val.path])
    test_images = [load_image(p) for p in test.path]
    scored = {"clean": _scores(detector, test_images),
              "blur1": _scores(detector, [im.filter(ImageFilter.GaussianBlur(1)) for im in test_images])}
    labels = {"val": val.label.to_numpy(int), "test": test.label.to_numpy(int), "test_blur1": test.label.to_numpy(int)}
    probs = {"val": val_probs, "test": scored["clean"][0], "test_blur1": scored["blur1"][0]}
    variant_flips(labels, probs, detector.threshold).to_csv(out / "stability_variants.csv", index=False)
    rows, crop_mode = [], detector.preprocess.crop_mode
    for s in SHARPEN_STRENGTHS:
        variants = stability_variants(s)
        trust = fit_trust(features, val.label, val_probs[:, _columns(s)], detector.threshold, variants,
                          pd.DataFrame(val_feats), crop_mode)
        meta = {**detector.meta, "threshold": detector.threshold, "trust": trust}
        row = dict(sharpen=s, band=trust["band"], val_unsure=trust["val_unsure"],
                   val_unsure_upper=trust["val_unsure_upper"], within_target=trust["target_met"])
        for name, (probs, feats) in scored.items():
            pairs = zip(probs[:, _columns(s)], feats, strict=True)
            verdicts = [judge(p, f, meta, crop_mode)["verdict"] for p, f in pairs]
            m = selective_metrics(test.label.astype(int), verdicts, detector.classes)
            row.update({f"test_{name}_unsure": 1 - m["coverage"], f"test_{name}_covered_acc": m["covered_acc"],
                        f"test_{name}_confidently_wrong": m["confidently_wrong"]})
        rows.append(row)
    return pd.DataFrame(rows)


def composites(detector: Detector, out: Path, n: int = 60, n_real: int = 30):
    "The patch map on `n` composites and `n_real` untouched real photographs; one composite drawn."
    pd.DataFrame(composite_iou(detector, n=n)).to_csv(out / "composites.csv", index=False)
    rng, photos, rows = np.random.default_rng(1), real_photos(), []
    for _ in range(n_real):
        img = reencode(Image.fromarray(photo_crop(photos[rng.integers(len(photos))], 256, rng)), ("jpeg", 90))
        pm = patch_map(detector, img)
        rows.append(dict(verdict=map_verdict(pm), any_crop_above=bool((pm["probs"] >= pm["threshold"]).any()),
                         share_above=float((pixel_map(pm) >= pm["threshold"]).mean())))
    pd.DataFrame(rows).to_csv(out / "composites_real.csv", index=False)
    rng = np.random.default_rng(2)
    img, box, _ = make_composite(photos[rng.integers(len(photos))], rng, generator="transposed")
    img = reencode(img, ("jpeg", 90))
    drawn = overlay(img, patch_map(detector, img))
    ImageDraw.Draw(drawn).rectangle(box, outline=(40, 90, 255), width=2)
    pair = Image.new("RGB", (2 * img.width + 8, img.height), "white")
    pair.paste(img, (0, 0)); pair.paste(drawn, (img.width + 8, 0))
    pair.save(out / "composite_example.jpg", quality=92)


def main(run: str, out: str):
    run, out = Path(run), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    card = json.dumps(json.loads((run / "card.json").read_text()), indent=1)
    for folder in {str(run.resolve()), str(run)}: card = card.replace(json.dumps(folder)[1:-1], "outputs/demo")
    (out / "card.json").write_text(card + "\n")
    shutil.copyfile(run / "robustness_test.csv", out / "robustness_test.csv")
    table = stability_strengths(run, out)
    table.to_csv(out / "stability_strengths.csv", index=False)
    print(table.round(3).to_string(index=False))
    composites(Detector.load(run), out)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run"); ap.add_argument("out")
    main(**vars(ap.parse_args()))
