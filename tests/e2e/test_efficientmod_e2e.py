"""A reduced EfficientMod + CSRA through build, one training step, export and the Paddle Inference predictor.

The reduced network is built from the family's class with small widths (not a registered preset);
the last test runs the real command lines on the smallest preset.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest

from models.efficientmod import EfficientModConfig, EfficientModCSRA

ROOT = Path(__file__).resolve().parents[2]
TINY = EfficientModConfig(widths=(8, 8, 16, 16), depths=(1, 2, 1, 1), attention_depths=(0, 0, 1, 1), ratio=2,
                          attention_ratios=(2, 2, 2, 3), drop_path=0.1, kernel_size=3, num_heads=2, min_head_width=4)


def tiny(num_classes: int = 3) -> EfficientModCSRA:
    paddle.seed(0)
    model = EfficientModCSRA(TINY, num_classes=num_classes, num_heads=2, lam=0.3)
    model.config = {"model": "efficientmod_tiny_test", "num_classes": num_classes, "num_heads": 2, "lam": 0.3,
                    "attention": None, "attention_stages": None}
    return model


def test_train_one_step_moves_every_part() -> None:
    from engine.trainer import build_optimizer, train_step

    model = tiny()
    model.train()
    optimizer, scheduler = build_optimizer(model, lr=0.05, momentum=0.9, weight_decay=1e-4, iters_per_epoch=1,
                                           warmup_epochs=0, step_epochs=4)
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    images = paddle.rand([4, 3, 64, 64])
    targets = paddle.to_tensor(np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]], "float32"))
    loss = train_step(model, optimizer, scheduler, images, targets)
    assert np.isfinite(float(loss))
    after = model.state_dict()
    for key in ("patch_embed.proj.weight", "layers.1.blocks.1.gamma_1", "layers.1.blocks.1.mlp.context_layer.context_list.0.weight",
                "layers.3.blocks.1.attn.qkv.weight", "norm.weight", "classifier.multi_head.0.head.weight"):
        assert not np.array_equal(before[key], after[key].numpy()), key


def test_export_and_predictor_match_dygraph(tmp_path) -> None:
    import paddle.nn.functional as F

    from deploy.backends import create_backend
    from deploy.export import save_inference_model
    from deploy.inference_config import DeployConfig, find_model_files
    from deploy.predictor import RuntimeOptions

    model = tiny()
    model.eval()
    config = DeployConfig(model="efficientmod_tiny_test", num_heads=2, lam=0.3, attention=None, attention_stages=None,
                          num_classes=3, img_size=96, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225],
                          class_names=["a", "b", "c"], threshold=0.5, dataset="custom", input_name="x",
                          weights="random_init", paddle_version=paddle.__version__)
    save_inference_model(model, tmp_path, config)
    files = find_model_files(str(tmp_path))
    x = np.random.default_rng(1).random((2, 3, 96, 96), dtype=np.float32)
    with paddle.no_grad():
        expected = F.sigmoid(model(paddle.to_tensor(x))).numpy()
    for mkldnn in (True, False):
        predictor = create_backend("paddle", files, DeployConfig.load(files.config_file),
                                   RuntimeOptions(cpu_threads=1, enable_mkldnn=mkldnn, max_batch_size=2))
        np.testing.assert_allclose(predictor.run(x), expected, rtol=1e-4, atol=1e-5)


def test_export_with_class_maps_matches_dygraph(tmp_path) -> None:
    """--with_heatmaps on EfficientMod: the program's second output is the combined class map."""
    import paddle.nn.functional as F

    from deploy.backends import create_backend
    from deploy.export import save_inference_model
    from deploy.inference_config import DeployConfig, find_model_files
    from deploy.predictor import RuntimeOptions

    model = tiny()
    model.eval()
    config = DeployConfig(model="efficientmod_tiny_test", num_heads=2, lam=0.3, num_classes=3, img_size=64,
                          mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0], class_names=["a", "b", "c"], heatmaps=True)
    save_inference_model(model, tmp_path, config)
    files = find_model_files(str(tmp_path))
    x = np.random.default_rng(2).random((2, 3, 64, 64), dtype=np.float32)
    with paddle.no_grad():
        maps = model.class_maps(paddle.to_tensor(x))
    predictor = create_backend("paddle", files, DeployConfig.load(files.config_file), RuntimeOptions(cpu_threads=1, max_batch_size=2))
    probs, got = predictor.with_maps(x)
    assert got.shape == (2, 3, 2, 2)  # 64 px / stride 32
    np.testing.assert_allclose(probs, F.sigmoid(maps.logits).numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got, maps.combined.numpy(), rtol=1e-4, atol=1e-4)


def test_command_lines_with_the_smallest_preset(tmp_path) -> None:
    """export_model.py (random weights) and infer.py on efficientmod_xxs at 64 px."""
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (80, 100, 3), dtype=np.uint8)).save(images / f"{i}.jpg")
    export = tmp_path / "export"
    run = lambda *cmd: subprocess.run([sys.executable, *cmd], cwd=ROOT, capture_output=True, text=True)  # noqa: E731
    proc = run("export_model.py", "--model", "efficientmod_xxs", "--dataset", "voc07", "--img_size", "64", "--random_init",
               "--save_dir", str(export))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "model: efficientmod_xxs" in (export / "inference.yml").read_text()
    proc = run("infer.py", "--model_dir", str(export), "--input_file", str(images), "--cpu_threads", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "0.jpg" in proc.stdout and "1.jpg" in proc.stdout
