"""export_model.py --quantize int8 and infer.py --precision int8 on CPU, end to end on tiny data,
plus the refusals of impossible requests (exit status 2, one `error:` line, no traceback)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_script
from tests.deploy.conftest import hide_modules, ok, onnx_extra_installed, user_error


def test_int8_export_writes_a_smaller_int8_model(quantized_export, deploy_images) -> None:
    import onnx
    import yaml

    names = {p.name for p in quantized_export.iterdir()}
    assert {"inference.json", "inference.pdiparams", "inference.yml", "model.onnx", "model_int8.onnx"} <= names
    fp32, int8 = quantized_export / "model.onnx", quantized_export / "model_int8.onnx"
    assert int8.stat().st_size < 0.35 * fp32.stat().st_size  # int8 weights: about a quarter of float32
    model = onnx.load(str(int8))
    int8_weights = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert sum(int(np.prod(t.dims)) for t in int8_weights) > 1_000_000  # the convolution weights are int8
    assert any(n.op_type == "DequantizeLinear" for n in model.graph.node)
    cfg = yaml.safe_load((quantized_export / "inference.yml").read_text())
    assert cfg["onnx_file"] == "model.onnx"
    assert cfg["int8"]["file"] == "model_int8.onnx" and cfg["int8"]["runtime"] == "onnxruntime"
    assert cfg["int8"]["calib_images"] == 4 and cfg["int8"]["calib_dir"] == str(deploy_images.resolve())


def test_int8_infer_mostly_agrees_with_predict(quantized_export, predicted, deploy_run, deploy_images, tmp_path) -> None:
    """--precision int8 (auto -> onnxruntime): one line per image, scores close, most label decisions unchanged."""
    js = tmp_path / "int8.json"
    result = run_script("infer.py", "--model_dir", str(quantized_export), "--input_file", str(deploy_images),
                        "--precision", "int8", "--output", str(js), "--enable_benchmark", "True", "--batch_size", "4")
    ok(result)
    lines = result.stdout.splitlines()
    assert " precision: int8" in lines and " inference_backend: onnxruntime" in lines
    records = json.loads(js.read_text())
    expected = predicted[1]
    assert [r["img_path"] for r in records] == [r["img_path"] for r in expected]
    ours, ref = np.array([r["scores"] for r in records]), np.array([r["scores"] for r in expected])
    assert np.abs(ours - ref).max() < 0.1
    cut = deploy_run["threshold"]  # the export's default threshold, which both runs used
    changed = int(((ours >= cut) != (ref >= cut)).sum())
    assert changed <= ref.size // 5, f"{changed} of {ref.size} label decisions changed"


def test_int8_on_an_fp32_export_is_refused(fp32_export, deploy_images) -> None:
    result = run_script("infer.py", "--model_dir", str(fp32_export), "--input_file", str(deploy_images), "--precision", "int8")
    user_error(result, "--precision int8", "only fp32", "--quantize int8")
    assert result.stdout == ""


def test_int8_on_the_paddle_backend_is_refused(quantized_export, deploy_images) -> None:
    result = run_script("infer.py", "--model_dir", str(quantized_export), "--input_file", str(deploy_images),
                        "--precision", "int8", "--backend", "paddle")
    user_error(result, "--precision int8 on CPU runs on --backend onnxruntime")


@pytest.mark.parametrize("flags,needles", [
    (["--quantize", "int8"], ["--quantize int8 needs --calib_dir"]),
    (["--quantize", "int8", "--calib_dir", "{missing}"], ["--calib_dir", "not found"]),
    (["--quantize", "int8", "--calib_dir", "{empty}"], ["--calib_dir", "holds no image"]),
    (["--calib_dir", "{images}"], ["only apply with --quantize int8"]),
    (["--quantize", "int4", "--calib_dir", "{images}"], ["invalid choice"]),
])
def test_quantize_flag_refusals(flags, needles, deploy_run, deploy_images, tmp_path) -> None:
    """Refused before anything is exported: nothing written, exit status 2."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    fill = {"{missing}": str(tmp_path / "nope"), "{empty}": str(tmp_path / "empty"), "{images}": str(deploy_images)}
    save = tmp_path / "out"
    result = run_script("export_model.py", "--model_path", str(deploy_run["weights"]), "--save_dir", str(save),
                        *[fill.get(f, f) for f in flags])
    if needles == ["invalid choice"]:  # argparse's own usage error
        assert result.returncode == 2 and "invalid choice" in result.stderr and "Traceback" not in result.stderr
    else:
        user_error(result, *needles)
    assert not save.exists() or not any(save.iterdir())


def test_quantize_without_the_onnx_extra_is_refused(deploy_run, deploy_images, tmp_path) -> None:
    env = hide_modules(tmp_path / "hide", "onnxruntime")
    save = tmp_path / "out"
    result = run_script("export_model.py", "--model_path", str(deploy_run["weights"]), "--save_dir", str(save),
                        "--quantize", "int8", "--calib_dir", str(deploy_images), env=env)
    user_error(result, "--quantize int8 needs onnxruntime", "pip install -r requirements-onnx.txt")
    assert not save.exists() or not any(save.iterdir())


def test_calibration_images_are_spread_over_the_folder(tmp_path) -> None:
    from PIL import Image

    from deploy.quantize import calibration_images

    for i in range(10):
        Image.new("RGB", (8, 8), (i, i, i)).save(tmp_path / f"{i:02d}.png")
    picked = [Path(p).name for p in calibration_images(str(tmp_path), 4)]
    assert picked == ["00.png", "02.png", "05.png", "07.png"]
    assert len(calibration_images(str(tmp_path), 50)) == 10


@pytest.mark.skipif(not onnx_extra_installed(), reason="requirements-onnx.txt is not installed")
def test_unreadable_calibration_images_are_skipped(tmp_path) -> None:
    """Calibration images that all fail to decode: a clear error before ONNX Runtime is called, no int8 file."""
    from deploy.quantize import quantize_int8
    from utils.errors import UserError

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match="none of the 1 calibration images could be read"):
        quantize_int8(tmp_path / "model.onnx", tmp_path / "model_int8.onnx", [str(bad)], "x", 64, (0, 0, 0), (1, 1, 1))
    assert not (tmp_path / "model_int8.onnx").exists()
