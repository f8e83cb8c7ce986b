"""The reference learning-rate schedule (engine.lr.WarmupStepDecay)."""
from __future__ import annotations

import pytest

from engine.lr import WarmupStepDecay


def _lrs(scheduler: WarmupStepDecay, steps: int) -> list[float]:
    """The learning rate of each of the first ``steps`` iterations, stepping as training does."""
    seen = []
    for _ in range(steps):
        seen.append(scheduler.get_lr())
        scheduler.step()
    return seen


def test_linear_warmup_then_step_decay() -> None:
    ipe = 5
    lrs = _lrs(WarmupStepDecay(0.01, ipe, warmup_epochs=2, step_epochs=4), 12 * ipe)
    assert lrs[:10] == pytest.approx([0.01 * k / 10 for k in range(10)])  # first step uses lr 0
    assert lrs[10:20] == pytest.approx([0.01] * 10)                        # epochs 2, 3
    assert lrs[20:40] == pytest.approx([0.001] * 20)                       # epochs 4..7
    assert lrs[40:60] == pytest.approx([0.0001] * 20)                      # epochs 8..11


def test_no_warmup_and_fractional_warmup() -> None:
    assert _lrs(WarmupStepDecay(0.1, 8, warmup_epochs=0, step_epochs=1), 10) == pytest.approx([0.1] * 8 + [0.01] * 2)
    quarter = _lrs(WarmupStepDecay(0.1, 8, warmup_epochs=0.25, step_epochs=4), 4)  # 2 warm-up iterations
    assert quarter == pytest.approx([0.0, 0.05, 0.1, 0.1])


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        WarmupStepDecay(0.1, 0)
    with pytest.raises(ValueError):
        WarmupStepDecay(0.1, 10, warmup_epochs=-1)
    with pytest.raises(ValueError):
        WarmupStepDecay(0.1, 10, step_epochs=0)
