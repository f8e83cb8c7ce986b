"""Per-class decision thresholds: tune them for the best F1, save/load them as JSON, report.

A single score threshold (0.5) is rarely the best one for every class: a rare class whose
scores stay low gets few positive predictions, a frequent one too many. This module picks,
per class, the threshold ``t`` that maximises that class's F1 of the rule ``score >= t``:

* **F1** is ``2 tp / (pred + gt)`` over the entries not ignored for the thresholded
  metrics (``LabelPolicy.ignore_thresholded``: VOC 2007's difficult 0; WIDER's 99 counts as
  a negative there, as in :func:`evaluation.metrics.thresholded_metrics`, unless
  ``ignore_values`` says otherwise), so the tuned F1 is exactly the per-class F1 that the
  thresholded metrics report with the tuned thresholds.
* **Candidates** are the class's distinct (non-ignored) scores, so the threshold is always
  one of the scores; ties in F1 go to the lower threshold.
* **Classes without positives** have no best threshold (NaN); when tuning they keep the
  global threshold.

Tuned thresholds are saved beside the checkpoint as ``thresholds.json`` (see
:class:`ClassThresholds`) and read back with a strict JSON-only reader.

This module does not import :mod:`evaluation.metrics` at import time (metrics imports it);
the policy helpers are imported inside the functions that need them.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from utils.errors import UserError
from utils.fileio import atomic_write_json, read_json

if TYPE_CHECKING:
    from evaluation.metrics import LabelPolicy, ThresholdMetrics

__all__ = [
    "THRESHOLDS_FILENAME",
    "ClassThresholds",
    "ThresholdTuning",
    "best_f1_from_masks",
    "best_f1_thresholds",
    "format_side_by_side",
    "format_tuning_table",
    "thresholds_beside",
    "tune_thresholds",
]

THRESHOLDS_FILENAME = "thresholds.json"
_NOTE = "per-class thresholds maximising each class's F1 (written by val.py --tune_thresholds)"
_FIX = ("re-tune the thresholds with val.py --tune_thresholds, "
        "or pass --threshold to use one threshold for every class")
_REQUIRED_KEYS = ("classes", "thresholds", "split", "global_threshold")


def thresholds_beside(weights_path: str | Path) -> Path:
    """The thresholds file that belongs to a checkpoint: ``thresholds.json`` in its folder.

    Args:
        weights_path: a checkpoint file path.
    Returns:
        ``<folder of weights_path>/thresholds.json``.
    """
    return Path(weights_path).parent / THRESHOLDS_FILENAME


# --------------------------------------------------------------------------- tuning


def best_f1_from_masks(scores: Any, valid: Any, positive: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per class, the threshold among its scores with the highest F1 (ties: the lower one).

    Vectorised over all classes: one sort of the ``[C, N]`` scores, then cumulative counts
    of positives give ``tp`` and ``pred`` for every candidate threshold at once.

    Args:
        scores: ``[N, C]`` finite float scores.
        valid: ``[N, C]`` bool, False for ignored entries (never counted, never candidates).
        positive: ``[N, C]`` bool, True for positives (only where ``valid``).
    Returns:
        ``(thresholds [C] float64, f1 [C] float64)``; both NaN for classes without positives.
    """
    s = np.asarray(scores, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool)
    positive = np.asarray(positive, dtype=bool) & valid
    n, c = s.shape
    thresholds = np.full(c, np.nan)
    f1 = np.full(c, np.nan)
    if n == 0 or c == 0:
        return thresholds, f1
    # Class-major, descending score; ignored entries get +inf so they sort last. The order
    # inside a run of equal scores does not matter: only the run's last position is scored.
    key = np.ascontiguousarray(np.where(valid, -s, np.inf).T)
    order = np.argsort(key, axis=1)
    sorted_key = np.take_along_axis(key, order, axis=1)
    tp = np.cumsum(np.take_along_axis(np.ascontiguousarray(positive.T), order, axis=1), axis=1)
    gt = tp[:, -1]
    # Valid entries come first, so at sorted position j the rule "score >= that score"
    # predicts the j + 1 entries up to the end of its run of equal scores.
    pred = np.arange(1, n + 1, dtype=np.int64)
    run_end = np.empty(sorted_key.shape, dtype=bool)
    run_end[:, -1] = True
    np.not_equal(sorted_key[:, 1:], sorted_key[:, :-1], out=run_end[:, :-1])
    candidate = run_end & np.isfinite(sorted_key)
    with np.errstate(invalid="ignore", divide="ignore"):
        # Equal fractions of exact integers divide to identical floats, so F1 ties are exact.
        f1_all = np.where(candidate, 2.0 * tp / (pred + gt[:, None]), -1.0)
    # argmax returns the first maximum; on the reversed rows that is the last one, i.e. the
    # lowest threshold among equally good ones.
    best = n - 1 - np.argmax(f1_all[:, ::-1], axis=1)
    rows = np.arange(c)
    has_pos = gt > 0
    thresholds[has_pos] = -sorted_key[rows, best][has_pos]
    f1[has_pos] = f1_all[rows, best][has_pos]
    return thresholds + 0.0, f1  # + 0.0 turns a -0.0 threshold into 0.0


