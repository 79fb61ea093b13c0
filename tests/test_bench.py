"""The benchmark notebook and `aidetect bench` / `aidetect prepare` run with tiny parameters and write their figures.
The commands run in-process (`aidetect.cli.main`: the same parsing and errors as the console script)."""
import json
from pathlib import Path

import papermill as pm
import pytest

from aidetect.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_bench_notebook_writes_the_ratios(tmp_path, tiny_demo):
    out = tmp_path / "bench.json"
    pm.execute_notebook(ROOT / "nbs/bench.ipynb", tmp_path / "bench.ipynb", cwd=ROOT, progress_bar=False,
                        parameters=dict(data=str(tiny_demo), arch="test_resnet", img_size=32, batch_size=8,
                                        device="cpu", steps=2, warmup=1, threads=1, num_workers=0,
                                        prepare_num_workers="1,2", json_path=str(out)))
    result = json.loads(out.read_text())
    run = result["runs"][0]
    assert run["ceiling_img_s"] > 0 and run["cache_img_s"] > 0 and run["jpeg_img_s"] > 0
    assert abs(run["b_over_c"] - run["cache_img_s"] / run["jpeg_img_s"]) < 1e-2
    assert set(result["prepare_img_per_s"]) == {"1", "2"} and result["n_images"] == 64


def test_cli_prepare_and_bench(tmp_path, tiny_demo, capsys):
    cache = tmp_path / "cache"
    main(["prepare", "--data", str(tiny_demo), "--img-size", "32", "--out-dir", str(cache), "--num-workers", "2",
          "-q"])
    assert "64 images" in capsys.readouterr().out and (cache / "images.u8").stat().st_size == 64 * 3 * 32 * 32
    main(["bench", "--data", str(tiny_demo), "--arch", "test_resnet", "--img-size", "32", "--batch-size", "8",
          "--device", "cpu", "--steps", "1", "--warmup", "1", "--threads", "0", "--num-workers", "0",
          "--prepare-num-workers", "", "--no-jpeg", "--cache", str(cache), "--json-path", str(tmp_path / "b.json")])
    assert "jpeg_img_s" not in json.loads((tmp_path / "b.json").read_text())["runs"][0]
    with pytest.raises(SystemExit) as bad:
        main(["bench", "--compile", "sometimes"])
    assert bad.value.code not in (None, 0) and "compile" in str(bad.value.code)


def test_rehearsal_smoke(tmp_path):
    """The GPU rehearsal script runs end to end with tiny settings and records the time of every stage."""
    from rehearsal import main as rehearsal  # benchmarks/ is on sys.path (conftest.py)
    out = tmp_path / "rehearsal.json"
    rehearsal(n=32, arch="test_resnet", img_size=32, epochs=1, batch_size=8, device="cpu", threads=0, num_workers=0,
              root=str(tmp_path / "r"), json_path=str(out))
    stages = json.loads(out.read_text())["stages_s"]
    assert set(stages) == {"make_train_photos", "make_test_photos", "prepare", "train", "evaluate"}
