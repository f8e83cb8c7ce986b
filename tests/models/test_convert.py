"""tools/convert_torch_weights.py: round trips through PyTorch-format files the tests write."""
from __future__ import annotations

import io
import pickle
import subprocess
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import paddle
import pytest

from models import build_model
from models.convert import FORMAT_CSRA_REFERENCE, convert_torch_state, detect_format
from models.resnet import FORMAT_TORCHVISION_RESNET
from utils.errors import UserError
from utils.pth_io import save_pth

ROOT = Path(__file__).resolve().parents[2]
FLAGS = ["--model", "resnet18", "--num_heads", "2", "--lam", "0.3", "--num_cls", "4"]


def to_torch_names(model: paddle.nn.Layer, with_classifier: bool, prefix: str = "") -> "OrderedDict[str, np.ndarray]":
    """A Paddle model's weights as a PyTorch state dict would hold them."""
    out: OrderedDict[str, np.ndarray] = OrderedDict()
    for key, value in model.state_dict().items():
        if key.startswith("classifier.") and not with_classifier:
            continue
        key = key.replace("._mean", ".running_mean").replace("._variance", ".running_var")
        out[prefix + key] = value.numpy()
        if key.endswith("running_var"):
            out[prefix + key.replace("running_var", "num_batches_tracked")] = np.array(7, dtype=np.int64)
    if not with_classifier:  # torchvision's ImageNet head, [out, in] as torch stores Linear weights
        out[prefix + "fc.weight"] = np.zeros((1000, 512), np.float32)
        out[prefix + "fc.bias"] = np.zeros((1000,), np.float32)
    return out


@pytest.fixture(scope="module")
def source_model() -> paddle.nn.Layer:
    paddle.seed(3)
    model = build_model("resnet18", num_classes=4, num_heads=2, lam=0.3)
    # Non-trivial BN statistics so that a swapped mean/variance would show.
    for name, param in model.state_dict().items():
        if name.endswith("._mean"):
            param.set_value(paddle.uniform(param.shape, min=-0.2, max=0.2))
        elif name.endswith("._variance"):
            param.set_value(paddle.uniform(param.shape, min=0.5, max=1.5))
    model.eval()
    return model


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "tools/convert_torch_weights.py", *args], cwd=ROOT, capture_output=True, text=True)


def _logits(model: paddle.nn.Layer) -> np.ndarray:
    x = paddle.to_tensor(np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32))
    model.eval()
    with paddle.no_grad():
        return model(x).numpy()


def test_reference_csra_checkpoint_round_trip(source_model, tmp_path: Path) -> None:
    src = tmp_path / "csra.pth"
    save_pth(to_torch_names(source_model, with_classifier=True, prefix="module."), src)
    result = _run("--src", str(src), "--dst", str(tmp_path / "csra.pdparams"), *FLAGS)
    assert result.returncode == 0, result.stderr
    assert "source format: csra-reference (prefix 'module.' stripped)" in result.stdout
    assert "skipped 20: BN step counter" in result.stdout
    model = build_model("resnet18", 4, 2, 0.3, pretrained=str(tmp_path / "csra.pdparams"))
    for key, value in source_model.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[key].numpy(), value.numpy(), err_msg=key)
    np.testing.assert_allclose(_logits(model), _logits(source_model), rtol=1e-6)


def test_torchvision_imagenet_checkpoint_drops_fc(source_model, tmp_path: Path) -> None:
    src = tmp_path / "resnet18-imagenet.pth"
    save_pth(to_torch_names(source_model, with_classifier=False), src)
    result = _run("--src", str(src), "--dst", str(tmp_path / "r18.pdparams"), *FLAGS)
    assert result.returncode == 0, result.stderr
    assert "source format: torchvision-resnet" in result.stdout
    assert "ImageNet classifier, replaced by the CSRA head (fc.weight, fc.bias)" in result.stdout
    assert "2 classifier tensor(s), initialised fresh" in result.stdout
    model = build_model("resnet18", 4, 2, 0.3, pretrained=str(tmp_path / "r18.pdparams"))
    paddle.seed(0)
    np.testing.assert_array_equal(model.layer3[0].downsample[1]._variance.numpy(),
                                  source_model.layer3[0].downsample[1]._variance.numpy())


def test_pth_loads_directly_as_pretrained(source_model, tmp_path: Path) -> None:
    src = tmp_path / "csra.pth"
    save_pth({"state_dict": to_torch_names(source_model, with_classifier=True), "epoch": 3}, src)
    model = build_model("resnet18", 4, 2, 0.3, pretrained=str(src))
    np.testing.assert_allclose(_logits(model), _logits(source_model), rtol=1e-6)


def test_format_detection() -> None:
    assert detect_format(["conv1.weight", "layer1.0.bn1.running_mean", "fc.weight"]) == FORMAT_TORCHVISION_RESNET
    assert detect_format(["conv1.weight", "layer1.0.bn1.running_mean", "classifier.multi_head.0.head.weight"]) == FORMAT_CSRA_REFERENCE
    with pytest.raises(UserError, match="unrecognised checkpoint.*resnet: 'conv1.weight' and 'layer1.\\*'.*encoder.weight"):
        detect_format(["encoder.weight"])


def test_linear_weights_are_transposed() -> None:
    """Conversion is driven by the target: a Linear weight [out, in] becomes [in, out]."""
    class Tiny(paddle.nn.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = paddle.nn.Conv2D(3, 2, 1)
            self.layer1 = paddle.nn.Linear(3, 5)

    w = np.arange(15, dtype=np.float32).reshape(5, 3)
    conv = convert_torch_state({"conv1.weight": np.zeros((2, 3, 1, 1), np.float32), "conv1.bias": np.zeros(2, np.float32),
                                "layer1.weight": w, "layer1.bias": np.zeros(5, np.float32)}, Tiny())
    np.testing.assert_array_equal(conv.state["layer1.weight"], w.T)


def test_mismatched_checkpoint_is_a_clear_error(source_model, tmp_path: Path) -> None:
    src = tmp_path / "csra.pth"
    save_pth(to_torch_names(source_model, with_classifier=True), src)
    result = _run("--src", str(src), "--dst", str(tmp_path / "x.pdparams"), "--model", "resnet18", "--num_heads", "2", "--num_cls", "20")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "classifier.multi_head.0.head.weight: checkpoint [4, 512, 1, 1] vs model [20, 512, 1, 1]" in result.stderr
    assert not (tmp_path / "x.pdparams").exists()
    result = _run("--src", str(src), "--dst", str(tmp_path / "x.pdparams"), "--model", "resnet50", "--num_heads", "2", "--num_cls", "4")
    assert result.returncode != 0 and "does not fit" in result.stderr and "Traceback" not in result.stderr


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_malicious_checkpoint_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    src = tmp_path / "evil.pth"
    with zipfile.ZipFile(src, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"conv1.weight": _Evil(marker)}, protocol=2))
        zf.writestr("archive/version", "3\n")
    result = _run("--src", str(src), "--dst", str(tmp_path / "x.pdparams"), *FLAGS)
    assert result.returncode != 0
    assert "system" in result.stderr and "Traceback" not in result.stderr
    assert not marker.exists()


def test_legacy_pickle_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    src = tmp_path / "legacy.pth"
    src.write_bytes(pickle.dumps(_Evil(marker), protocol=2))
    result = _run("--src", str(src), "--dst", str(tmp_path / "x.pdparams"), *FLAGS)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "legacy" in result.stderr.lower() or "zip" in result.stderr.lower()
    assert not marker.exists()
    buf = io.BytesIO()
    assert buf is not None