def _masks(
    scores: Any, targets: Any, policy: "str | LabelPolicy", ignore_values: Sequence[float] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(scores [N, C] float64, valid [N, C], positive [N, C])`` for the thresholded rule."""
    from evaluation.metrics import label_masks

    return label_masks(scores, targets, policy, ignore_values, for_ap=False)


def best_f1_thresholds(
    scores: Any,
    targets: Any,
    policy: "str | LabelPolicy" = "binary",
    *,
    ignore_values: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per class, the threshold ``t`` maximising the F1 of ``score >= t`` and that F1.

    Args:
        scores: ``[N, C]`` float scores (finite).
        targets: ``[N, C]`` labels in the policy's encoding (1 = positive).
        policy: label policy name (``binary``, ``coco``, ``custom``, ``voc07``, ``wider``)
            or a :class:`~evaluation.metrics.LabelPolicy`; its ``ignore_thresholded`` values
            are dropped (VOC 2007 difficult), as in the thresholded metrics.
        ignore_values: if given, overrides the policy: these target values are dropped,
            ``1`` is positive, everything else negative, and the encoding is not validated
            (e.g. ``(99,)`` to drop WIDER's unspecified labels).
    Returns:
        ``(thresholds [C] float64, f1 [C] float64)``: each threshold is one of the class's
        scores (ties in F1: the lower threshold); NaN for classes without positives.
    Raises:
        LabelEncodingError: targets outside the policy's encoding.
        ValueError: shapes differ, or scores are not finite.
    """
    s, valid, positive = _masks(scores, targets, policy, ignore_values)
    return best_f1_from_masks(s, valid, positive)


@dataclass
class ThresholdTuning:
    """The result of :func:`tune_thresholds`.

    Attributes:
        thresholds: ``[C]`` float64 tuned thresholds (the global one for classes without
            positives).
        f1_global: ``[C]`` float64 F1 at the global threshold (0 when nothing is predicted,
            NaN without positives).
        f1_tuned: ``[C]`` float64 F1 at the tuned threshold (NaN without positives).
        n_positives: ``[C]`` int64 positives per class (ignored entries excluded).
        global_threshold: the single threshold the tuning is compared with.
    """

    thresholds: np.ndarray
    f1_global: np.ndarray
    f1_tuned: np.ndarray
    n_positives: np.ndarray
    global_threshold: float

    def to_class_thresholds(
        self, classes: Sequence[str], split: str, checkpoint: str = ""
    ) -> "ClassThresholds":
        """Bundle the thresholds with the class names for saving.

        Args:
            classes: C class names, in the model's output order.
            split: the annotation file the thresholds were tuned on.
            checkpoint: the checkpoint whose scores were used (optional).
        Returns:
            a :class:`ClassThresholds`.
        Raises:
            ValueError: ``len(classes) != C``.
        """
        if len(classes) != len(self.thresholds):
            raise ValueError(f"got {len(classes)} class names for {len(self.thresholds)} thresholds")
        return ClassThresholds(
            classes=tuple(str(x) for x in classes),
            thresholds=tuple(float(x) for x in self.thresholds),
            split=str(split),
            global_threshold=float(self.global_threshold),
            checkpoint=str(checkpoint),
        )


def tune_thresholds(
    scores: Any,
    targets: Any,
    policy: "str | LabelPolicy" = "binary",
    global_threshold: float = 0.5,
    *,
    ignore_values: Sequence[float] | None = None,
) -> ThresholdTuning:
    """Tune one threshold per class for the best F1 and compare with a global threshold.

    Args:
        scores: ``[N, C]`` sigmoid probabilities.
        targets: ``[N, C]`` labels in the policy's encoding.
        policy: label policy name or :class:`~evaluation.metrics.LabelPolicy`.
        global_threshold: the single threshold used so far (kept by classes without positives).
        ignore_values: optional override of the ignored target values, see
            :func:`best_f1_thresholds`.
    Returns:
        a :class:`ThresholdTuning`; ``f1_tuned >= f1_global`` for every class with positives.
    Raises:
        LabelEncodingError: targets outside the policy's encoding.
        ValueError: shapes differ, scores or ``global_threshold`` not finite.
    """
    g = float(global_threshold)
    if not math.isfinite(g):
        raise ValueError(f"global_threshold must be a finite number, got {global_threshold!r}")
    s, valid, positive = _masks(scores, targets, policy, ignore_values)
    best_thr, best_f1 = best_f1_from_masks(s, valid, positive)
    predicted = (s >= g) & valid
    tp = np.count_nonzero(predicted & positive, axis=0)
    pred = np.count_nonzero(predicted, axis=0)
    gt = np.count_nonzero(positive, axis=0).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1_global = np.where(gt > 0, 2.0 * tp / np.maximum(pred + gt, 1), np.nan)
    return ThresholdTuning(
        thresholds=np.where(np.isnan(best_thr), g, best_thr),
        f1_global=f1_global,
        f1_tuned=best_f1,
        n_positives=gt,
        global_threshold=g,
    )


# --------------------------------------------------------------------------- file


def _is_unit_number(value: Any) -> bool:
    """A JSON number (not a bool) that is finite and in [0, 1]."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and 0.0 <= value <= 1.0)


def _name_list(names: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(f"'{x}'" for x in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


@dataclass(frozen=True)
class ClassThresholds:
    """Per-class thresholds tied to the class names they were tuned for.

    Attributes:
        classes: C class names in the model's output order.
        thresholds: C thresholds in [0, 1] (``score >= threshold`` predicts the class).
        split: the annotation file they were tuned on.
        global_threshold: the single threshold they were compared with.
        source: the file they were read from (not saved).
        checkpoint: the checkpoint whose scores were used ("" if unknown).
    """

    classes: tuple[str, ...]
    thresholds: tuple[float, ...]
    split: str
    global_threshold: float
    source: str = ""
    checkpoint: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(str(x) for x in self.classes))
        object.__setattr__(self, "thresholds", tuple(float(x) for x in self.thresholds))
        if len(self.classes) != len(self.thresholds):
            raise ValueError(f"{len(self.classes)} class names but {len(self.thresholds)} thresholds")
        bad = [(n, t) for n, t in zip(self.classes, self.thresholds) if not _is_unit_number(t)]
        if bad:
            raise ValueError(f"thresholds must be finite numbers in [0, 1]; class '{bad[0][0]}' has {bad[0][1]!r}")

    def as_array(self) -> np.ndarray:
        """The thresholds as a ``[C]`` float32 array (model output order)."""
        return np.asarray(self.thresholds, dtype=np.float32)

    def to_dict(self) -> dict[str, Any]:
        """The JSON content: ``classes``, ``thresholds``, ``split``, ``global_threshold``,
        ``checkpoint`` and a free-text ``note`` (``source`` is not saved)."""
        return {
            "classes": list(self.classes),
            "thresholds": list(self.thresholds),
            "split": self.split,
            "global_threshold": self.global_threshold,
            "checkpoint": self.checkpoint,
            "note": _NOTE,
        }

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as indented JSON, atomically. Returns the path written."""
        return atomic_write_json(path, self.to_dict(), indent=2)

    @classmethod
    def load(cls, path: str | Path, expected_classes: Sequence[str] | None = None) -> "ClassThresholds":
        """Read and validate a thresholds file (JSON only; nothing in it is executed).

        Args:
            path: the JSON file written by :meth:`save`.
            expected_classes: the model's C class names; if given, the file's classes must
                be the same names in the same order.
        Returns:
            a :class:`ClassThresholds` with ``source`` set to ``path``.
        Raises:
            UserError: one message naming the file and the fix, when the file is missing or
                not JSON, not an object, lacks a key, has lists of different lengths, a
                threshold that is not a number in [0, 1], duplicate class names, or classes
                that differ from ``expected_classes``.
        """
        p = Path(path)
        what = "thresholds file"
        data = read_json(p, what=what, fix=_FIX)

        def fail(problem: str) -> UserError:
            return UserError(f"{what} {p} {problem}; {_FIX}")

        if not isinstance(data, dict):
            raise fail(f"must hold a JSON object with keys {', '.join(_REQUIRED_KEYS)}, "
                       f"not a {type(data).__name__}")
        missing = [k for k in _REQUIRED_KEYS if k not in data]
        if missing:
            raise fail(f"lacks the key(s) {', '.join(missing)}")
        classes, thresholds = data["classes"], data["thresholds"]
        if not isinstance(classes, list) or not all(isinstance(x, str) for x in classes):
            raise fail("has 'classes' that is not a list of class names (strings)")
        if not classes:
            raise fail("lists no classes")
        if not isinstance(thresholds, list):
            raise fail("has 'thresholds' that is not a list of numbers")
        if len(classes) != len(thresholds):
            raise fail(f"lists {len(classes)} classes but {len(thresholds)} thresholds")
        for i, (name, value) in enumerate(zip(classes, thresholds)):
            if not _is_unit_number(value):
                raise fail(f"has threshold {_json_repr(value)} for class {i} '{name}': "
                           "thresholds must be numbers between 0 and 1")
        dupes = sorted(name for name, count in Counter(classes).items() if count > 1)
        if dupes:
            raise fail(f"lists duplicate class name(s) {_name_list(dupes)}")
        if not _is_unit_number(data["global_threshold"]):
            raise fail(f"has global_threshold {_json_repr(data['global_threshold'])}, "
                       "not a number between 0 and 1")
        if not isinstance(data["split"], str):
            raise fail("has 'split' that is not a string (the annotation file tuned on)")
        checkpoint = data.get("checkpoint", "")
        if not isinstance(checkpoint, str):
            raise fail("has 'checkpoint' that is not a string")
        if expected_classes is not None:
            _check_classes(p, classes, [str(x) for x in expected_classes])
        return cls(
            classes=tuple(classes),
            thresholds=tuple(float(x) for x in thresholds),
            split=data["split"],
            global_threshold=float(data["global_threshold"]),
            source=str(p),
            checkpoint=checkpoint,
        )


def _json_repr(value: Any) -> str:
    """How ``value`` (decoded from JSON) looks in the file, for messages: ``true``, ``"0.5"``, ``NaN``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (list, dict)):
        return "a list" if isinstance(value, list) else "an object"
    return repr(value)


def _check_classes(path: Path, found: list[str], expected: list[str]) -> None:
    """UserError unless ``found`` equals ``expected`` (same names, same order)."""
    if found == expected:
        return
    head = f"thresholds file {path} was tuned for other classes than the model's"
    if sorted(found) == sorted(expected):
        i = next(k for k, (a, b) in enumerate(zip(found, expected)) if a != b)
        raise UserError(
            f"{head}: the same {len(expected)} classes in a different order "
            f"(position {i}: file '{found[i]}', model '{expected[i]}'); {_FIX}"
        )
    expected_set, found_set = set(expected), set(found)
    unknown = [x for x in found if x not in expected_set]
    missing = [x for x in expected if x not in found_set]
    parts = []
    if unknown:
        parts.append(f"unknown to the model: {_name_list(unknown)}")
    if missing:
        parts.append(f"missing from the file: {_name_list(missing)}")
    if not parts:  # same names but repeated differently in the model's list
        parts.append(f"{len(found)} classes in the file, {len(expected)} in the model")
    raise UserError(f"{head} ({'; '.join(parts)}); {_FIX}")


# --------------------------------------------------------------------------- reports


def _pct(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{100.0 * x:.2f}"


def format_tuning_table(tuning: ThresholdTuning, names: Sequence[str]) -> str:
    """Per-class table of the tuning: index, class, positives, threshold, F1 before/after.

    Args:
        tuning: a :class:`ThresholdTuning` with C classes.
        names: C class names.
    Returns:
        an aligned multi-line table (no trailing newline); F1 in percent with 2 decimals,
        ``n/a`` without positives (those classes keep the global threshold, marked ``*``);
        the last line gives the mean F1 before and after over the classes with positives.
    Raises:
        ValueError: ``len(names) != C``.
    """
    c = len(tuning.thresholds)
    if len(names) != c:
        raise ValueError(f"got {len(names)} class names for {c} classes")
    g = tuning.global_threshold
    has_pos = tuning.n_positives > 0
    w_idx = max(1, len(str(max(c - 1, 0))))
    w_name = max([5] + [len(str(x)) for x in names])
    w_pos = max(9, len(str(int(np.max(tuning.n_positives, initial=0)))))
    col_g = f"F1 @{g:g} (%)"
    col_t = "F1 tuned (%)"
    header = f"{'#':>{w_idx}}  {'class':<{w_name}}  {'positives':>{w_pos}}  {'threshold':>10}  {col_g:>12}  {col_t:>12}"
    lines = [header, "-" * len(header)]
    for i in range(c):
        thr = f"{tuning.thresholds[i]:.4f}" + (" " if has_pos[i] else "*")
        lines.append(
            f"{i:>{w_idx}}  {str(names[i]):<{w_name}}  {int(tuning.n_positives[i]):>{w_pos}}  {thr:>10}  "
            f"{_pct(tuning.f1_global[i]):>12}  {_pct(tuning.f1_tuned[i]):>12}"
        )
    lines.append("-" * len(header))
    k = int(has_pos.sum())
    before = float(tuning.f1_global[has_pos].mean()) if k else float("nan")
    after = float(tuning.f1_tuned[has_pos].mean()) if k else float("nan")
    if k < c:
        lines.append(f"* {c - k} class(es) without positives keep the global threshold {g:g}")
    lines.append(f"mean F1 over {k} of {c} classes with positives: {_pct(before)}% at threshold {g:g} "
                 f"-> {_pct(after)}% with tuned thresholds")
    return "\n".join(lines)


def format_side_by_side(
    global_metrics: "ThresholdMetrics", tuned_metrics: "ThresholdMetrics", global_threshold: float
) -> str:
    """CP/CR/CF1/OP/OR/OF1 at the global threshold and with the tuned thresholds, side by side.

    Args:
        global_metrics: :class:`~evaluation.metrics.ThresholdMetrics` at ``global_threshold``.
        tuned_metrics: the same metrics with the ``[C]`` tuned thresholds.
        global_threshold: the global threshold (for the column title).
    Returns:
        an aligned table (no trailing newline): one row per metric, two columns in percent.
    """
    col_g = f"threshold {global_threshold:g}"
    col_t = "tuned thresholds"
    rows = [("CP", "cp"), ("CR", "cr"), ("CF1", "cf1"), ("OP", "op"), ("OR", "or_"), ("OF1", "of1")]
    header = f"{'metric':<6}  {col_g:>{max(len(col_g), 8)}}  {col_t:>{len(col_t)}}"
    lines = [header, "-" * len(header)]
    for label, attr in rows:
        a, b = getattr(global_metrics, attr), getattr(tuned_metrics, attr)
        lines.append(f"{label:<6}  {_pct(a):>{max(len(col_g), 8)}}  {_pct(b):>{len(col_t)}}")
    return "\n".join(lines)
