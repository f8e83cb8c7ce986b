"""Multi-label classification metrics (vectorised NumPy).

Everything here works on two ``[N, C]`` matrices: ``scores`` (sigmoid probabilities, one
row per image, one column per class) and ``targets`` (the label encoding of the dataset,
see :class:`LabelPolicy`). No per-class Python loop runs in the hot path: AP for all classes
comes from one sort of the score matrix, the thresholded counts from boolean reductions.

Conventions, shared with the CSRA reference evaluator:

* **Positive** means target value ``1``. Which other values are negatives and which are
  ignored depends on the dataset's :class:`LabelPolicy`.
* **AP** is the non-interpolated average precision: per class, drop the ignored entries,
  sort by score (descending), and average the precision at the rank of every positive.
* **Ties** in the score are broken by image order: among equal scores the image that comes
  first in the input is ranked first (a stable descending sort). The reference calls
  NumPy's default ``argsort`` on the negated scores, whose order among equal values is
  unspecified, so on tied data the two may differ slightly; on tie-free data they are
  identical, and equal to ``sklearn.metrics.average_precision_score``.
* **Classes without positives** have AP ``NaN`` in the per-class output and are left out
  of the mean (and of the per-class means CP, CR and the mean per-class F1); how many
  were left out is reported. ``no_positive="zero"`` counts them as 0 instead (what the
  Paddle port of the reference does).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from evaluation.thresholds import best_f1_from_masks
from utils.errors import UserError
from utils.logger import get_logger

log = get_logger("metrics")

__all__ = [
    "EvalResult",
    "LabelEncodingError",
    "LabelPolicy",
    "POLICIES",
    "ThresholdMetrics",
    "average_precision",
    "evaluate",
    "format_class_table",
    "format_reference_lines",
    "get_policy",
    "mean_average_precision",
    "thresholded_metrics",
    "topk_mask",
]

NO_POSITIVE_CHOICES = ("exclude", "zero")


class LabelEncodingError(UserError, ValueError):
    """Targets hold values the chosen label policy does not allow (e.g. -1 with "binary")."""


@dataclass(frozen=True)
class LabelPolicy:
    """How a dataset encodes its targets.

    Attributes:
        name: policy name, e.g. ``"voc07"``.
        allowed: every target value the encoding may contain (others raise
            :class:`LabelEncodingError`).
        ignore_ap: values dropped from the AP computation of their class.
        ignore_thresholded: values dropped from the thresholded metrics (tp/pred/gt).
        Every allowed value that is not ``1`` and not ignored counts as a negative.
    """

    name: str
    allowed: tuple[float, ...]
    ignore_ap: tuple[float, ...] = ()
    ignore_thresholded: tuple[float, ...] = ()


_BINARY = LabelPolicy("binary", allowed=(0.0, 1.0))

POLICIES: dict[str, LabelPolicy] = {
    "binary": _BINARY,
    "coco": LabelPolicy("coco", allowed=(0.0, 1.0)),
    "custom": LabelPolicy("custom", allowed=(0.0, 1.0)),
    # VOC 2007 test: 1 positive, -1 negative, 0 difficult (ignored everywhere).
    "voc07": LabelPolicy("voc07", allowed=(-1.0, 0.0, 1.0), ignore_ap=(0.0,), ignore_thresholded=(0.0,)),
    # WIDER Attribute test: 99 = unspecified, ignored for AP, negative for thresholded metrics.
    "wider": LabelPolicy("wider", allowed=(0.0, 1.0, 99.0), ignore_ap=(99.0,)),
}


def get_policy(policy: str | LabelPolicy) -> LabelPolicy:
    """Resolve a policy name (``binary``, ``coco``, ``custom``, ``voc07``, ``wider``).

    Args:
        policy: a name from :data:`POLICIES` or a ready :class:`LabelPolicy`.
    Returns:
        the :class:`LabelPolicy`.
    Raises:
        ValueError: unknown name.
    """
    if isinstance(policy, LabelPolicy):
        return policy
    try:
        return POLICIES[policy.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"unknown label policy {policy!r}; choose one of {sorted(POLICIES)}") from None


# --------------------------------------------------------------------------- helpers


def _as_scores(scores: Any) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"scores must be a 2-D [N, C] array, got shape {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values")
    return s


def _as_targets(targets: Any, shape: tuple[int, ...]) -> np.ndarray:
    t = np.asarray(targets, dtype=np.float64)
    if t.shape != shape:
        raise ValueError(f"targets shape {t.shape} differs from scores shape {shape}")
    return t


def _in_values(t: np.ndarray, values: Iterable[float]) -> np.ndarray:
    """Boolean mask of entries of ``t`` equal to any of ``values`` (same shape as ``t``)."""
    mask = np.zeros(t.shape, dtype=bool)
    for v in values:
        mask |= t == v
    return mask


def _check_encoding(t: np.ndarray, policy: LabelPolicy) -> None:
    """Raise :class:`LabelEncodingError` when ``t`` holds values outside ``policy.allowed``."""
    bad = ~_in_values(t, policy.allowed)
    if not bad.any():
        return
    found = sorted({float(v) for v in np.unique(t[bad])[:10]})
    shown = ", ".join(f"{v:g}" for v in found)
    hint = ""
    if policy.name in ("binary", "coco", "custom"):
        if -1.0 in found:
            hint = " Targets with -1 (negative) and 0 (difficult) are the VOC 2007 test encoding: use --dataset voc07."
        elif 99.0 in found:
            hint = " Targets with 99 (unspecified) are the WIDER Attribute test encoding: use --dataset wider."
    raise LabelEncodingError(
        f"targets contain value(s) {shown} not allowed by label policy '{policy.name}' "
        f"(allowed: {', '.join(f'{v:g}' for v in policy.allowed)}).{hint}"
    )


def _check_no_positive(no_positive: str) -> None:
    if no_positive not in NO_POSITIVE_CHOICES:
        raise ValueError(f"no_positive must be one of {NO_POSITIVE_CHOICES}, got {no_positive!r}")


def _f1(p: float, r: float) -> float:
    """Harmonic mean of two numbers; 0 when both are 0, NaN if either is NaN."""
    if math.isnan(p) or math.isnan(r):
        return float("nan")
    return 0.0 if p + r == 0 else 2.0 * p * r / (p + r)


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")


def _as_threshold(threshold: Any, n_classes: int) -> float | np.ndarray:
    """A scalar threshold as a float, or per-class thresholds as a ``[C]`` float64 array.

    Args:
        threshold: a number, or ``[C]`` numbers (one per class, broadcast over the rows).
        n_classes: C.
    Returns:
        ``float`` or a ``[C]`` float64 copy.
    Raises:
        ValueError: an array of another shape than ``[C]``, or with NaN/infinite values.
    """
    if np.ndim(threshold) == 0:
        return float(threshold)
    thr = np.array(threshold, dtype=np.float64)
    if thr.shape != (n_classes,):
        raise ValueError(f"per-class thresholds must have shape ({n_classes},), got {thr.shape}")
    if not np.isfinite(thr).all():
        raise ValueError("per-class thresholds contain NaN or infinite values")
    return thr


def _json_threshold(threshold: float | np.ndarray) -> float | list[float]:
    return threshold.tolist() if isinstance(threshold, np.ndarray) else threshold


# --------------------------------------------------------------------------- AP


def _ranked_ap(scores: np.ndarray, valid: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class non-interpolated AP.

    Args:
        scores: ``[N, C]`` float64, finite.
        valid: ``[N, C]`` bool, False for ignored entries.
        pos: ``[N, C]`` bool, True for positives (subset of ``valid``).
    Returns:
        ``(ap [C] float64 with NaN where a class has no positive, npos [C] int64)``.
    """
    n, c = scores.shape
    # Work class-major ([C, N], contiguous) so every class is one contiguous row.
    # Ignored entries get key +inf: they sort after every real score and, not being
    # positive, never contribute; ranks of the kept entries are therefore 1..n_kept.
    key = np.ascontiguousarray(np.where(valid, -scores, np.inf).T)
    order = np.argsort(key, axis=1)  # fast, but the order among equal keys is arbitrary
    # Make ties deterministic (earlier image first) without a slow stable float sort:
    # number the runs of equal keys along each sorted row (group id), then sort the
    # unique integers group_id * N + image_index. They are already ordered by group, so
    # only the (usually short) tied runs move, which timsort handles in near-linear time.
    sorted_key = np.take_along_axis(key, order, axis=1)
    new_group = np.empty(sorted_key.shape, dtype=bool)
    new_group[:, :1] = True
    np.not_equal(sorted_key[:, 1:], sorted_key[:, :-1], out=new_group[:, 1:])
    composite = np.cumsum(new_group, axis=1, dtype=np.int64)
    composite *= n
    composite += order
    composite.sort(axis=1, kind="stable")
    order = composite % n if n else order
    pos_sorted = np.take_along_axis(np.ascontiguousarray(pos.T), order, axis=1)
    cls, rank0 = np.nonzero(pos_sorted)  # row-major: grouped by class, ranks ascending
    npos = np.bincount(cls, minlength=c).astype(np.int64)
    starts = np.concatenate(([0], np.cumsum(npos)[:-1]))
    hits = np.arange(cls.size) - starts[cls] + 1  # positives within the top r (1-based)
    precision_at_hit = hits / (rank0 + 1.0)
    total = np.bincount(cls, weights=precision_at_hit, minlength=c)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = np.where(npos > 0, total / np.maximum(npos, 1), np.nan)
    return ap, npos


