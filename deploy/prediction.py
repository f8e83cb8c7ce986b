"""Prediction helpers shared by predict.py (dygraph) and infer.py (Paddle Inference).

Both read images with ``datasets.image_io.load_rgb``, preprocess them with
``datasets.transforms.preprocess`` and print the same lines, so their outputs agree.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datasets.image_io import list_images, load_rgb
from datasets.transforms import preprocess
from utils.errors import UserError


def collect_inputs(img_dir: str | None, paths: Sequence[str] = ()) -> list[str]:
    """Images to predict: those in ``img_dir`` (sorted by name) plus explicit ``paths`` (sorted).

    Returns path strings as ``<img_dir>/<file>`` (the reference's form) or as given.
    UserError when nothing is given or the folder holds no image.
    """
    found: list[str] = []
    if img_dir:
        found += [os.path.join(img_dir, p.name) for p in list_images(img_dir)]
    found += sorted(paths)
    if not found:
        raise UserError("nothing to predict: give --img_dir DIR or image paths")
    return found


@dataclass
class Batch:
    """Images that loaded: their paths and the preprocessed array [B, 3, S, S]."""

    paths: list[str]
    images: np.ndarray


def iter_batches(
    paths: Sequence[str], img_size: int, mean: Sequence[float], std: Sequence[float], batch_size: int, failures: list[tuple[str, str]]
) -> Iterator[Batch]:
    """Load and preprocess ``paths`` in batches; unreadable files are appended to ``failures``
    as (path, reason) and skipped. Yields ``Batch`` objects with 1..batch_size images."""
    chunk: list[str] = []
    arrays: list[np.ndarray] = []
    for path in paths:
        try:
            arrays.append(preprocess(load_rgb(path), img_size, mean, std))
            chunk.append(path)
        except UserError as exc:
            failures.append((path, str(exc)))
        if len(chunk) == batch_size:
            yield Batch(chunk, np.stack(arrays))
            chunk, arrays = [], []
    if chunk:
        yield Batch(chunk, np.stack(arrays))


@dataclass(frozen=True)
class DecisionThresholds:
    """Which sigmoid score makes a class "present": one global value or one per class, and their origin.

    Attributes:
        values: a float (every class) or a tuple of C floats (tuned per class).
        source: how they were chosen, shown to users, e.g. ``global 0.5 (default)`` or
            ``tuned per class: RUN/thresholds.json (tuned on val_voc07.json)``.
    """

    values: float | tuple[float, ...]
    source: str

    @property
    def per_class(self) -> bool:
        """True when every class has its own threshold."""
        return isinstance(self.values, tuple)

    def as_array(self, num_classes: int) -> np.ndarray:
        """The thresholds as float64 [C] (a global value repeated)."""
        if self.per_class:
            return np.asarray(self.values, dtype=np.float64)
        return np.full(num_classes, float(self.values), dtype=np.float64)

    def to_dict(self) -> dict:
        """JSON form: ``{"kind": "global"|"per_class", "values": float|[C], "source": str}``."""
        return {"kind": "per_class" if self.per_class else "global",
                "values": list(self.values) if self.per_class else float(self.values), "source": self.source}


def global_thresholds(value: float, why: str) -> DecisionThresholds:
    """One threshold for every class; ``why`` says where it came from (``--threshold``, ``default``...)."""
    return DecisionThresholds(float(value), f"global {float(value):g} ({why})")


def choose_thresholds(
    class_names: Sequence[str],
    *,
    override: float | None = None,
    thresholds_file: str | None = None,
    weights: str | None = None,
    stored: Sequence[float] | None = None,
    stored_source: str = "",
    default: float = 0.5,
    default_source: str = "default",
) -> DecisionThresholds:
    """The thresholds a prediction uses, in order of precedence.

    1. ``override`` (``--threshold X``): X for every class;
    2. ``thresholds_file`` (``--thresholds FILE``): the per-class thresholds in that file;
    3. ``thresholds.json`` beside ``weights`` (written by ``val.py --tune_thresholds``);
    4. ``stored`` per-class thresholds (inference.yml of an export), described by ``stored_source``;
    5. ``default`` for every class.

    Args:
        class_names: the model's C class names; a thresholds file must list the same names.
    Returns:
        ``DecisionThresholds``.
    Raises:
        UserError: ``override`` and ``thresholds_file`` both given, or a thresholds file that
            is unreadable, invalid or made for other classes (names the file and the fix).
    """
    from evaluation.thresholds import THRESHOLDS_FILENAME, ClassThresholds

    if override is not None and thresholds_file:
        raise UserError(f"--threshold {override} and --thresholds {thresholds_file} exclude each other: --threshold sets "
                        "one value for every class, --thresholds reads one per class; give only one")
    if override is not None:
        return global_thresholds(override, "--threshold")
    path = Path(thresholds_file) if thresholds_file else None
    if path is None and weights and not str(weights).startswith(("http://", "https://")):
        beside = Path(weights).expanduser().parent / THRESHOLDS_FILENAME
        path = beside if beside.is_file() else None
    if path is not None:
        tuned = ClassThresholds.load(path, expected_classes=list(class_names))
        where = f" (tuned on {tuned.split})" if tuned.split else ""
        return DecisionThresholds(tuple(float(v) for v in tuned.thresholds), f"tuned per class: {path}{where}")
    if stored is not None:
        return DecisionThresholds(tuple(float(v) for v in stored), stored_source or "tuned per class")
    return global_thresholds(default, default_source)


def deploy_thresholds(deploy: Any, threshold: float | None, thresholds_file: str | None) -> DecisionThresholds:
    """The thresholds of an export: ``threshold`` > ``thresholds_file`` > inference.yml's per-class > its global one."""
    return choose_thresholds(deploy.class_names, override=threshold, thresholds_file=thresholds_file,
                             stored=deploy.thresholds, stored_source=deploy.thresholds_source or "tuned per class (inference.yml)",
                             default=deploy.threshold, default_source="inference.yml")


def _threshold_values(threshold: float | np.ndarray | DecisionThresholds, num_classes: int) -> np.ndarray:
    if isinstance(threshold, DecisionThresholds):
        return threshold.as_array(num_classes)
    return np.broadcast_to(np.asarray(threshold, dtype=np.float64), (num_classes,))


def selected_classes(scores: np.ndarray, threshold: float | np.ndarray | DecisionThresholds, topk: int | None) -> list[int]:
    """Class indices to report for one image (scores [C]): score >= its class's threshold, at most ``topk``.

    ``threshold``: one float, an array [C] or ``DecisionThresholds``. Returns the indices in
    class order, or best first when ``topk`` is given.
    """
    limits = _threshold_values(threshold, len(scores))
    order = np.argsort(-scores, kind="stable")
    chosen = [int(c) for c in order if scores[c] >= limits[c]]
    return chosen[:topk] if topk else sorted(chosen)


def prediction_line(path: str, scores: np.ndarray, names: Sequence[str], threshold: float | np.ndarray | DecisionThresholds,
                    topk: int | None) -> str:
    """The reference's output line: ``<path> prediction: dog,person,`` (trailing comma)."""
    chosen = selected_classes(scores, threshold, topk)
    return f"{path} prediction: " + "".join(f"{names[c]}," for c in chosen)


def prediction_record(path: str, scores: np.ndarray, names: Sequence[str], threshold: float | np.ndarray | DecisionThresholds,
                      topk: int | None) -> dict:
    """Machine-readable prediction: ``{"img_path", "scores", "labels": [{"class", "score", "threshold"}], "thresholds"}``.

    ``thresholds`` says which thresholds were used (``DecisionThresholds.source``, or ``given``).
    """
    limits = _threshold_values(threshold, len(scores))
    chosen = selected_classes(scores, limits, topk)
    return {
        "img_path": path,
        "scores": [float(s) for s in scores],
        "labels": [{"class": names[c], "score": float(scores[c]), "threshold": float(limits[c])} for c in chosen],
        "thresholds": threshold.source if isinstance(threshold, DecisionThresholds) else "given",
    }


def report_failures(failures: Sequence[tuple[str, str]]) -> None:
    """Print one line per unreadable file on stderr."""
    import sys

    for path, reason in failures:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if failures:
        print(f"{len(failures)} file(s) could not be read", file=sys.stderr)


def check_output_path(path: str | None, flag: str = "--output") -> None:
    """Refuse an ``--output`` file that could not be written, before any work is done.

    Args:
        path: the JSON file to write at the end (None: no output, nothing to check).
        flag: the option name used in messages.
    Raises:
        UserError: ``path`` is an existing folder (or otherwise not a regular file), its folder
            does not exist or is not a folder, or that folder is not writable (the file is
            written atomically: a temporary file in the same folder, then renamed).
    """
    if not path:
        return
    target = Path(path).expanduser()
    if target.is_dir():
        raise UserError(f"{flag} {path} is a folder; give a file name for the JSON, e.g. {target / 'predictions.json'}")
    if target.exists() and not target.is_file():
        raise UserError(f"{flag} {path} exists and is not a regular file; give another file name for the JSON")
    folder = target.resolve().parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise UserError(f"{flag} {path}: the folder {folder} {what}; create it first or write elsewhere")
    try:  # a real probe (os.access says yes to root even on read-only file systems)
        fd, probe = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".probe", dir=folder)
    except OSError as exc:
        raise UserError(f"{flag} {path}: cannot write in the folder {folder} ({exc.strerror or exc}); "
                        "write elsewhere or fix its permissions") from None
    os.close(fd)
    os.unlink(probe)


