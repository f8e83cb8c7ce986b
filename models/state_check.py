"""Compare a checkpoint's tensors with a model's parameters, and explain mismatches."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np


def shape_of(value: Any) -> tuple[int, ...]:
    """Shape of a numpy array or paddle Tensor as a tuple of ints."""
    return tuple(int(s) for s in value.shape)


@dataclass
class StateDiff:
    """Differences between a checkpoint (``source``) and a model's state dict.

    missing: model keys absent from the checkpoint; unexpected: checkpoint keys the model
    does not have; mismatched: (key, checkpoint shape, model shape).
    """

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    def describe(self, limit: int = 5, ignore_missing: tuple[str, ...] = ()) -> str:
        """One-paragraph summary naming the first ``limit`` bad keys of each kind."""
        parts = []
        if self.mismatched:
            items = "; ".join(
                f"{k}: checkpoint {list(a)} vs model {list(b)}" for k, a, b in self.mismatched[:limit]
            )
            parts.append(f"{len(self.mismatched)} shape mismatch(es) (first: {items})")
        if self.unexpected:
            parts.append(
                f"{len(self.unexpected)} key(s) the model does not have (first: {', '.join(self.unexpected[:limit])})"
            )
        missing = [k for k in self.missing if not k.startswith(ignore_missing)] if ignore_missing else self.missing
        if missing:
            parts.append(f"{len(missing)} model key(s) missing from the checkpoint (first: {', '.join(missing[:limit])})")
        return "; ".join(parts)


def diff_state(model_state: Mapping[str, Any], source: Mapping[str, Any]) -> StateDiff:
    """Compare names and shapes.

    Args:
        model_state: ``model.state_dict()`` (name -> Tensor).
        source: checkpoint (name -> array or Tensor).
    Returns:
        a ``StateDiff``; empty lists mean the checkpoint fits exactly.
    """
    diff = StateDiff()
    for key, value in source.items():
        if key not in model_state:
            diff.unexpected.append(key)
            continue
        want, got = shape_of(model_state[key]), shape_of(value)
        # Paddle stores 0-d and 1-element tensors interchangeably in some versions.
        if want != got and not (int(np.prod(want)) == int(np.prod(got)) == 1):
            diff.mismatched.append((key, got, want))
    diff.missing = [k for k in model_state if k not in source]
    return diff