def label_masks(scores: Any, targets: Any, policy: str | LabelPolicy = "binary",
                ignore_values: Sequence[float] | None = None, *, for_ap: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Checked scores and the masks of the entries that count and of the positives.

    Args:
        scores, targets: ``[N, C]``; the targets in the policy's encoding (1 = positive).
        policy: decides the ignored values (its ``ignore_ap`` with ``for_ap``, else its
            ``ignore_thresholded``) and validates the encoding.
        ignore_values: overrides the policy: these values are ignored, nothing is validated.
    Returns:
        ``(scores [N, C] float64, valid [N, C] bool, positive [N, C] bool)``.
    Raises:
        LabelEncodingError, ValueError: as :func:`average_precision`.
    """
    s = _as_scores(scores)
    t = _as_targets(targets, s.shape)
    if ignore_values is None:
        pol = get_policy(policy)
        _check_encoding(t, pol)
        ignored = tuple(pol.ignore_ap if for_ap else pol.ignore_thresholded)
    else:
        ignored = tuple(float(v) for v in ignore_values)
    valid = ~_in_values(t, ignored)
    return s, valid, (t == 1) & valid


def average_precision(
    scores: Any,
    targets: Any,
    policy: str | LabelPolicy = "binary",
    *,
    ignore_values: Sequence[float] | None = None,
) -> np.ndarray:
    """Non-interpolated average precision of every class.

    Per class: drop the ignored entries, sort the rest by score descending (ties: earlier
    image first), and return ``(1/npos) * sum over positives at rank r of (positives in
    the top r) / r``.

    Args:
        scores: ``[N, C]`` float scores (finite).
        targets: ``[N, C]`` labels in the policy's encoding (1 = positive).
        policy: label policy name or :class:`LabelPolicy` (validates the encoding and
            decides which values are ignored).
        ignore_values: if given, overrides the policy: these values are ignored, ``1`` is
            positive, every other value is negative, and the encoding is not validated.
    Returns:
        ``ap``: ``[C]`` float64, NaN for classes with no positive.
    Raises:
        LabelEncodingError: targets outside the policy's encoding.
        ValueError: shapes differ, or scores are not finite.
    """
    s, valid, pos = label_masks(scores, targets, policy, ignore_values, for_ap=True)
    ap, _ = _ranked_ap(s, valid, pos)
    return ap


def mean_average_precision(ap: np.ndarray, no_positive: str = "exclude") -> tuple[float, int]:
    """Mean of per-class APs under the no-positive policy.

    Args:
        ap: ``[C]`` per-class AP, NaN for classes without positives.
        no_positive: ``"exclude"`` leaves NaN classes out of the mean; ``"zero"`` counts
            them as 0.
    Returns:
        ``(mAP as a fraction (NaN if no class has positives), number of NaN classes)``.
    """
    _check_no_positive(no_positive)
    ap = np.asarray(ap, dtype=np.float64)
    missing = np.isnan(ap)
    n_missing = int(missing.sum())
    if no_positive == "zero":
        return _mean(np.where(missing, 0.0, ap)), n_missing
    return _mean(ap[~missing]), n_missing


# --------------------------------------------------------------------------- thresholded


@dataclass
class ThresholdMetrics:
    """Precision/recall/F1 at a score threshold.

    Attributes:
        tp, pred, gt: ``[C]`` int64 per-class counts: true positives, predicted positives
            (raw, may be 0), ground-truth positives (ignored entries excluded).
        op, or_, of1: overall (micro) precision, recall, F1. OP divides by the sum of
            ``max(pred, 1)`` as the reference does.
        cp, cr, cf1: per-class precision and recall averaged over classes (``tp /
            max(pred, 1)``, ``tp / gt``); CF1 is the harmonic mean of CP and CR
            (the CSRA reference's definition).
        mean_class_f1: mean over classes of per-class F1 ``2 tp / (pred + gt)``
            (mmpretrain's "CF1"; not comparable with ``cf1``).
        n_classes_without_positives: classes with ``gt == 0``; left out of CP, CR and
            ``mean_class_f1`` under ``no_positive="exclude"``.
        threshold: score threshold (score >= threshold is a positive prediction): a float,
            or a ``[C]`` float64 array of per-class thresholds.
        topk: None, or k when only each image's k best scores could be predictions.
    """

    tp: np.ndarray
    pred: np.ndarray
    gt: np.ndarray
    op: float
    or_: float
    of1: float
    cp: float
    cr: float
    cf1: float
    mean_class_f1: float
    n_classes_without_positives: int
    threshold: float | np.ndarray
    topk: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN becomes None, arrays become lists)."""
        return {
            "threshold": _json_threshold(self.threshold),
            "topk": self.topk,
            "OP": _json_float(self.op),
            "OR": _json_float(self.or_),
            "OF1": _json_float(self.of1),
            "CP": _json_float(self.cp),
            "CR": _json_float(self.cr),
            "CF1": _json_float(self.cf1),
            "mean_class_f1": _json_float(self.mean_class_f1),
            "n_classes_without_positives": self.n_classes_without_positives,
            "tp": self.tp.tolist(),
            "pred": self.pred.tolist(),
            "gt": self.gt.tolist(),
        }


def topk_mask(scores: Any, k: int) -> np.ndarray:
    """Mark each row's ``k`` highest scores (ties: lower class index first).

    Args:
        scores: ``[N, C]`` float scores.
        k: how many entries to keep per row (all of them if ``k >= C``).
    Returns:
        ``[N, C]`` bool mask with exactly ``min(k, C)`` True per row.
    """
    s = np.asarray(scores, dtype=np.float64)
    n, c = s.shape
    if k <= 0:
        return np.zeros(s.shape, dtype=bool)
    if k >= c:
        return np.ones(s.shape, dtype=bool)
    # k-th largest value per row, then everything strictly above it plus the first
    # (k - #above) entries equal to it in column order.
    kth = -np.partition(-s, k - 1, axis=1)[:, k - 1 : k]
    above = s > kth
    equal = s == kth
    room = k - above.sum(axis=1, keepdims=True)
    return above | (equal & (np.cumsum(equal, axis=1) <= room))


def _threshold_from_masks(
    predicted: np.ndarray,
    valid: np.ndarray,
    positive: np.ndarray,
    threshold: float | np.ndarray,
    topk: int | None,
    no_positive: str,
) -> ThresholdMetrics:
    tp = np.count_nonzero(predicted & positive, axis=0).astype(np.int64)
    pred = np.count_nonzero(predicted & valid, axis=0).astype(np.int64)
    gt = np.count_nonzero(positive, axis=0).astype(np.int64)
    pred_safe = np.maximum(pred, 1)  # the reference's guard against 0/0
    has_gt = gt > 0
    n_without = int((~has_gt).sum())

    op = float(tp.sum() / pred_safe.sum()) if pred_safe.size else float("nan")
    or_ = float(tp.sum() / gt.sum()) if gt.sum() > 0 else float("nan")

    precision_c = tp / pred_safe
    recall_c = np.where(has_gt, tp / np.maximum(gt, 1), 0.0)
    denom = pred + gt
    f1_c = np.where(denom > 0, 2.0 * tp / np.maximum(denom, 1), 0.0)
    keep = has_gt if no_positive == "exclude" else np.ones_like(has_gt)
    cp = _mean(precision_c[keep])
    cr = _mean(recall_c[keep])
    return ThresholdMetrics(
        tp=tp,
        pred=pred,
        gt=gt,
        op=op,
        or_=or_,
        of1=_f1(op, or_),
        cp=cp,
        cr=cr,
        cf1=_f1(cp, cr),
        mean_class_f1=_mean(f1_c[keep]),
        n_classes_without_positives=n_without,
        threshold=threshold,
        topk=topk,
    )


def thresholded_metrics(
    scores: Any,
    targets: Any,
    policy: str | LabelPolicy = "binary",
    threshold: float | Sequence[float] | np.ndarray = 0.5,
    topk: int | None = None,
    no_positive: str = "exclude",
) -> ThresholdMetrics:
    """CP, CR, CF1, OP, OR, OF1 and mean per-class F1 at ``score >= threshold``.

    Entries whose target is in ``policy.ignore_thresholded`` (VOC difficult) count nowhere;
    WIDER's 99 counts as a negative here. With ``topk=k`` only each image's k best scores
    can be positive predictions (the reference zeroes the others; identical for any
    threshold > 0).

    Args:
        scores: ``[N, C]`` float scores.
        targets: ``[N, C]`` labels in the policy's encoding.
        policy: label policy name or :class:`LabelPolicy`.
        threshold: decision threshold on the score: one number for every class, or ``[C]``
            per-class thresholds (class ``c`` is predicted where ``scores[:, c] >= threshold[c]``).
        topk: None, or how many best scores per image may be predicted.
        no_positive: ``"exclude"`` leaves classes with ``gt == 0`` out of CP, CR and the
            mean per-class F1; ``"zero"`` keeps them (recall and F1 count as 0).
    Returns:
        a :class:`ThresholdMetrics`.
    Raises:
        LabelEncodingError, ValueError: as :func:`average_precision`; also per-class
            thresholds of the wrong shape or not finite.
    """
    _check_no_positive(no_positive)
    s, valid, positive = label_masks(scores, targets, policy, for_ap=False)
    threshold = _as_threshold(threshold, s.shape[1])
    predicted = s >= threshold
    if topk is not None:
        predicted &= topk_mask(s, topk)
    return _threshold_from_masks(predicted, valid, positive, threshold, topk, no_positive)


# --------------------------------------------------------------------------- evaluate


def _json_float(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


@dataclass
class EvalResult:
    """Everything :func:`evaluate` computes.

    Attributes:
        map: mean AP as a fraction over the classes that have positives (see
            ``no_positive``); NaN if none has.
        ap: ``[C]`` per-class AP (fractions), NaN for classes without positives.
        n_positives: ``[C]`` positives per class (ignored entries excluded).
        cp, cr, cf1, op, or_, of1, mean_class_f1: thresholded metrics, see
            :class:`ThresholdMetrics`.
        thresholded: the full :class:`ThresholdMetrics` at ``threshold``.
        top3: the same metrics when only each image's 3 best scores may be predicted.
        n_classes_without_positives: classes left out of the means (AP NaN).
        n_images: N.
        class_names: C names used by :func:`format_class_table`.
        policy: label policy name.
        threshold: decision threshold (a float, or a ``[C]`` float64 array of per-class ones).
        no_positive: ``"exclude"`` or ``"zero"``.
        best_threshold: ``[C]`` per class, the score threshold with the best F1 of
            ``score >= t`` (see :func:`evaluation.thresholds.best_f1_thresholds`; ties: the
            lower one), NaN for classes without positives.
        best_f1: ``[C]`` the F1 at ``best_threshold`` (fraction), NaN without positives.
    """

    map: float
    ap: np.ndarray
    n_positives: np.ndarray
    cp: float
    cr: float
    cf1: float
    op: float
    or_: float
    of1: float
    mean_class_f1: float
    thresholded: ThresholdMetrics
    top3: ThresholdMetrics
    n_classes_without_positives: int
    n_images: int
    class_names: list[str] = field(default_factory=list)
    policy: str = "binary"
    threshold: float | np.ndarray = 0.5
    no_positive: str = "exclude"
    best_threshold: np.ndarray | None = None
    best_f1: np.ndarray | None = None

    @property
    def n_classes(self) -> int:
        """C, the number of classes."""
        return int(self.ap.shape[0])

    def _best(self) -> tuple[np.ndarray, np.ndarray]:
        """``(best_threshold [C], best_f1 [C])``, all NaN when they were not computed."""
        missing = np.full(self.n_classes, np.nan)
        thr = missing if self.best_threshold is None else self.best_threshold
        f1 = missing if self.best_f1 is None else self.best_f1
        return thr, f1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of all metrics (fractions; NaN becomes None)."""
        return {
            "mAP": _json_float(self.map),
            "CP": _json_float(self.cp),
            "CR": _json_float(self.cr),
            "CF1": _json_float(self.cf1),
            "OP": _json_float(self.op),
            "OR": _json_float(self.or_),
            "OF1": _json_float(self.of1),
            "mean_class_f1": _json_float(self.mean_class_f1),
            "n_images": self.n_images,
            "n_classes": self.n_classes,
            "n_classes_without_positives": self.n_classes_without_positives,
            "policy": self.policy,
            "threshold": _json_threshold(self.threshold),
            "no_positive": self.no_positive,
            "per_class": [
                {
                    "index": i,
                    "name": name,
                    "ap": _json_float(float(a)),
                    "positives": int(p),
                    "best_threshold": _json_float(float(bt)),
                    "best_f1": _json_float(float(bf)),
                }
                for i, (name, a, p, bt, bf) in enumerate(zip(self.class_names, self.ap, self.n_positives, *self._best()))
            ],
            "thresholded": self.thresholded.to_dict(),
            "top3": self.top3.to_dict(),
        }


def evaluate(
    scores: Any,
    targets: Any,
    policy: str | LabelPolicy = "binary",
    threshold: float | Sequence[float] | np.ndarray = 0.5,
    class_names: Sequence[str] | None = None,
    no_positive: str = "exclude",
) -> EvalResult:
    """Compute AP/mAP, the thresholded metrics and their top-3 variant in one pass.

    Args:
        scores: ``[N, C]`` sigmoid probabilities.
        targets: ``[N, C]`` labels in the encoding of ``policy`` (``binary``/``coco``/
            ``custom``: 0/1; ``voc07``: 1/-1/0 with 0 ignored; ``wider``: 0/1/99 with 99
            ignored for AP and negative for the thresholded metrics).
        policy: label policy name or :class:`LabelPolicy`.
        threshold: score >= threshold is a positive prediction; one number, or ``[C]``
            per-class thresholds.
        class_names: C names (default ``class_0 .. class_{C-1}``).
        no_positive: ``"exclude"`` (default) or ``"zero"``, see module docstring.
    Returns:
        an :class:`EvalResult`.
    Raises:
        LabelEncodingError: targets outside the policy's encoding (a ``UserError`` and a
            ``ValueError``).
        ValueError: bad shapes, non-finite scores, wrong number of class names, per-class
            thresholds of the wrong shape or not finite.
    """
    _check_no_positive(no_positive)
    s = _as_scores(scores)
    t = _as_targets(targets, s.shape)
    threshold = _as_threshold(threshold, s.shape[1])
    pol = get_policy(policy)
    _check_encoding(t, pol)
    if pol.name == "voc07" and t.size and not (t == -1).any() and (t == 0).any():
        log.warning(
            "label policy voc07 treats 0 as 'difficult' (ignored), but the targets contain no -1: "
            "they look binary (0 = negative); use policy 'binary' for such labels"
        )
    n, c = s.shape
    names = [f"class_{i}" for i in range(c)] if class_names is None else [str(x) for x in class_names]
    if len(names) != c:
        raise ValueError(f"got {len(names)} class names for {c} classes")

    positive = t == 1
    valid_ap = ~_in_values(t, pol.ignore_ap)
    ap, npos = _ranked_ap(s, valid_ap, positive & valid_ap)
    m, n_missing = mean_average_precision(ap, no_positive)

    valid_thr = ~_in_values(t, pol.ignore_thresholded)
    pos_thr = positive & valid_thr
    above = s >= threshold
    full = _threshold_from_masks(above, valid_thr, pos_thr, threshold, None, no_positive)
    top3 = _threshold_from_masks(above & topk_mask(s, 3), valid_thr, pos_thr, threshold, 3, no_positive)
    best_threshold, best_f1 = best_f1_from_masks(s, valid_thr, pos_thr)
    return EvalResult(
        map=m,
        ap=ap,
        n_positives=npos,
        cp=full.cp,
        cr=full.cr,
        cf1=full.cf1,
        op=full.op,
        or_=full.or_,
        of1=full.of1,
        mean_class_f1=full.mean_class_f1,
        thresholded=full,
        top3=top3,
        n_classes_without_positives=n_missing,
        n_images=n,
        class_names=names,
        policy=pol.name,
        threshold=threshold,
        no_positive=no_positive,
        best_threshold=best_threshold,
        best_f1=best_f1,
    )


# --------------------------------------------------------------------------- formatting


def format_reference_lines(result: EvalResult) -> str:
    """The three lines the CSRA reference prints, byte for byte in its format.

    Args:
        result: an :class:`EvalResult`.
    Returns:
        ``"mAP: 0.946971\\nCP: ..., CR: ..., CF1 :...\\nOP: ..., OR: ..., OF1 ..."``
        (fractions with 6 decimals, no trailing newline).
    """
    return "\n".join(
        [
            "mAP: {:4f}".format(result.map),
            "CP: {:4f}, CR: {:4f}, CF1 :{:4F}".format(result.cp, result.cr, result.cf1),
            "OP: {:4f}, OR: {:4f}, OF1 {:4F}".format(result.op, result.or_, result.of1),
        ]
    )


def format_class_table(result: EvalResult) -> str:
    """Per-class AP table: index, class name, number of positives, AP in percent, and the
    class's best-F1 threshold with that F1 (percent).

    Args:
        result: an :class:`EvalResult`.
    Returns:
        an aligned multi-line table (no trailing newline); classes without positives show
        ``n/a`` and the footer says how many were left out of the mAP.
    """
    names = result.class_names or [f"class_{i}" for i in range(result.n_classes)]
    w_idx = max(1, len(str(max(result.n_classes - 1, 0))))
    w_name = max([5] + [len(x) for x in names])
    w_pos = max(9, len(str(int(result.n_positives.max(initial=0)))))
    header = (f"{'#':>{w_idx}}  {'class':<{w_name}}  {'positives':>{w_pos}}  {'AP (%)':>7}"
              f"  {'best thr':>8}  {'best F1 (%)':>11}")
    lines = [header, "-" * len(header)]
    rows = zip(names, result.ap, result.n_positives, *result._best())
    for i, (name, a, p, bt, bf) in enumerate(rows):
        ap_txt = "n/a" if math.isnan(a) else f"{100.0 * a:.2f}"
        bt_txt = "n/a" if math.isnan(bt) else f"{bt:.4f}"
        bf_txt = "n/a" if math.isnan(bf) else f"{100.0 * bf:.2f}"
        lines.append(f"{i:>{w_idx}}  {name:<{w_name}}  {int(p):>{w_pos}}  {ap_txt:>7}  {bt_txt:>8}  {bf_txt:>11}")
    lines.append("-" * len(header))
    map_txt = "n/a" if math.isnan(result.map) else f"{100.0 * result.map:.2f}"
    lines.append(f"{'':>{w_idx}}  {'mAP':<{w_name}}  {int(result.n_positives.sum()):>{w_pos}}  {map_txt:>7}")
    k = result.n_classes_without_positives
    if k:
        how = "left out of the mean" if result.no_positive == "exclude" else "counted as AP 0"
        lines.append(f"{k} of {result.n_classes} classes have no positives ({how})")
    return "\n".join(lines)
