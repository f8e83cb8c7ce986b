"""Backbones and build_model: shapes, parameter names, registry and argument errors."""
from __future__ import annotations

import numpy as np
import paddle
import paddle.vision.models as pvm
import pytest

from models import MODELS, build_model
from utils.errors import UserError

DEPTHS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "resnet101": 2048, "resnet152": 2048}


def test_registry_lists_all_resnets() -> None:
    assert set(DEPTHS) <= set(MODELS.names())
    for name, width in DEPTHS.items():
        spec = MODELS.get(name)
        assert (spec.family, spec.preset, spec.feature_channels) == ("resnet", int(name[6:]), width)
        assert spec.block == ("basic" if width == 512 else "bottleneck")
        assert spec.weights["imagenet"].url.endswith(f"/{name}.pdparams") and len(spec.weights["imagenet"].md5) == 32


@pytest.mark.parametrize("name", list(DEPTHS))
def test_parameter_names_and_shapes_equal_paddle_vision(name: str) -> None:
    ours = build_model(name, num_classes=20).state_dict()
    ref = getattr(pvm, name)().state_dict()
    ours_backbone = {k: list(v.shape) for k, v in ours.items() if not k.startswith("classifier.")}
    ref_backbone = {k: list(v.shape) for k, v in ref.items() if not k.startswith("fc.")}
    assert list(ours_backbone) == list(ref_backbone)
    assert ours_backbone == ref_backbone


@pytest.mark.parametrize("name", list(DEPTHS))
def test_feature_shape_at_224_and_448(name: str) -> None:
    model = build_model(name, num_classes=5, num_heads=2, lam=0.2)
    model.eval()
    for size in (224, 448):
        with paddle.no_grad():
            x = paddle.rand([1, 3, size, size])
            feats = model.forward_features(x)
            logits = model.classifier(feats)
        assert list(feats.shape) == [1, DEPTHS[name], size // 32, size // 32]
        assert list(logits.shape) == [1, 5]


def test_imagenet_backbone_weights_give_paddle_vision_features() -> None:
    """Our trunk with paddle.vision's weights computes exactly paddle.vision's features."""
    paddle.seed(1)
    ref = pvm.resnet18()
    ref.eval()
    ours = build_model("resnet18", num_classes=3)
    ours.set_state_dict({k: v for k, v in ref.state_dict().items() if not k.startswith("fc.")})
    ours.eval()
    x = paddle.rand([2, 3, 64, 64])
    trunk = paddle.nn.Sequential(*list(ref.children())[:-2])  # drop avgpool + fc
    with paddle.no_grad():
        np.testing.assert_allclose(ours.forward_features(x).numpy(), trunk(x).numpy(), rtol=1e-5, atol=1e-6)


def test_batch_samples_are_independent_in_eval() -> None:
    model = build_model("resnet18", num_classes=4, num_heads=2)
    model.eval()
    x = paddle.rand([3, 3, 64, 64])
    with paddle.no_grad():
        full = model(x).numpy()
        single = np.concatenate([model(x[i : i + 1]).numpy() for i in range(3)])
    np.testing.assert_allclose(full, single, rtol=1e-4, atol=1e-5)


def test_config_is_recorded() -> None:
    model = build_model("ResNet50", num_classes=7, num_heads=4, lam=0.5)
    assert {k: model.config[k] for k in ("model", "num_classes", "num_heads", "lam", "attention")} == {
        "model": "resnet50", "num_classes": 7, "num_heads": 4, "lam": 0.5, "attention": None}


def test_unknown_model_lists_choices() -> None:
    with pytest.raises(UserError, match="resnet101"):
        build_model("resnet99", num_classes=3)


def test_attention_is_validated() -> None:
    with pytest.raises(UserError, match="unknown attention"):
        build_model("resnet18", num_classes=3, attention="nonsense")
    assert build_model("resnet18", num_classes=3, attention="none").config["attention"] is None


@pytest.mark.parametrize("kwargs", [{"num_heads": 3}, {"lam": 0}, {"num_classes": 0}])
def test_bad_arguments(kwargs: dict) -> None:
    args = {"num_classes": 3, **kwargs}
    with pytest.raises(UserError):
        build_model("resnet18", **args)
