"""Exponential moving average (EMA) of a model's weights (``train.py --ema DECAY``).

:class:`ModelEMA` keeps a *shadow* copy of every entry of ``model.state_dict()``: the
parameters and the buffers (BatchNorm running mean and variance). Floating-point entries
are shadowed in float32. After each optimizer step, ``update(model)`` moves every
floating-point shadow towards the model's current value:

    d_t    = min(decay, (1 + t) / (10 + t))      t = number of updates before this one
    shadow = d_t * shadow + (1 - d_t) * value

and copies the entries that are not floating point. The warm-up term (1 + t) / (10 + t)
is 0.1 at the first update, 0.5 at the ninth, 0.9 after 80 updates, 0.99 after 890 and
0.999 after 8990: early on, while the weights move fast, the average follows them instead
of keeping the random or pretrained initial weights for thousands of steps. ``t`` is
part of the state (``updates``), so that a resumed run continues the same sequence.

The update is computed as ``shadow += (1 - d_t) * (value - shadow)`` with one in-place
``lerp_`` per tensor under ``paddle.no_grad``: the same average, no copy to NumPy, and an
entry that did not change (a frozen parameter, BatchNorm statistics under ``--freeze_bn``)
keeps its value bit for bit. The shadows are stored flat (1-D) and the model's tensors are
read through flat views: Paddle's CPU ``lerp`` is about 8x slower on 4-D convolution
kernels than on the same numbers in 1-D.

``with ema.applied_to(model): ...`` evaluates (or saves) the model with the EMA weights
and puts its own weights back afterwards, exactly, even when the block raises.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Mapping

import numpy as np
import paddle

__all__ = ["ModelEMA", "ema_decay_at"]


def ema_decay_at(decay: float, updates: int) -> float:
    """The decay d_t used by update number ``updates + 1``: ``min(decay, (1 + t) / (10 + t))``.

    Args:
        decay: the configured decay, in (0, 1).
        updates: t, the number of updates done before this one (>= 0).
    Returns:
        d_t, a float in (0, decay].
    """
    return min(decay, (1.0 + updates) / (10.0 + updates))


def _is_float(tensor: paddle.Tensor) -> bool:
    return tensor.dtype in (paddle.float16, paddle.bfloat16, paddle.float32, paddle.float64)


class ModelEMA:
    """Exponential moving average of all parameters and buffers of a model.

    Args:
        model: the trained model (unwrapped, not its ``paddle.DataParallel``); the shadows
            start as copies of its current weights.
        decay: the EMA decay, 0 < decay < 1 (e.g. 0.999 for runs of many thousand steps).
    Raises:
        ValueError: ``decay`` outside (0, 1).

    Attributes:
        decay: as given.
        updates: number of ``update`` calls so far (t of the warm-up).
    """

    def __init__(self, model: paddle.nn.Layer, decay: float) -> None:
        decay = float(decay)
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self._shapes: dict[str, list[int]] = {}
        self._stored: dict[str, paddle.Tensor] = {}  # floating point: float32 [numel]; others: a copy in their shape
        with paddle.no_grad():
            for name, value in model.state_dict().items():
                self._shapes[name] = list(value.shape)
                value = value.detach()
                # paddle.assign(x) makes a tensor of its own (reshape and a no-op astype would give views)
                flat = value.reshape([-1]).astype("float32") if _is_float(value) else value
                self._stored[name] = paddle.assign(flat)
        self._floats = frozenset(name for name, value in model.state_dict().items() if _is_float(value))

    @property
    def shadow(self) -> dict[str, paddle.Tensor]:
        """``{state-dict key: EMA tensor}``: the keys and shapes of ``model.state_dict()``, float32
        for floating-point entries, the entry's own dtype otherwise. Views of the EMA's own
        storage: read them (save, load into a model), do not modify them."""
        return {name: stored.reshape(self._shapes[name]) if name in self._floats else stored
                for name, stored in self._stored.items()}

    def _entries(self, model: paddle.nn.Layer) -> dict[str, paddle.Tensor]:
        """``model.state_dict()``, checked to have the shadows' keys (the tensors themselves, not copies)."""
        entries = model.state_dict()
        if entries.keys() != self._stored.keys():
            missing = sorted(self._stored.keys() - entries.keys())[:3]
            extra = sorted(entries.keys() - self._stored.keys())[:3]
            raise ValueError(f"the model does not match the EMA's weights (missing {missing}, unexpected {extra})")
        return entries

    @paddle.no_grad()
    def update(self, model: paddle.nn.Layer) -> None:
        """Fold the model's current weights into the average (call after each optimizer step).

        Args:
            model: the same model the EMA was built from (its parameters and buffers are read,
                not changed).
        Returns:
            None; ``shadow`` is updated in place and ``updates`` grows by one.
        """
        entries = self._entries(model)
        weight = paddle.full([], 1.0 - ema_decay_at(self.decay, self.updates), dtype="float32")
        for name, stored in self._stored.items():
            value = entries[name]
            if name in self._floats:
                flat = value.reshape([-1])
                stored.lerp_(flat if flat.dtype == paddle.float32 else flat.astype("float32"), weight)
            else:
                paddle.assign(value, output=stored)
        self.updates += 1

    @contextmanager
    def applied_to(self, model: paddle.nn.Layer) -> Iterator[paddle.nn.Layer]:
        """Give ``model`` the EMA weights inside the ``with`` block, then its own weights back.

        The model's own tensors are overwritten in place (an optimizer keeps referring to
        them) and restored from exact copies on exit, whatever happens inside the block.

        Args:
            model: the model the EMA was built from.
        Yields:
            ``model``, holding the EMA weights (cast to each entry's dtype).
        """
        entries = self._entries(model)
        shadows = self.shadow
        with paddle.no_grad():
            saved = {name: paddle.assign(value.detach()) for name, value in entries.items()}
            try:
                for name, value in entries.items():
                    shadow = shadows[name]
                    paddle.assign(shadow if shadow.dtype == value.dtype else shadow.astype(value.dtype), output=value)
            except BaseException:
                self._restore(entries, saved)
                raise
        try:
            yield model
        finally:
            self._restore(entries, saved)

    @staticmethod
    @paddle.no_grad()
    def _restore(entries: Mapping[str, paddle.Tensor], saved: Mapping[str, paddle.Tensor]) -> None:
        for name, value in entries.items():
            paddle.assign(saved[name], output=value)

    def state_dict(self) -> dict[str, Any]:
        """The EMA's state: ``{"decay": float, "updates": int, "shadow": {key: tensor}}``.

        The shadow tensors are views of the EMA's own storage (see ``shadow``): save them, do
        not modify them. ``shadow`` has the keys of ``model.state_dict()``, so it loads like the
        model's weights.
        """
        return {"decay": self.decay, "updates": self.updates, "shadow": dict(self.shadow)}

    @paddle.no_grad()
    def set_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a ``state_dict()`` exactly: the shadow values and the update count.

        Args:
            state: ``{"updates": int, "shadow": {key: tensor or array}}`` with the same keys and
                shapes as this EMA's shadow (``"decay"`` is not restored: it is a setting).
        Raises:
            ValueError: keys or shapes differ, or ``updates`` is not an integer >= 0.
        """
        shadow = state["shadow"]
        updates = state["updates"]
        if isinstance(updates, (bool, float)) or int(updates) != updates or int(updates) < 0:
            raise ValueError(f"EMA update count must be an integer >= 0, got {updates!r}")
        if set(shadow) != set(self._stored):
            missing = sorted(set(self._stored) - set(shadow))[:3]
            extra = sorted(set(shadow) - set(self._stored))[:3]
            raise ValueError(f"EMA state does not match the model (missing {missing}, unexpected {extra})")
        values = {}
        for name, stored in self._stored.items():
            value = shadow[name]
            value = paddle.to_tensor(value) if isinstance(value, np.ndarray) else value
            if list(value.shape) != self._shapes[name]:
                raise ValueError(f"EMA state {name} has shape {list(value.shape)}, the model's is {self._shapes[name]}")
            if name in self._floats:
                value = value.reshape([-1])
            values[name] = value if value.dtype == stored.dtype else value.astype(stored.dtype)
        for name, value in values.items():  # only after every entry was checked: all or nothing
            paddle.assign(value, output=self._stored[name])
        self.updates = int(updates)
