"""BatchNorm whose running statistics follow the reference (PyTorch) update exactly.

Paddle's ``BatchNorm2D`` updates its running variance with the *biased* batch variance
(sum of squares / n), PyTorch's ``BatchNorm2d`` with the *unbiased* one (/ (n - 1)), where
n = batch x height x width per channel. Both use the same momentum (Paddle 0.9 on the old
value = PyTorch 0.1 on the new one), the same running mean and the same normalisation of
the output (biased variance). :class:`BatchNorm2D` keeps Paddle's kernel for the output and
its gradient and then corrects the running variance in place:

    var_b    = (after - m * before) / (1 - m)            (what Paddle's update used)
    expected = m * before + (1 - m) * var_b * n / (n - 1)  (PyTorch's update)
             = after + (after - m * before) / (n - 1)

a few element-wise operations on [C]-sized vectors, no extra pass over the activations.
Parameter names (``_mean``, ``_variance``), evaluation mode and export are unchanged.
"""
from __future__ import annotations

import math

import paddle
import paddle.nn.functional as F
from paddle import nn


class BatchNorm2D(nn.BatchNorm2D):
    """``paddle.nn.BatchNorm2D`` (NCHW) with PyTorch's running-variance update in training.

    Input ``[B, C, H, W]`` -> output ``[B, C, H, W]``, as the parent class.
    """

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:  # noqa: D102 - see class doc
        if not self.training or self._use_global_stats:
            return super().forward(x)
        self._check_data_format(self._data_format)
        self._check_input_dim(x)
        # Paddle's kernel updates the running statistics in place and keeps them for the
        # backward pass, so it gets copies: the layer's own buffers are then set once.
        mean, variance = self._mean.detach().clone(), self._variance.detach().clone()
        out = F.batch_norm(x, mean, variance, weight=self.weight, bias=self.bias, training=True,
                           momentum=self._momentum, epsilon=self._epsilon, data_format=self._data_format)
        count = math.prod(int(d) for i, d in enumerate(x.shape) if i != 1)
        with paddle.no_grad():
            if count > 1:
                variance = variance + (variance - self._momentum * self._variance) / (count - 1)
            paddle.assign(mean, output=self._mean)
            paddle.assign(variance, output=self._variance)
        return out
