"""Headless plots of evaluation results and training runs (PNG files, matplotlib Agg).

Figures are built with matplotlib's object-oriented API (``Figure`` + ``FigureCanvasAgg``),
never ``pyplot``: no global state, no GUI backend, works without a display. Every file is
written atomically (``utils.fileio.atomic_write``), so a killed run never leaves a cut PNG.

What is drawn:

* :func:`plot_pr_curves`: one small precision-recall panel per class (a grid of about
  ``ceil(sqrt(C))`` columns) titled ``<name> AP 93.1``; the figure size is bounded, so
  C = 80 (COCO) stays one readable ~1600 px image.
* :func:`plot_ap_bars`: per-class AP bars sorted descending, with a line at the mAP;
  horizontal bars when there are many classes.
* :func:`plot_training_curves`: ``training_curves.png`` from a run's ``metrics.jsonl``
  (see :data:`TRAINING_CURVES_NAME`).

Scales follow :mod:`evaluation.metrics`: AP, mAP, CF1 and OF1 are fractions in the data
(``metrics.jsonl`` rows too) and are shown in percent on the plots.
"""
from __future__ import annotations

import json
import math
import numbers
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

# The encoding rules and their messages are shared with the metrics, so that a plot rejects
# exactly the targets the evaluator rejects.
from evaluation.metrics import LabelPolicy, average_precision, label_masks, mean_average_precision
from utils.errors import UserError
from utils.fileio import atomic_write
from utils.logger import get_logger

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = get_logger("plots")

__all__ = [
    "TRAINING_CURVES_NAME",
    "last_row_per_epoch",
    "plot_ap_bars",
    "plot_pr_curves",
    "plot_training_curves",
    "precision_recall_curves",
    "read_metrics_jsonl",
]

TRAINING_CURVES_NAME = "training_curves.png"
"""File written by :func:`plot_training_curves` in its output folder: one figure with the
panels loss, learning rate, evaluation metrics (mAP, CF1, OF1) and throughput, by epoch."""

_DPI = 100
_MAX_FIG_INCHES = 16.0  # PR grid: longest side; at _DPI this is 1600 px whatever C is
_MAX_NAME_CHARS = 18  # longer class names are shortened in panel titles and bar labels
_EVAL_KEYS = (("map", "mAP"), ("cf1", "CF1"), ("of1", "OF1"))


# --------------------------------------------------------------------------- helpers


