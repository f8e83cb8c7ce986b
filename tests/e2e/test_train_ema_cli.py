"""train.py --ema end to end on the tiny demo data: files, val.py and export_model.py on best.pdparams, resume, bad values.

A 1-epoch run (3 steps) with ``--ema 0.9``: best.pdparams must be the EMA weights (those of
last.ema.pdparams), val.py on it must give the mAP recorded in best.json, and the program
that export_model.py makes from it must give the probabilities of the dygraph model holding
the EMA weights.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import paddle
import pytest

from tests.conftest import ok, run_script, train_flags


def weights(path: Path) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in paddle.load(str(path), return_numpy=True).items()}



def error_line(result) -> str:
    """The one ``error: ...`` line of a clean failure with exit status 2."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ") or ": error: " in line]
    assert len(errors) == 1, result.stderr[-3000:]
    return errors[0]


@pytest.fixture(scope="module")
def ema_run(tiny_demo, tmp_path_factory) -> Path:
    """The save_dir of a finished 1-epoch run with --ema 0.9."""
    save = tmp_path_factory.mktemp("ema_cli") / "run"
    ok(run_script(*train_flags(tiny_demo, save, 1, "--ema", "0.9")))
    return save


def test_the_run_records_and_checkpoints_its_ema(ema_run) -> None:
    save = ema_run
    assert json.loads((save / "config.json").read_text())["ema"] == 0.9
    best = json.loads((save / "best.json").read_text())
    assert best["ema"] == 0.9 and best["epoch"] == 1
    manifest = json.loads((save / "last.manifest.json").read_text())
    assert set(manifest["files"]) == {".pdparams", ".pdopt", ".pdstates", ".ema.pdparams"}
    states = paddle.load(str(save / "last.pdstates"), return_numpy=True)
    assert states["ema"] == {"decay": 0.9, "updates": 3}
    ema, trained, best_weights = weights(save / "last.ema.pdparams"), weights(save / "last.pdparams"), weights(save / "best.pdparams")
    assert ema.keys() == trained.keys() == best_weights.keys()
    for key in ema:  # one evaluation, after the only epoch: best.pdparams is the EMA of then
        np.testing.assert_array_equal(best_weights[key], ema[key], err_msg=key)
    assert any(not np.array_equal(ema[k], trained[k]) for k in ema)
    assert not list(save.glob("*-prev.*")) and not list(save.glob("*.tmp"))


def test_val_on_best_reproduces_the_recorded_map(ema_run, tiny_demo, tmp_path: Path) -> None:
    out = tmp_path / "val.json"
    ok(run_script("val.py", "--load_from", str(ema_run / "best.pdparams"), "--test_json", str(tiny_demo["test"]),
                  "--json_out", str(out)))
    best = json.loads((ema_run / "best.json").read_text())
    assert json.loads(out.read_text())["mAP"] == pytest.approx(best["map"], abs=1e-6)


def test_export_of_best_gives_the_ema_model_outputs(ema_run, tiny_demo, tmp_path: Path) -> None:
    import paddle.nn.functional as F

    from datasets.config import DATASETS
    from datasets.image_io import load_rgb
    from datasets.transforms import preprocess
    from deploy.inference_config import DeployConfig, find_model_files
    from deploy.predictor import Predictor, RuntimeOptions
    from models import build_model

    export = tmp_path / "export"
    ok(run_script("export_model.py", "--model_path", str(ema_run / "best.pdparams"), "--save_dir", str(export)))
    files = find_model_files(str(export))
    deploy = DeployConfig.load(files.config_file)
    assert deploy.img_size == 64 and deploy.model == "resnet18"
    norm = DATASETS["demo"]
    images = sorted(tiny_demo["images"].iterdir())[:4]
    x = np.stack([preprocess(load_rgb(p), 64, norm.mean, norm.std) for p in images]).astype("float32")
    exported = Predictor(files, RuntimeOptions(enable_mkldnn=False, cpu_threads=1), deploy)(x)

    model = build_model("resnet18", deploy.num_classes, deploy.num_heads, deploy.lam)
    model.set_state_dict(paddle.load(str(ema_run / "last.ema.pdparams")))  # the EMA weights of the checkpoint
    model.eval()
    with paddle.no_grad():
        expected = F.sigmoid(model(paddle.to_tensor(x))).numpy()
    np.testing.assert_allclose(exported, expected, atol=1e-5, rtol=0)


def test_resume_continues_the_ema_and_refuses_to_change_it(ema_run, tiny_demo, tmp_path: Path) -> None:
    import shutil

    save = tmp_path / "copy"
    shutil.copytree(ema_run, save)
    changed = run_script("train.py", "--resume", str(save), "--ema", "0.99")
    line = error_line(changed)
    assert "--ema 0.99 was given but the run has --ema 0.9" in line
    ok(run_script("train.py", "--resume", str(save), "--total_epoch", "2"))
    states = paddle.load(str(save / "last.pdstates"), return_numpy=True)
    assert states["epoch"] == 2 and states["ema"] == {"decay": 0.9, "updates": 6}
    started = run_script(*train_flags(tiny_demo, tmp_path / "plain", 1))
    ok(started)
    line = error_line(run_script("train.py", "--resume", str(tmp_path / "plain"), "--ema", "0.9"))
    assert "--ema 0.9 was given but the run has no --ema" in line


@pytest.mark.parametrize("value", ["0", "1", "1.5", "-0.1", "nan", "x"])
def test_bad_ema_values_exit_2_with_a_clear_message(value: str, tmp_path: Path) -> None:
    result = run_script("train.py", "--ema", value, "--save_dir", str(tmp_path / "never"))
    line = error_line(result)
    assert "argument --ema: must be" in line and "between 0 and 1 (exclusive)" in line
    assert not (tmp_path / "never").exists()
