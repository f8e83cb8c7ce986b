"""infer.py's backends (deploy/backends): every installed one reproduces predict.py, the choice
falls back cleanly when the optional extra is missing, and impossible requests are refused
with one `error:` line, exit status 2 and no traceback."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_script
from tests.deploy.conftest import hide_modules, ok, user_error


def _infer(export: Path, images: Path, *flags: str, env: dict | None = None):
    return run_script("infer.py", "--model_dir", str(export), "--input_file", str(images), *flags, env=env)


@pytest.mark.parametrize("backend", ["paddle", "onnxruntime", "auto"])
def test_backend_matches_predict(backend, quantized_export, predicted, deploy_images, tmp_path) -> None:
    """Same lines as predict.py and scores within 1e-4, batch 4 with a ragged last batch of 2."""
    from deploy.backends import installed_backends

    if backend != "auto" and backend not in installed_backends():
        pytest.skip(f"{backend} is not installed")
    js = tmp_path / "out.json"
    result = _infer(quantized_export, deploy_images, "--backend", backend, "--batch_size", "4", "--output", str(js),
                    "--enable_benchmark", "True")
    ok(result)
    expected_stdout, expected = predicted
    lines = result.stdout.splitlines()
    assert "\n".join(lines[:6]) + "\n" == expected_stdout
    assert f" inference_backend: {'paddle' if backend == 'auto' else backend}" in lines
    records = json.loads(js.read_text())
    assert [r["img_path"] for r in records] == [r["img_path"] for r in expected]
    np.testing.assert_allclose([r["scores"] for r in records], [r["scores"] for r in expected], atol=1e-4, rtol=0)


def test_backends_in_process_agree(quantized_export) -> None:
    """The backend objects themselves (as bench/infer_speed.py uses them) on one random batch."""
    from deploy.backends import create_backend, installed_backends
    from deploy.inference_config import DeployConfig, find_model_files
    from deploy.predictor import RuntimeOptions

    files = find_model_files(str(quantized_export))
    deploy = DeployConfig.load(files.config_file)
    x = np.random.default_rng(0).random((3, 3, 64, 64), dtype=np.float32)
    opts = RuntimeOptions(cpu_threads=1)
    ref = create_backend("paddle", files, deploy, opts)(x)
    assert ref.shape == (3, 5) and ref.dtype == np.float32
    if "onnxruntime" in installed_backends():
        np.testing.assert_allclose(create_backend("onnxruntime", files, deploy, opts)(x), ref, atol=1e-4, rtol=0)


def test_auto_falls_back_without_onnxruntime(quantized_export, predicted, deploy_images, tmp_path) -> None:
    """onnxruntime hidden: --backend auto runs fp32 on Paddle Inference as if the extra were never installed."""
    env = hide_modules(tmp_path / "hide", "onnxruntime")
    result = _infer(quantized_export, deploy_images, env=env)
    ok(result)
    assert result.stdout == predicted[0]


def test_missing_backend_is_refused(quantized_export, deploy_images, tmp_path) -> None:
    env = hide_modules(tmp_path / "hide", "onnxruntime")
    result = _infer(quantized_export, deploy_images, "--backend", "onnxruntime", env=env)
    user_error(result, "--backend onnxruntime needs onnxruntime", "not installed", "pip install -r requirements-onnx.txt")
    assert result.stdout == ""
    result = _infer(quantized_export, deploy_images, "--precision", "int8", env=env)
    user_error(result, "--precision int8", "onnxruntime", "pip install -r requirements-onnx.txt")


def test_onnxruntime_needs_the_onnx_file(fp32_export, deploy_images) -> None:
    result = _infer(fp32_export, deploy_images, "--backend", "onnxruntime")
    user_error(result, "--backend onnxruntime needs", "model.onnx", "--onnx")
    assert result.stdout == ""


def test_openvino_refuses_new_ir_programs(quantized_export, deploy_images) -> None:
    """Paddle 3.3's OpenVINO engine ignores .json programs: refused instead of silently running oneDNN."""
    result = _infer(quantized_export, deploy_images, "--backend", "openvino")
    user_error(result, "--backend openvino", "inference.json", ".pdmodel", "--backend paddle")
    assert result.stdout == ""


def test_gpu_with_onnxruntime_is_refused(quantized_export, deploy_images) -> None:
    result = _infer(quantized_export, deploy_images, "--backend", "onnxruntime", "--use_gpu", "True")
    user_error(result, "--backend onnxruntime runs on the CPU")