class HeatmapWriter:
    """Writes the class-attention heatmaps of predict.py / infer.py into one folder.

    Per image: a PNG per reported class and one contact sheet (``deploy.heatmaps``), named
    after the image; two inputs with the same file stem get ``_2``, ``_3``... so none is
    overwritten.
    """

    def __init__(self, out_dir: str | os.PathLike[str], flag: str = "--heatmap_dir") -> None:
        from utils.fileio import prepare_output_dir

        self.out_dir = prepare_output_dir(Path(out_dir).expanduser(), flag)
        self._stems: dict[str, int] = {}

    def _stem(self, path: str) -> str:
        stem = Path(path).stem or "image"
        chosen, k = stem, 1
        while chosen in self._stems:  # a.jpg, a.png, a_2.jpg -> a, a_2, a_2_2: never a name already used
            k += 1
            chosen = f"{stem}_{k}"
        self._stems[chosen] = 1
        return chosen

    def write(self, path: str, maps: np.ndarray, scores: np.ndarray, chosen: Sequence[int], names: Sequence[str]) -> list[Path]:
        """Draw the maps [C, h, w] of the classes ``chosen`` over the image at ``path`` (read again, full size).

        Args:
            scores: the image's probabilities [C] (written in each picture's corner).
        Returns:
            the PNG paths written.
        """
        from deploy.heatmaps import write_image_heatmaps

        return write_image_heatmaps(self.out_dir, path, load_rgb(path), maps, scores, list(chosen), names, stem=self._stem(path))