def _new_figure(width: float, height: float) -> Figure:
    """A figure of ``width`` x ``height`` inches attached to the Agg canvas (no GUI, no pyplot)."""
    # imported here: reading metrics.jsonl (and its error messages) should not pay ~1 s of matplotlib import
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def _save_png(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Render ``fig`` to ``path`` as PNG, atomically; returns the path."""
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=_DPI))


def _short(name: str, limit: int = _MAX_NAME_CHARS) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "\u2026"


def _check_names(names: Sequence[str], c: int) -> list[str]:
    out = [str(n) for n in names]
    if len(out) != c:
        raise ValueError(f"got {len(out)} class names for {c} classes")
    return out


def _finite(value: Any) -> float | None:
    """``value`` as a float if it is a finite number, else None (missing, null, NaN, text)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    v = float(value)
    return v if math.isfinite(v) else None


# --------------------------------------------------------------------------- PR curves


def precision_recall_curves(
    scores: Any, targets: Any, policy: str | LabelPolicy = "binary"
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per-class precision-recall curves, one point per distinct score threshold.

    Per class: entries whose target is ignored by ``policy`` (``ignore_ap``: VOC difficult,
    WIDER unspecified) are dropped; for every distinct score ``t`` of the kept entries,
    taken in decreasing order, the entries with ``score >= t`` are the predicted positives
    and ``precision = TP / predicted``, ``recall = TP / positives``. Tied scores therefore
    give one point, not several. On tie-free data the area under the step curve
    (``sum (r_k - r_{k-1}) * p_k``) is the AP of :func:`evaluation.metrics.average_precision`.

    Args:
        scores: ``[N, C]`` float scores (finite).
        targets: ``[N, C]`` labels in the policy's encoding (1 = positive).
        policy: label policy name or :class:`~evaluation.metrics.LabelPolicy`.
    Returns:
        C pairs ``(precision [K_c], recall [K_c])`` (float64) where ``K_c`` is the number of
        distinct scores among class c's kept entries, ordered by decreasing threshold (recall
        non-decreasing); both arrays are empty for a class without positives.
    Raises:
        LabelEncodingError: targets outside the policy's encoding.
        ValueError: shapes differ, or scores are not finite.
    """
    s, valid, positive = label_masks(scores, targets, policy, for_ap=True)
    curves: list[tuple[np.ndarray, np.ndarray]] = []
    for c in range(s.shape[1]):
        keep = valid[:, c]
        pos = positive[keep, c]
        n_pos = int(pos.sum())
        if n_pos == 0:
            curves.append((np.empty(0), np.empty(0)))
            continue
        col = s[keep, c]
        order = np.argsort(-col, kind="stable")
        ranked = col[order]
        tp = np.cumsum(pos[order])
        # the last rank of every run of equal scores is where that threshold's counts are final
        last = np.flatnonzero(np.r_[ranked[1:] != ranked[:-1], True])
        curves.append((tp[last] / (last + 1.0), tp[last] / float(n_pos)))
    return curves


def _step_points(precision: np.ndarray, recall: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The points that shape the drawn curve: where recall grows, plus a start at recall 0.

    Drawn with ``drawstyle="steps-pre"``, precision ``p_k`` spans ``(r_{k-1}, r_k]``, the
    area the AP sums. Points between two recall steps only draw a vertical drop, hidden by
    the next step, so they are left out: a class with 10k negatives stays a few hundred points.
    """
    grows = np.r_[True, recall[1:] > recall[:-1]] & (recall > 0)
    r, p = recall[grows], precision[grows]
    return np.r_[0.0, r], np.r_[p[:1], p]


def plot_pr_curves(
    scores: Any,
    targets: Any,
    names: Sequence[str],
    policy: str | LabelPolicy,
    path: str | os.PathLike[str],
    ap: Any = None,
) -> Path:
    """Draw every class's precision-recall curve as a small panel of one grid figure.

    Panels are titled ``<name> AP 93.1`` (AP in percent); a class without positives shows
    "no positives". Axes are [0, 1] (recall on x, precision on y). The figure is at most
    16 x 16 inches at 100 dpi, so C = 80 gives a 9 x 9 grid of ~1.8-inch panels.

    Args:
        scores: ``[N, C]`` float scores.
        targets: ``[N, C]`` labels in the policy's encoding.
        names: C class names.
        policy: label policy name or :class:`~evaluation.metrics.LabelPolicy`.
        path: PNG file to write (its folder is created).
        ap: optional ``[C]`` per-class AP (fractions, NaN for no positives) computed
            already; default: :func:`~evaluation.metrics.average_precision`.
    Returns:
        ``path`` as a ``Path``.
    Raises:
        LabelEncodingError, ValueError: as :func:`precision_recall_curves`; no classes, wrong
            number of names or of AP values.
    """
    curves = precision_recall_curves(scores, targets, policy)
    c = len(curves)
    if c == 0:
        raise ValueError("no classes to plot")
    labels = _check_names(names, c)
    ap_arr = average_precision(scores, targets, policy) if ap is None else np.asarray(ap, dtype=np.float64).reshape(-1)
    if ap_arr.shape != (c,):
        raise ValueError(f"got {ap_arr.size} AP values for {c} classes")
    ncols = max(1, math.ceil(math.sqrt(c)))
    nrows = max(1, math.ceil(c / ncols))
    panel = min(2.6, _MAX_FIG_INCHES / max(ncols, nrows))
    title_size = 9 if panel >= 2.2 else 7
    fig = _new_figure(max(panel * ncols, 3.0), panel * nrows + 0.5)
    # Not sharex/sharey: shared axes re-check every sibling's limits (quadratic in C). Fixed
    # limits, fixed ticks and fixed title positions keep 80 panels at a few seconds on one core.
    axes = fig.subplots(nrows, ncols, squeeze=False)
    ticks = [0.0, 0.5, 1.0]
    for i, ax in enumerate(axes.flat):
        if i >= c:
            ax.set_axis_off()
            continue
        col = i % ncols
        precision, recall = curves[i]
        if recall.size == 0:
            title = _short(labels[i])
            ax.text(0.5, 0.5, "no positives", ha="center", va="center", fontsize=title_size, color="0.4",
                    transform=ax.transAxes)
        else:
            x, y = _step_points(precision, recall)
            ax.plot(x, y, drawstyle="steps-pre", linewidth=1.0, color="tab:blue")
            value = ap_arr[i]
            shown = f"{100.0 * value:.1f}" if math.isfinite(value) else "n/a"
            title = f"{_short(labels[i])} AP {shown}"
        ax.set_title(title, fontsize=title_size, y=1.0, pad=2.0)
        ax.set_xlim(0.0, 1.0)
        ax.set_ylim(0.0, 1.02)
        ax.set_xticks(ticks)
        ax.set_yticks(ticks)
        bottom = i + ncols >= c  # no panel below this one
        ax.tick_params(labelsize=6, length=2, labelbottom=bottom, labelleft=col == 0)
        ax.grid(True, linewidth=0.3, alpha=0.5)
        if bottom:
            ax.set_xlabel("recall", fontsize=7, labelpad=1)
        if col == 0:
            ax.set_ylabel("precision", fontsize=7, labelpad=1)
    m, missing = mean_average_precision(ap_arr)
    head = f"Precision-recall per class (mAP {100.0 * m:.1f}" if math.isfinite(m) else "Precision-recall per class (mAP n/a"
    head += f", {missing} without positives)" if missing else ")"
    fig.suptitle(head, fontsize=11)
    fig.subplots_adjust(left=0.6 / fig.get_figwidth(), right=0.99, bottom=0.45 / fig.get_figheight(),
                        top=1.0 - 0.8 / fig.get_figheight(), wspace=0.12, hspace=0.45)
    return _save_png(fig, path)


# --------------------------------------------------------------------------- AP bars


def plot_ap_bars(ap: Any, names: Sequence[str], path: str | os.PathLike[str]) -> Path:
    """Bar chart of per-class AP, best class first, with a line at the mAP.

    Up to 30 classes: vertical bars (and a horizontal mAP line); more: horizontal bars, best
    at the top (and a vertical mAP line), the figure growing with C up to 40 inches. Classes
    without positives (AP NaN) come last, marked "no positives", and stay out of the mAP.

    Args:
        ap: ``[C]`` per-class AP as fractions in [0, 1], NaN for classes without positives.
        names: C class names.
        path: PNG file to write (its folder is created).
    Returns:
        ``path`` as a ``Path``.
    Raises:
        ValueError: no classes, wrong number of names, or AP values outside [0, 1] (percent given?).
    """
    values = np.asarray(ap, dtype=np.float64).reshape(-1)
    c = values.size
    labels = _check_names(names, c)
    if c == 0:
        raise ValueError("no classes to plot")
    known = np.isfinite(values)
    if (values[known] < 0).any() or (values[known] > 1.0 + 1e-9).any():
        raise ValueError("AP values must be fractions in [0, 1] (the metrics' scale), not percent")
    # descending AP, ties and NaN (sorted last) by class index
    order = np.lexsort((np.arange(c), np.where(known, -values, np.inf)))
    shown = np.where(known, values, 0.0)[order] * 100.0
    names_sorted = [_short(labels[i], 24) for i in order]
    m, missing = mean_average_precision(values)
    horizontal = c > 30
    if horizontal:
        per_bar = min(0.2, 38.0 / c)
        fig = _new_figure(8.0, per_bar * c + 1.4)
        font = float(np.clip(per_bar * 72 * 0.7, 3.0, 8.0))
        ax = fig.add_subplot()
        pos = np.arange(c)
        bars = ax.barh(pos, shown, height=0.75, color="tab:blue")
        ax.bar_label(bars, labels=[f"{v:.1f}" if k else "" for v, k in zip(shown, known[order])], padding=2,
                     fontsize=font)
        ax.set_yticks(pos, names_sorted, fontsize=font)
        ax.set_ylim(c - 0.5, -0.5)  # best class on top
        ax.set_xlim(0.0, 100.0)
        ax.set_xlabel("AP (%)")
        if math.isfinite(m):
            ax.axvline(100.0 * m, color="tab:red", linewidth=1.2, label=f"mAP {100.0 * m:.1f}")
        for k in np.flatnonzero(~known[order]):
            ax.text(1.0, k, "no positives", va="center", fontsize=font, color="0.4")
        ax.grid(True, axis="x", linewidth=0.3, alpha=0.5)
        fig.subplots_adjust(left=min(0.35, 1.9 / 8.0), right=0.97, bottom=0.7 / fig.get_figheight(),
                            top=1.0 - 0.5 / fig.get_figheight())
    else:
        fig = _new_figure(max(5.0, 0.38 * c + 1.5), 4.8)
        ax = fig.add_subplot()
        pos = np.arange(c)
        bars = ax.bar(pos, shown, width=0.75, color="tab:blue")
        ax.bar_label(bars, labels=[f"{v:.1f}" if k else "" for v, k in zip(shown, known[order])], padding=2,
                     fontsize=7)
        ax.set_xticks(pos, names_sorted, rotation=60, ha="right", rotation_mode="anchor", fontsize=8)
        ax.set_xlim(-0.6, c - 0.4)
        ax.set_ylim(0.0, 100.0)
        ax.set_ylabel("AP (%)")
        if math.isfinite(m):
            ax.axhline(100.0 * m, color="tab:red", linewidth=1.2, label=f"mAP {100.0 * m:.1f}")
        for k in np.flatnonzero(~known[order]):
            ax.text(k, 1.0, "no positives", rotation=90, ha="center", va="bottom", fontsize=7, color="0.4")
        ax.grid(True, axis="y", linewidth=0.3, alpha=0.5)
        fig.subplots_adjust(left=0.7 / fig.get_figwidth(), right=0.98, bottom=0.32, top=0.9)
    title = f"AP per class ({c} classes"
    title += f", {missing} without positives)" if missing else ")"
    ax.set_title(title, fontsize=10)
    if math.isfinite(m):
        ax.legend(loc="lower right" if horizontal else "upper right", fontsize=8)
    return _save_png(fig, path)


# --------------------------------------------------------------------------- metrics.jsonl


def read_metrics_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a run's ``metrics.jsonl`` (one JSON object per line, written by the trainer).

    Blank lines are skipped; ``NaN``/``Infinity`` tokens (a diverged loss) are accepted.

    Args:
        path: the file.
    Returns:
        the rows in file order, each a dict with at least a numeric ``epoch``.
    Raises:
        UserError: the file is missing, a folder, unreadable or not UTF-8; or a line is not
            JSON, not an object, or has no numeric ``epoch`` (the message names file and line).
    """
    p = Path(path)
    fix = "pass the --save_dir of a training run (train.py appends a row to metrics.jsonl after every epoch)"
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"metrics file {p} does not exist; {fix}") from None
    except IsADirectoryError:
        raise UserError(f"metrics file {p} is a folder, not a file; {fix}") from None
    except UnicodeDecodeError:
        raise UserError(f"metrics file {p} is not UTF-8 text; is it really a metrics.jsonl? {fix}") from None
    except OSError as exc:
        raise UserError(f"cannot read metrics file {p}: {exc.strerror or exc}") from None
    lines = text.splitlines()
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            cut = number == len(lines) and not text.endswith("\n")
            hint = " (probably cut off when a run was killed)" if cut else ""
            raise UserError(f"metrics file {p} line {number} is not valid JSON{hint}: {exc.msg} at column {exc.colno}; "
                            f"delete or fix that line") from None
        if not isinstance(row, dict):
            raise UserError(f"metrics file {p} line {number} is a JSON {type(row).__name__}, not an object "
                            f"{{\"epoch\": ...}}; delete or fix that line")
        if _finite(row.get("epoch")) is None:
            raise UserError(f"metrics file {p} line {number} has no numeric \"epoch\"; delete or fix that line")
        rows.append(row)
    return rows


def last_row_per_epoch(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per epoch: the last row given for it (a resumed run may repeat epochs).

    Args:
        rows: ``metrics.jsonl`` rows, each with a numeric ``epoch``.
    Returns:
        the kept rows sorted by epoch.
    Raises:
        ValueError: a row without a numeric ``epoch``.
    """
    by_epoch: dict[float, dict[str, Any]] = {}
    for i, row in enumerate(rows):
        epoch = _finite(row.get("epoch")) if isinstance(row, dict) else None
        if epoch is None:
            raise ValueError(f"row {i} has no numeric 'epoch': {row!r}")
        by_epoch[epoch] = row
    return [by_epoch[e] for e in sorted(by_epoch)]


def _series(rows: Sequence[dict[str, Any]], key: str, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """``(epochs [K], values [K])`` of the rows whose ``key`` is a finite number."""
    pairs = [(float(r["epoch"]), v * scale) for r in rows if (v := _finite(r.get(key))) is not None]
    if not pairs:
        return np.empty(0), np.empty(0)
    x, y = zip(*pairs)
    return np.asarray(x), np.asarray(y)


def _empty_panel(ax: Any, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="0.4", fontsize=9)
    ax.set_yticks([])


def _line_panel(ax: Any, x: np.ndarray, y: np.ndarray, color: str, empty: str, title: str,
                style: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """One by-epoch line (x, y [K]) in ``ax``, or the ``empty`` note when K = 0; returns (x, y)."""
    if x.size:
        ax.plot(x, y, color=color, **style)
    else:
        _empty_panel(ax, empty)
    ax.set_title(title, fontsize=10)
    return x, y


def plot_training_curves(rows: Sequence[dict[str, Any]], out_dir: str | os.PathLike[str]) -> list[Path]:
    """Plot a run's ``metrics.jsonl`` rows as :data:`TRAINING_CURVES_NAME` in ``out_dir``.

    One figure, four panels by epoch: mean training loss; learning rate (log scale when it
    spans more than two decades); mAP, CF1 and OF1 in percent on the evaluated epochs, the
    best mAP marked; throughput (images/s). A panel without data says so, so one row, rows
    without evaluation and a diverged (NaN) loss all plot. When an epoch appears more than
    once (a resumed run), its last row counts.

    Args:
        rows: ``metrics.jsonl`` rows (see :func:`read_metrics_jsonl`): ``epoch`` and any of
            ``loss``, ``lr``, ``images_per_s``, ``map``, ``cf1``, ``of1`` (fractions).
        out_dir: output folder (created if missing).
    Returns:
        the written files: ``[out_dir / "training_curves.png"]``.
    Raises:
        UserError: no rows.
        ValueError: a row without a numeric ``epoch``.
    """
    if not rows:
        raise UserError("no epoch rows to plot: the run has not finished an epoch yet (metrics.jsonl is empty)")
    from matplotlib.ticker import MaxNLocator

    kept = last_row_per_epoch(rows)
    fig = _new_figure(11.0, 7.5)
    axes = fig.subplots(2, 2, sharex=True, squeeze=False)
    ax_loss, ax_lr, ax_eval, ax_speed = axes.flat
    style = {"marker": "o", "markersize": 3, "linewidth": 1.2}

    _line_panel(ax_loss, *_series(kept, "loss"), "tab:blue", "no finite loss", "training loss (epoch mean)", style)
    x, y = _line_panel(ax_lr, *_series(kept, "lr"), "tab:orange", "no learning rate", "learning rate (last step of the epoch)",
                       style)
    positive = y[y > 0]
    if y.size and positive.size == y.size and positive.max() / positive.min() > 100.0:
        ax_lr.set_yscale("log")

    plotted = False
    for key, label in _EVAL_KEYS:
        x, y = _series(kept, key, scale=100.0)
        if x.size:
            ax_eval.plot(x, y, label=label, **style)
            plotted = True
            if key == "map":
                best = int(np.argmax(y))  # first best epoch, as the trainer's best.pdparams
                ax_eval.annotate(f"best {y[best]:.1f} @ {x[best]:g}", (x[best], y[best]), xytext=(0, 8),
                                 textcoords="offset points", ha="center", fontsize=8)
                ax_eval.plot([x[best]], [y[best]], marker="*", markersize=10, color="tab:red", linestyle="none")
    if plotted:
        ax_eval.margins(y=0.15)  # room for the "best" note above the curve
        ax_eval.legend(loc="lower right", fontsize=8)
        ax_eval.set_ylabel("%")
    else:
        _empty_panel(ax_eval, "no evaluated epoch")
    ax_eval.set_title("evaluation (mAP, CF1, OF1)", fontsize=10)

    _line_panel(ax_speed, *_series(kept, "images_per_s"), "tab:green", "no throughput", "throughput (images/s)", style)

    epochs = [float(r["epoch"]) for r in kept]
    lo, hi = min(epochs), max(epochs)
    pad = max(0.5, 0.03 * (hi - lo))
    for ax in axes.flat:
        ax.grid(True, linewidth=0.3, alpha=0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_xlim(lo - pad, hi + pad)
    for ax in axes[-1, :]:
        ax.set_xlabel("epoch")
    fig.suptitle(f"training curves ({len(kept)} epoch{'s' if len(kept) != 1 else ''})", fontsize=11)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.08, top=0.91, wspace=0.2, hspace=0.25)
    path = _save_png(fig, Path(out_dir) / TRAINING_CURVES_NAME)
    log.debug("wrote %s", path)
    return [path]
