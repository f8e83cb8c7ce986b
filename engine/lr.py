"""The reference learning-rate schedule: per-iteration linear warm-up, then step decay.

At global iteration ``k`` (0-based) of epoch ``e`` (0-based):
    k <  warmup_iters:  lr = base * k / warmup_iters              (the first step uses lr 0)
    otherwise:          lr = base * gamma ** (e // step_epochs)
This is what the reference's WarmUpLR + StepLR pair produces when the warm-up is not
longer than one decay step (its default 2 <= 4); ``warmup_epochs = 0`` disables warm-up
(the earlier Paddle port crashed on it).
"""
from __future__ import annotations

from paddle.optimizer.lr import LRScheduler


class WarmupStepDecay(LRScheduler):
    """Stepped once per iteration; ``last_epoch`` counts iterations (saved by ``state_dict``)."""

    def __init__(
        self,
        base_lr: float,
        iters_per_epoch: int,
        warmup_epochs: float = 2,
        step_epochs: int = 4,
        gamma: float = 0.1,
    ) -> None:
        if iters_per_epoch < 1:
            raise ValueError("iters_per_epoch must be >= 1")
        if warmup_epochs < 0 or step_epochs < 1:
            raise ValueError("warmup_epochs must be >= 0 and step_epochs >= 1")
        self.iters_per_epoch = iters_per_epoch
        self.warmup_iters = int(round(warmup_epochs * iters_per_epoch))
        self.step_epochs = step_epochs
        self.gamma = gamma
        super().__init__(learning_rate=base_lr, last_epoch=-1, verbose=False)

    def lr_at(self, iteration: int) -> float:
        """Learning rate used at global iteration ``iteration`` (0-based)."""
        if iteration < self.warmup_iters:
            return self.base_lr * iteration / self.warmup_iters
        epoch = iteration // self.iters_per_epoch
        return self.base_lr * self.gamma ** (epoch // self.step_epochs)

    def get_lr(self) -> float:
        return self.lr_at(max(self.last_epoch, 0))
