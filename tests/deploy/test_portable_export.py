"""Layers with a portable form (models.portable): the ViT's Linear layers run as ``addmm`` in
Paddle's program, which paddle2onnx cannot read, so the ONNX export traces them as
``F.linear`` instead; both runtimes must still give the dygraph model's scores."""
from __future__ import annotations

import numpy as np
import paddle
import paddle.nn.functional as F

from models.portable import has_portable_form, portable_layers, portable_ops
from models.vit import RowLinear, ViTCSRA, ViTPreset

TINY = ViTPreset(dim=32, depth=2, heads=4, mlp_ratio=2.0)


def test_row_linear_equals_linear_in_both_forms_with_gradients() -> None:
    paddle.seed(0)
    layer = RowLinear(6, 5)
    layer.bias.set_value(np.arange(5, dtype=np.float32))  # a zero bias would hide a dropped add
    x_np = np.random.default_rng(0).normal(size=(7, 6)).astype(np.float32)
    want = x_np @ layer.weight.numpy() + layer.bias.numpy()
    grads = []
    for portable in (False, True):
        x = paddle.to_tensor(x_np, stop_gradient=False)
        layer.clear_gradients()
        if portable:
            with portable_ops(layer):
                assert layer.portable
                out = layer(x)
        else:
            out = layer(x)
        np.testing.assert_allclose(out.numpy(), want, rtol=1e-5, atol=1e-5)
        (out * out).sum().backward()
        grads.append([x.grad.numpy(), layer.weight.grad.numpy(), layer.bias.grad.numpy()])
    assert not layer.portable and "portable" not in vars(layer)  # restored to the class default
    for fast, portable in zip(*grads):
        np.testing.assert_allclose(fast, portable, rtol=1e-5, atol=1e-5)


def test_only_models_with_such_layers_have_a_portable_form() -> None:
    model = ViTCSRA(TINY, img_size=32, num_classes=3, num_heads=1, lam=0.3)
    assert has_portable_form(model) and len(portable_layers(model)) == 4 * TINY.depth
    assert not has_portable_form(paddle.nn.Sequential(paddle.nn.Linear(2, 2)))


def test_vit_program_uses_addmm_and_its_onnx_file_matches(tmp_path) -> None:
    from deploy.backends import create_backend
    from deploy.export import export_model_onnx, save_inference_model
    from deploy.inference_config import DeployConfig, find_model_files
    from deploy.predictor import RuntimeOptions

    paddle.seed(3)
    model = ViTCSRA(TINY, img_size=32, num_classes=3, num_heads=2, lam=0.3)
    for name, value in model.state_dict().items():
        if name.endswith("bias"):  # the init's zero biases would hide a lost bias
            value.set_value(np.random.default_rng(len(name)).normal(0, 0.5, value.shape).astype(np.float32))
    model.eval()
    config = DeployConfig(model="vit_b16", num_heads=2, lam=0.3, num_classes=3, img_size=32, mean=[0.0] * 3,
                          std=[1.0] * 3, class_names=["a", "b", "c"])
    paths = save_inference_model(model, tmp_path, config)
    program = paths["model_file"].read_text()
    assert "addmm" in program
    onnx_file = export_model_onnx(model, paths, config, tmp_path / "model.onnx", 13)
    assert not any(layer.portable for layer in portable_layers(model))  # the fast form is back
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # the portable program is gone
    config.onnx_file = onnx_file.name
    config.save(paths["config_file"])
    files = find_model_files(str(tmp_path))
    deploy = DeployConfig.load(files.config_file)
    x = np.random.default_rng(1).random((2, 3, 32, 32), dtype=np.float32)
    with paddle.no_grad():
        want = F.sigmoid(model(paddle.to_tensor(x))).numpy()
    opts = RuntimeOptions(cpu_threads=1, max_batch_size=2)
    for backend in ("paddle", "onnxruntime"):
        np.testing.assert_allclose(create_backend(backend, files, deploy, opts)(x), want, rtol=0, atol=1e-5, err_msg=backend)
