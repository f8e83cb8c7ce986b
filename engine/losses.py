"""Training losses: a registry of name -> builder, the reference BCE and the Asymmetric Loss.

A loss is a callable ``(logits float32 [B, C], targets float32 [B, C]) -> float32 scalar``.
``build_loss(config)`` makes the one a ``TrainConfig`` asks for (``--loss``,
``--ignore_unknown``, ``--asl_*``); ``engine.trainer.train_step`` takes it as ``loss_fn``.

* ``bce`` (the default, the reference recipe): BCE-with-logits averaged over the B x C
  entries. Without ``ignore_unknown`` it is ``F.binary_cross_entropy_with_logits`` itself, so
  the default training step is unchanged to the bit.
* ``asl``: the Asymmetric Loss of Ridnik et al. (ICCV 2021), see :func:`asymmetric_loss`;
  summed over the batch, as published.

``ignore_unknown``: target values in ``UNKNOWN_VALUES`` (-1 and 99: labels a partially
labelled training split leaves unknown) add nothing to the loss and get zero gradient.
Other target values are the caller's business (``engine.trainer.check_binary_targets``
refuses them before training).

A new loss = a builder function decorated with :func:`register_loss` in this module: the
``--loss`` choices, its help and config.json checks read the registry. This module does not
import Paddle at import time (the loss functions do, when called), so ``--help`` and the
settings code can list the names without paying for Paddle.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from models.registry import Registry
from utils.errors import UserError

if TYPE_CHECKING:  # annotations only: see the module docstring
    import paddle

    from engine.config import TrainConfig

LossFn = Callable[["paddle.Tensor", "paddle.Tensor"], "paddle.Tensor"]

#: target values meaning "label unknown" with ``ignore_unknown`` (partial labels; WIDER's 99).
UNKNOWN_VALUES: tuple[float, ...] = (-1.0, 99.0)
#: the published ASL's floor of the probabilities inside the logarithms (not a flag).
ASL_EPS = 1e-8


@dataclass(frozen=True)
class LossSettings:
    """What a loss builder reads: the loss fields of a ``TrainConfig`` (their defaults live there).

    Attributes:
        name: the registered loss name (``--loss``).
        ignore_unknown: targets in ``UNKNOWN_VALUES`` contribute no loss and no gradient.
        asl_gamma_neg, asl_gamma_pos: ASL focusing exponents of negatives and positives, >= 0.
        asl_clip: ASL probability shift of negatives, in [0, 1) (0 = no shift).
    """

    name: str
    ignore_unknown: bool
    asl_gamma_neg: float
    asl_gamma_pos: float
    asl_clip: float

    @classmethod
    def from_config(cls, config: "TrainConfig") -> "LossSettings":
        """The loss settings of a training run's ``config``."""
        return cls(name=config.loss, ignore_unknown=config.ignore_unknown, asl_gamma_neg=config.asl_gamma_neg,
                   asl_gamma_pos=config.asl_gamma_pos, asl_clip=config.asl_clip)


LossBuilder = Callable[[LossSettings], LossFn]


@dataclass(frozen=True)
class LossSpec:
    """A registered loss.

    Attributes:
        name: the ``--loss`` value.
        summary: one line for ``--help`` and error messages.
        reduction: ``"mean"`` or ``"sum"`` over the batch. Under data parallel each process
            sees its share of the global batch and gradients are averaged over processes; a
            ``"sum"`` loss is therefore multiplied by the process count (see :func:`build_loss`).
        build: settings -> the loss callable.
    """

    name: str
    summary: str
    reduction: str
    build: LossBuilder


LOSSES: Registry[LossSpec] = Registry("loss")


