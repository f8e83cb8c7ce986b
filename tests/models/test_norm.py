"""BatchNorm running statistics follow the reference's (PyTorch's) update: unbiased batch variance."""
from __future__ import annotations

import numpy as np
import paddle
import pytest

from models import build_model
from models.norm import BatchNorm2D


def _reference_running_stats(batches: list[np.ndarray], momentum: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch's BatchNorm2d update, stated in NumPy (float64): mean and unbiased variance per channel."""
    channels = batches[0].shape[1]
    mean, var = np.zeros(channels), np.ones(channels)
    for x in batches:
        x = x.astype(np.float64)
        mean = (1 - momentum) * mean + momentum * x.mean(axis=(0, 2, 3))
        var = (1 - momentum) * var + momentum * x.var(axis=(0, 2, 3), ddof=1)
    return mean, var


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 4, 2, 2), (8, 2, 1, 1)])
def test_running_statistics_equal_the_reference_update(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    batches = [(rng.standard_normal(shape) * 3 + 1).astype(np.float32) for _ in range(3)]
    bn = BatchNorm2D(shape[1])
    bn.train()
    for x in batches:
        bn(paddle.to_tensor(x))
    mean, var = _reference_running_stats(batches)
    np.testing.assert_allclose(bn._mean.numpy(), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn._variance.numpy(), var, rtol=1e-5, atol=1e-6)
    # Paddle's own layer uses the biased variance: the two differ by the factor n/(n-1)
    plain = paddle.nn.BatchNorm2D(shape[1])
    for x in batches:
        plain(paddle.to_tensor(x))
    assert np.abs(plain._variance.numpy() - var).max() > 1e-3


def test_output_gradients_and_eval_equal_paddles_batchnorm() -> None:
    paddle.seed(0)
    ours, plain = BatchNorm2D(3), paddle.nn.BatchNorm2D(3)
    plain.set_state_dict(ours.state_dict())
    x = paddle.randn([4, 3, 5, 5]) * 2 + 0.5
    grads = []
    for layer in (ours, plain):
        xi = x.detach().clone()
        xi.stop_gradient = False
        out = layer(xi)
        (out * paddle.arange(out.size, dtype="float32").reshape(out.shape)).sum().backward()  # two steps: the
        out = layer(xi)  # second one backpropagates through updated running statistics
        grads.append((out.numpy(), xi.grad.numpy(), layer.weight.grad.numpy()))
    for a, b in zip(*grads):
        np.testing.assert_array_equal(a, b)
    ours.eval(), plain.eval()
    plain.set_state_dict(ours.state_dict())
    np.testing.assert_array_equal(ours(x).numpy(), plain(x).numpy())


@pytest.mark.parametrize("name, attention", [("resnet18", None), ("resnet50", "ge"), ("resnet50", "at")])
def test_every_batchnorm_of_the_models_is_the_reference_one(name: str, attention: str | None) -> None:
    model = build_model(name, 4, attention=attention, img_size=64)
    norms = [layer for layer in model.sublayers() if isinstance(layer, paddle.nn.BatchNorm2D)]
    assert norms and all(isinstance(layer, BatchNorm2D) for layer in norms)