def test_registry_shape_and_choice(quantized_export, fp32_export, monkeypatch) -> None:
    """Every entry names a module with check/create; auto follows AUTO_ORDER and skips what is missing."""
    import importlib

    import deploy.backends as backends
    from deploy.inference_config import DeployConfig, find_model_files
    from deploy.predictor import RuntimeOptions
    from utils.errors import UserError

    for entry in backends.REGISTRY.values():
        module = importlib.import_module(entry.module)
        assert callable(module.check) and callable(module.create), entry.name
    files = find_model_files(str(quantized_export))
    deploy = DeployConfig.load(files.config_file)
    fp32, int8 = RuntimeOptions(), RuntimeOptions(precision="int8")
    assert backends.choose_backend("auto", files, deploy, fp32) == backends.AUTO_ORDER["fp32"][0]
    if "onnxruntime" in backends.installed_backends():
        assert backends.choose_backend("auto", files, deploy, int8) == "onnxruntime"
    plain = find_model_files(str(fp32_export))
    plain_cfg = DeployConfig.load(plain.config_file)
    with pytest.raises(UserError, match="only fp32"):
        backends.choose_backend("auto", plain, plain_cfg, int8)
    with pytest.raises(UserError, match="--precision int8 on CPU"):
        backends.choose_backend("paddle", files, deploy, int8)
    with pytest.raises(UserError, match="choose one of"):
        backends.choose_backend("tensorflow", files, deploy, fp32)
    monkeypatch.setattr(backends, "missing_modules", lambda name: ["onnxruntime"] if name == "onnxruntime" else [])
    assert backends.choose_backend("auto", files, deploy, fp32) == "paddle"
    with pytest.raises(UserError, match="requirements-onnx.txt"):
        backends.choose_backend("auto", files, deploy, int8)


def test_auto_prefers_onnxruntime_for_vit_exports_on_cpu(quantized_export, fp32_export, monkeypatch) -> None:
    """A family's own CPU fp32 order (ViT: onnxruntime first) decides auto; an export without
    model.onnx, int8 and the GPU keep their usual choice."""
    from dataclasses import replace

    import deploy.backends as backends
    from deploy.inference_config import DeployConfig, find_model_files
    from deploy.predictor import RuntimeOptions
    from models.family import family_of_name

    assert family_of_name("vit_b16").cpu_fp32_backends == ("onnxruntime", "paddle")
    assert family_of_name("vit_B16_224") is family_of_name("vit_b16")  # the reference's alias
    assert family_of_name("resnet18").cpu_fp32_backends is None and family_of_name("no_such_model") is None
    files = find_model_files(str(quantized_export))
    resnet = DeployConfig.load(files.config_file)
    vit = replace(resnet, model="vit_b16")
    fp32 = RuntimeOptions()
    assert backends.auto_order(vit, fp32) == ("onnxruntime", "paddle")
    assert backends.auto_order(resnet, fp32) == backends.AUTO_ORDER["fp32"]
    assert backends.auto_order(vit, RuntimeOptions(precision="int8")) == backends.AUTO_ORDER["int8"]
    assert backends.auto_order(vit, RuntimeOptions(use_gpu=True)) == ("paddle",)
    if "onnxruntime" in backends.installed_backends():
        assert backends.choose_backend("auto", files, vit, fp32) == "onnxruntime"
    assert backends.choose_backend("auto", files, resnet, fp32) == "paddle"
    plain = find_model_files(str(fp32_export))
    assert backends.choose_backend("auto", plain, replace(DeployConfig.load(plain.config_file), model="vit_b16"), fp32) == "paddle"
    monkeypatch.setattr(backends, "missing_modules", lambda name: ["onnxruntime"] if name == "onnxruntime" else [])
    assert backends.choose_backend("auto", files, vit, fp32) == "paddle"


def test_a_new_backend_is_a_module_and_an_entry(quantized_export, monkeypatch, tmp_path) -> None:
    """Registering a module (here a fake one) is all infer.py's choice needs."""
    import sys
    import types

    import deploy.backends as backends
    from deploy.backends.base import InferenceBackend
    from deploy.inference_config import DeployConfig, find_model_files
    from deploy.predictor import RuntimeOptions

    class Constant(InferenceBackend):
        name = "constant"

        def run(self, batch: np.ndarray) -> np.ndarray:
            return np.full((batch.shape[0], self.deploy.num_classes), 0.5, np.float32)

    module = types.ModuleType("fake_backend")
    module.check = lambda files, deploy, opts: None
    module.create = lambda files, deploy, opts: Constant(deploy, "constant")
    monkeypatch.setitem(sys.modules, "fake_backend", module)
    monkeypatch.setitem(backends.REGISTRY, "constant", backends.BackendEntry("constant", "fake_backend", (), "", "test"))
    files = find_model_files(str(quantized_export))
    deploy = DeployConfig.load(files.config_file)
    assert backends.choose_backend("constant", files, deploy, RuntimeOptions()) == "constant"
    out = backends.create_backend("constant", files, deploy, RuntimeOptions())(np.zeros((2, 3, 64, 64), np.float32))
    assert out.shape == (2, 5)
