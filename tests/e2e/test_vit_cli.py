"""ViT-B/16 + CSRA through the command lines: train one epoch at 64 px, predict, export, infer
(Paddle Inference must reproduce predict.py's scores to 1e-4). The CSRA_ViT_B16 TIPC config is
checked with the others in tests/e2e/test_tipc.py (its chain runs the same scripts as here).

Nothing in the scripts knows the ViT: only ``--model vit_b16`` (or the reference's alias) differs
from the ResNet runs.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ok, run_script




@pytest.fixture(scope="module")
def vit_run(tiny_demo, tmp_path_factory) -> Path:
    """A one-epoch vit_b16 training run at 64 px on the tiny demo data (random init, dropout flags on)."""
    save = tmp_path_factory.mktemp("vit_run")
    result = run_script("train.py", "--dataset", "demo", "--train_json", str(tiny_demo["train"]), "--test_json",
                        str(tiny_demo["test"]), "--model", "vit_B16_224", "--num_heads", "2", "--lam", "0.3",
                        "--img_size", "64", "--batch_size", "8", "--warmup_epoch", "1", "--total_epoch", "1",
                        "--drop_rate", "0.1", "--drop_path_rate", "0.1", "--save_dir", str(save), "--print_freq", "1",
                        timeout=1200)
    ok(result)
    return save


def test_train_records_the_model_and_the_drop_rates(vit_run: Path) -> None:
    config = json.loads((vit_run / "config.json").read_text())
    assert config["model"] == "vit_b16" and config["img_size"] == 64
    assert config["drop_rate"] == 0.1 and config["drop_path_rate"] == 0.1
    assert (vit_run / "best.pdparams").is_file()


def test_train_refuses_a_size_that_is_not_a_multiple_of_16(tiny_demo, tmp_path: Path) -> None:
    result = run_script("train.py", "--dataset", "demo", "--train_json", str(tiny_demo["train"]), "--test_json",
                        str(tiny_demo["test"]), "--model", "vit_b16", "--img_size", "72", "--total_epoch", "1",
                        "--save_dir", str(tmp_path / "run"))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "--img_size 72: a ViT needs a multiple of 16" in result.stderr


def test_export_and_infer_reproduce_predict(vit_run: Path, tiny_demo, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for src in sorted(Path(tiny_demo["images"]).glob("*.jpg"))[:5]:
        (images / src.name).write_bytes(src.read_bytes())
    predicted = tmp_path / "predict.json"
    ok(run_script("predict.py", "--load_from", str(vit_run / "best.pdparams"), "--img_dir", str(images),
                  "--output", str(predicted), "--heatmap_dir", str(tmp_path / "heat_predict"), "--threshold", "0"))
    export = tmp_path / "export"
    ok(run_script("export_model.py", "--model_path", str(vit_run / "best.pdparams"), "--save_dir", str(export),
                  "--with_heatmaps"))
    assert "model: vit_b16" in (export / "inference.yml").read_text()
    want = json.loads(predicted.read_text())
    for batch in ("1", "3"):
        inferred = tmp_path / f"infer_{batch}.json"
        ok(run_script("infer.py", "--model_dir", str(export), "--input_file", str(images), "--batch_size", batch,
                      "--output", str(inferred), "--heatmap_dir", str(tmp_path / f"heat_infer_{batch}"), "--threshold", "0"))
        # the ViT's patch-token maps drawn by both: every class of every image (threshold 0), same files
        drawn = sorted(p.name for p in (tmp_path / f"heat_infer_{batch}").iterdir())
        assert drawn == sorted(p.name for p in (tmp_path / "heat_predict").iterdir())
        assert len(drawn) == 5 * (len(want[0]["scores"]) + 1)
        got = json.loads(inferred.read_text())
        assert [r["img_path"] for r in got] == [r["img_path"] for r in want]
        np.testing.assert_allclose([r["scores"] for r in got], [r["scores"] for r in want], atol=1e-4, rtol=0)
