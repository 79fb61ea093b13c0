"""The answers that say when not to trust them, end to end on the shared run: the card training wrote, `aidetect info`,
`aidetect predict` with verdicts (as installed, a real process) and `aidetect explain`."""
import json
import subprocess

from aidetect.card import read_card
from aidetect.data import read_dataset
from aidetect.model import read_checkpoint_meta
from aidetect.trust import SHARPEN_STRENGTHS, stability_variants


def test_training_writes_the_card_into_the_checkpoint(demo_run, tiny_demo):
    meta = read_checkpoint_meta(demo_run / "best.safetensors")
    card, df = meta["card"], read_dataset(tiny_demo)
    assert card["data"]["train"]["n"] + card["data"]["val"]["n"] == len(df)
    assert card["trained_on"] == sorted(df[df.label == 1].generator.unique())
    trust = meta["trust"]
    assert {"ranges", "band", "variants"} <= set(trust)
    assert trust["variants"] in [[list(v) for v in stability_variants(s)] for s in SHARPEN_STRENGTHS]
    assert trust["stability_choices"][-1]["val_unsure"] == trust["val_unsure"]  # the strength kept is the last tried
    assert read_card(demo_run)["data"]["sha256"] == card["data"]["sha256"]


def test_info_predict_and_explain(demo_run, tiny_demo, tmp_path, capsys):
    """`aidetect predict` as installed (a real process) answers with verdicts; `info` and `explain` through the same
    command line, in this process."""
    from aidetect.cli import main
    images = read_dataset(tiny_demo, "test").path[:2].tolist()
    out = subprocess.run(["aidetect", "predict", str(demo_run), *images, "--device", "cpu"], capture_output=True,
                         text=True, check=True).stdout
    answers = [json.loads(line) for line in out.splitlines()]
    assert [a["verdict"] in ("ai", "human", "unsure") for a in answers] == [True, True]
    assert all(a["verdict"] == a["label"] or a["reasons"] for a in answers)  # unsure always says why
    main(["info", str(demo_run)])
    info = capsys.readouterr().out
    assert "trained on" in info and "unsure when" in info and "fitted on validation" in info
    main(["explain", str(demo_run), images[0], "--out", str(tmp_path / "maps"), "--device", "cpu"])
    assert len(list((tmp_path / "maps").glob("*_map.png"))) == 1
