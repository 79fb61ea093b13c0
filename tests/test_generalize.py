"""The cross-generator experiment notebook runs under papermill and writes its matrix, heatmaps and summary."""
import json
from pathlib import Path

import pandas as pd
import papermill as pm

ROOT = Path(__file__).resolve().parents[1]


SETS = [["nearest"], ["bilinear"]]  # two training sets of one generator each (a list of lists)


def test_generalize_notebook(tmp_path, tiny_demo):
    """One model per training set, each tested on every generator of the test split and on all of them; the
    matrix, its summary and heatmaps are written, and each run records the generators it was trained on."""
    from aidetect.data import read_dataset
    tiny = dict(arch="test_resnet", img_size=32, epochs=1, batch_size=8, wandb_mode="disabled",
                cache=str(tmp_path / "cache"))
    pm.execute_notebook(ROOT / "nbs/generalize.ipynb", tmp_path / "generalize.ipynb", cwd=ROOT, progress_bar=False,
                        parameters=dict(data=str(tiny_demo), train_generators=SETS, params="", overrides=tiny,
                                        out_dir=str(tmp_path / "gen"), device="cpu"))
    table = pd.read_csv(tmp_path / "gen/generalize.csv")
    tested = sorted(set(read_dataset(tiny_demo, "test").query("label == 1").generator))
    assert sorted(set(table.train_set)) == sorted(s[0] for s in SETS)  # one model per set
    assert len(table) == len(SETS) * (len(tested) + 1)  # each tested on every generator, and on all
    assert (table.seen == (table.train_set == table.test_generator)).all()
    summary = json.loads((tmp_path / "gen/generalize.json").read_text())
    assert {"seen_acc", "unseen_acc", "gap_acc"} <= set(summary)
    for name in ("generalize.png", "generalize_ap.png"):
        assert (tmp_path / "gen" / name).exists()
    params = json.loads((tmp_path / "gen/nearest/metrics.json").read_text())["params"]
    assert params["train_generators"] == ["nearest"] and params["epochs"] == 1


def test_generalize_notebook_compares_recipes(tmp_path, tiny_demo):
    """With recipes, the notebook runs the protocol once per recipe (overrides winning over each), writes
    recipes.csv and recipes.png next to each recipe's matrix, and a second run retrains nothing."""
    tiny = dict(arch="test_resnet", img_size=32, epochs=1, batch_size=8, wandb_mode="disabled",
                cache=str(tmp_path / "cache"))
    recipes = {"rgb": {}, "npr": {"input": "npr", "epochs": 3}}  # overrides' epochs win: the same for both
    pm.execute_notebook(ROOT / "nbs/generalize.ipynb", tmp_path / "generalize.ipynb", cwd=ROOT, progress_bar=False,
                        parameters=dict(data=str(tiny_demo), train_generators=[["nearest"]], params="",
                                        overrides=tiny, recipes=recipes, out_dir=str(tmp_path / "rec"), device="cpu"))
    table = pd.read_csv(tmp_path / "rec/recipes.csv")
    assert table.recipe.tolist() == ["rgb", "npr"] and (table.train_img_per_s > 0).all()
    assert {"seen_auc", "unseen_auc", "seen_ap", "unseen_ap", "seen_fake_acc", "unseen_fake_acc"} <= set(table)
    assert (tmp_path / "rec/recipes.png").exists() and (tmp_path / "rec/npr/generalize.png").exists()
    params = json.loads((tmp_path / "rec/npr/nearest/metrics.json").read_text())["params"]
    assert (params["input"], params["epochs"]) == ("npr", 1)
    trained = (tmp_path / "rec/npr/nearest/best.safetensors").stat().st_mtime_ns
    from aidetect.generalize import compare_recipes  # the function under the notebook, run again: nothing to train
    again = compare_recipes(recipes, str(tiny_demo), [["nearest"]], overrides=tiny, out_dir=str(tmp_path / "rec"),
                            device="cpu")
    assert again.recipe.tolist() == table.recipe.tolist() and (again.unseen_auc - table.unseen_auc).abs().max() < 1e-9
    assert (tmp_path / "rec/npr/nearest/best.safetensors").stat().st_mtime_ns == trained
