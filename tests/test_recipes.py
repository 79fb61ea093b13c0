"""Every recipe in params/ builds, trains a step and exports to ONNX offline: its own network, input and options
at a tiny image size, with random weights where the recipe downloads pretrained ones."""
import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ["npr", "highpass", "cnndetection", "commfor"]  # params/demo.yaml: what make demo trains
LARGE = ["univfd"]  # CLIP ViT-L/14, 303M parameters: minutes on a CPU, run with AIDETECT_LARGE_RECIPES=1


def train_and_export(recipe: str, data: Path, tmp_path: Path) -> tuple[dict, dict]:
    "The recipe's run at a tiny size (one step of 32 images) and its checked ONNX export: (metadata, export)."
    from aidetect.config import load_params
    from aidetect.inference import export_onnx_checked
    from aidetect.model import read_checkpoint_meta
    from aidetect.train import fit
    file = ROOT / "params" / f"{recipe}.yaml"
    patch14 = "patch14" in load_params([file]).arch
    cfg = load_params([file], dict(data=str(data), pretrained="", img_size=28 if patch14 else 32, epochs=1,
                                   batch_size=32, warmup_epochs=0, out_dir=str(tmp_path / recipe), device="cpu",
                                   cache=str(tmp_path / "cache"), wandb_mode="disabled", num_workers=0, threads=0,
                                   audit=False))
    fit(cfg, progress=False)
    history = (tmp_path / recipe / "history.csv").read_text().splitlines()
    assert len(history) == 2  # one epoch: a header and one row
    return read_checkpoint_meta(tmp_path / recipe / "best.safetensors"), export_onnx_checked(str(tmp_path / recipe))


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_trains_and_exports_offline(recipe, tiny_demo, tmp_path):
    """The recipe's parameters are used as they are (input transform, augmentation, architecture), the checkpoint
    says what its network is fed, and ONNX Runtime reproduces PyTorch on its export."""
    import yaml
    meta, export = train_and_export(recipe, tiny_demo, tmp_path)
    written = yaml.safe_load((ROOT / "params" / f"{recipe}.yaml").read_text())
    assert meta["input"] == written.get("input", "rgb") and meta["arch"] == written["arch"]
    assert {k: meta["params"][k] for k in ("aug_blur", "aug_jpeg")} == {k: written.get(k, 0.0)
                                                                      for k in ("aug_blur", "aug_jpeg")}
    assert export["max_abs_diff"] < 1e-4 and Path(export["onnx"]).stat().st_size > 0


@pytest.mark.skipif(not os.environ.get("AIDETECT_LARGE_RECIPES"), reason="CLIP ViT-L/14: set AIDETECT_LARGE_RECIPES=1")
@pytest.mark.parametrize("recipe", LARGE)
def test_large_recipe_trains_and_exports_offline(recipe, tiny_demo, tmp_path):
    """UnivFD's linear probe: the frozen ViT-L/14 at 28 px, only its 2,050 head parameters trained."""
    meta, export = train_and_export(recipe, tiny_demo, tmp_path)
    assert meta["params"]["freeze_backbone"] and export["max_abs_diff"] < 1e-4
    state = json.loads((tmp_path / recipe / "run.json").read_text())
    assert state["train_images"] == 32