def register_loss(name: str, summary: str, reduction: str) -> Callable[[LossBuilder], LossBuilder]:
    """Decorator registering a builder ``settings -> loss callable`` as loss ``name``.

    Args:
        name: the ``--loss`` value (lower case).
        summary: one line describing it (``--help``).
        reduction: ``"mean"`` or ``"sum"``: how the returned callable reduces the batch.
    Returns:
        the decorator; it returns the builder unchanged.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")

    def decorator(build: LossBuilder) -> LossBuilder:
        LOSSES.register(name)(LossSpec(name, summary, reduction, build))
        return build

    return decorator


def known_mask(targets: "paddle.Tensor") -> "paddle.Tensor":
    """Which targets are known labels.

    Args:
        targets: float32 [B, C].
    Returns:
        bool [B, C]: False where the target is one of ``UNKNOWN_VALUES``.
    """
    import paddle

    unknown = paddle.zeros(targets.shape, dtype="bool")
    for value in UNKNOWN_VALUES:
        unknown = unknown | (targets == value)
    return ~unknown


def bce_loss(logits: "paddle.Tensor", targets: "paddle.Tensor", ignore_unknown: bool = False) -> "paddle.Tensor":
    """BCE-with-logits averaged over the (known) entries.

    Args:
        logits: float32 [B, C].
        targets: float32 [B, C] of 0/1; with ``ignore_unknown`` also -1/99 (unknown).
        ignore_unknown: False: ``F.binary_cross_entropy_with_logits(logits, targets)``, the mean
            over all B x C entries (the reference). True: the sum over the known entries divided
            by their number (0 when no entry is known); unknown entries get zero gradient.
    Returns:
        float32 scalar tensor.
    """
    import paddle
    import paddle.nn.functional as F

    if not ignore_unknown:
        return F.binary_cross_entropy_with_logits(logits, targets)
    known = known_mask(targets)
    clean = paddle.where(known, targets, paddle.zeros_like(targets))  # unknown -> any valid label; masked below
    weight = known.astype(logits.dtype)
    per_entry = F.binary_cross_entropy_with_logits(logits, clean, reduction="none")
    return (per_entry * weight).sum() / paddle.clip(weight.sum(), min=1.0)


def asymmetric_loss(logits: "paddle.Tensor", targets: "paddle.Tensor", gamma_neg: float = 4.0, gamma_pos: float = 0.0,
                    clip: float = 0.05, eps: float = ASL_EPS, ignore_unknown: bool = False) -> "paddle.Tensor":
    """The Asymmetric Loss (Ridnik et al., ICCV 2021), summed over the batch.

    With ``p = sigmoid(logits)`` and targets ``y``:

    * negatives' probability is shifted: ``q = min(1 - p + clip, 1)`` when ``clip > 0``,
      else ``q = 1 - p`` (a negative with ``p <= clip`` then adds no loss and no gradient);
    * ``ce = y * log(max(p, eps)) + (1 - y) * log(max(q, eps))``;
    * focusing weight ``w = (1 - pt) ** g`` with ``pt = p * y + q * (1 - y)`` and
      ``g = gamma_pos * y + gamma_neg * (1 - y)``;
    * loss ``= -sum(w * ce)`` over the B x C (known) entries.

    The focusing weight ``w`` is computed without gradient (the published loss's default), so
    it is a constant for backpropagation: the gradient is ``-w * d ce / d logits``.

    Args:
        logits: float32 [B, C].
        targets: float32 [B, C] of 0/1; with ``ignore_unknown`` also -1/99 (unknown).
        gamma_neg, gamma_pos: focusing exponents of negatives and positives, >= 0.
        clip: probability shift of negatives, in [0, 1).
        eps: floor of the probabilities inside the logarithms.
        ignore_unknown: entries whose target is -1 or 99 add nothing and get zero gradient.
    Returns:
        float32 scalar tensor: the sum over the batch (not a mean).
    """
    import paddle
    import paddle.nn.functional as F

    known = known_mask(targets) if ignore_unknown else None
    y = paddle.where(known, targets, paddle.zeros_like(targets)) if known is not None else targets
    p = F.sigmoid(logits)
    q = 1.0 - p
    if clip > 0:
        q = paddle.clip(q + clip, max=1.0)
    ce = y * paddle.log(paddle.clip(p, min=eps)) + (1.0 - y) * paddle.log(paddle.clip(q, min=eps))
    if gamma_neg > 0 or gamma_pos > 0:
        with paddle.no_grad():
            pt = p * y + q * (1.0 - y)
            w = paddle.pow(1.0 - pt, gamma_pos * y + gamma_neg * (1.0 - y))
        ce = ce * w
    if known is not None:
        ce = ce * known.astype(ce.dtype)
    return -ce.sum()


@register_loss("bce", "BCE-with-logits, mean over B x C (the reference recipe)", reduction="mean")
def build_bce(settings: LossSettings) -> LossFn:
    """The reference loss: :func:`bce_loss` (mean; over the known entries with ``ignore_unknown``)."""
    ignore_unknown = bool(settings.ignore_unknown)

    def bce(logits: "paddle.Tensor", targets: "paddle.Tensor") -> "paddle.Tensor":
        return bce_loss(logits, targets, ignore_unknown)

    return bce


@register_loss("asl", "Asymmetric Loss (Ridnik et al. 2021), summed over the batch: lower --lr", reduction="sum")
def build_asl(settings: LossSettings) -> LossFn:
    """:func:`asymmetric_loss` with the settings' exponents and shift.

    Raises:
        UserError: a negative or non-finite exponent, a shift outside [0, 1).
    """
    for flag, value in (("--asl_gamma_neg", settings.asl_gamma_neg), ("--asl_gamma_pos", settings.asl_gamma_pos)):
        if not 0 <= value < math.inf:
            raise UserError(f"{flag} must be a finite number >= 0, got {value}")
    if not 0 <= settings.asl_clip < 1:
        raise UserError(f"--asl_clip must be in [0, 1), got {settings.asl_clip}")
    gamma_neg, gamma_pos, clip = float(settings.asl_gamma_neg), float(settings.asl_gamma_pos), float(settings.asl_clip)
    ignore_unknown = bool(settings.ignore_unknown)

    def asl(logits: "paddle.Tensor", targets: "paddle.Tensor") -> "paddle.Tensor":
        return asymmetric_loss(logits, targets, gamma_neg, gamma_pos, clip, ASL_EPS, ignore_unknown)

    return asl


def build_loss(settings: "LossSettings | TrainConfig", world_size: int = 1) -> LossFn:
    """The loss callable of a run.

    Args:
        settings: ``LossSettings``, or a ``TrainConfig`` (its loss fields are read).
        world_size: data-parallel processes. A ``"sum"`` loss is multiplied by it: gradients
            are averaged over the processes, each summing over its share of the global batch,
            so the update (and the logged mean over processes) is then the sum over the
            global batch, as with one process.
    Returns:
        ``(logits float32 [B, C], targets float32 [B, C]) -> float32 scalar``.
    Raises:
        UserError: an unknown loss name (the known ones listed) or bad loss settings.
    """
    if not isinstance(settings, LossSettings):
        settings = LossSettings.from_config(settings)
    spec = LOSSES.get(settings.name)
    loss_fn = spec.build(settings)
    if spec.reduction == "sum" and world_size > 1:
        scale = float(world_size)

        def scaled(logits: "paddle.Tensor", targets: "paddle.Tensor") -> "paddle.Tensor":
            return loss_fn(logits, targets) * scale

        return scaled
    return loss_fn
