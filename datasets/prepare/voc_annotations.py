"""Reading PASCAL VOC-style annotations and turning them into label vectors.

Label encoding (one value per class, as the reference's JSON splits):

* start at -1 (absent);
* 1 if the image has at least one non-difficult object of the class;
* 0 if every object of the class in the image is marked difficult.

Training splits use the binary form (-1 becomes 0); test splits keep 1 / -1 / 0 so that the
evaluation can ignore difficult classes.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Sequence

from tqdm import tqdm

from datasets.prepare.common import format_img_path
from utils.errors import UserError
from utils.logger import get_logger

log = get_logger("prepare")

VOC_LAYOUT_HINT = ("<VOC folder>/Annotations/<id>.xml, <VOC folder>/JPEGImages/<id>.jpg and "
                   "<VOC folder>/ImageSets/Main/{train,val,test}.txt (one image id per line), "
                   "where <VOC folder> is e.g. VOCdevkit/VOC2007")

POSITIVE, DIFFICULT, NEGATIVE = 1, 0, -1


def resolve_voc_dir(data_path: str | os.PathLike[str], year: int) -> Path:
    """Find the ``VOC<year>`` folder from the user's ``--data_path``.

    Args:
        data_path: the ``VOCdevkit`` folder, or the ``VOC<year>`` folder itself.
        year: the VOC edition (2007 or 2012), naming the sub-folder.
    Returns:
        the folder holding ``Annotations`` (built from ``data_path`` as given, not resolved).
    Raises:
        UserError: if neither ``data_path/VOC<year>`` nor ``data_path/Annotations`` exists.
    """
    root = Path(data_path)
    if not root.is_dir():
        raise UserError(f"--data_path {root} does not exist; pass the VOCdevkit folder "
                        f"(it must contain VOC{year}/Annotations, VOC{year}/JPEGImages and "
                        f"VOC{year}/ImageSets/Main)")
    candidate = root / f"VOC{year}"
    if candidate.is_dir():
        return candidate
    if (root / "Annotations").is_dir():
        log.info("%s has no VOC%d sub-folder but holds Annotations: using it as the VOC folder",
                 root, year)
        return root
    raise UserError(f"{candidate} does not exist; --data_path must be the VOCdevkit folder "
                    f"holding VOC{year}/ (expected {VOC_LAYOUT_HINT}); use --year for VOC2012")


def read_id_list(path: str | os.PathLike[str]) -> list[str]:
    """Read an ``ImageSets/Main/*.txt`` list of image ids.

    Only the first whitespace-separated token of each line is used (class-specific lists
    carry a second column); blank lines are ignored.

    Args:
        path: the list file.
    Returns:
        the image ids in file order.
    Raises:
        UserError: if the file is missing or unreadable.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise UserError(f"image list {p} does not exist (expected {VOC_LAYOUT_HINT})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read image list {p}: {exc}") from exc
    return [line.split()[0] for line in text.splitlines() if line.strip()]


def parse_voc_xml(xml_path: str | os.PathLike[str],
                  classes: Sequence[str] | None = None) -> dict[str, list[bool]]:
    """Read the objects of one VOC annotation file.

    Args:
        xml_path: an ``Annotations/<id>.xml`` file.
        classes: the allowed class names; ``None`` accepts any name (for class discovery).
    Returns:
        ``{class_name: [difficult flag of each object of that class]}``; classes without
        objects are absent. A missing ``<difficult>`` tag counts as not difficult.
    Raises:
        UserError: for malformed XML (with line and column), an object without ``<name>``,
            a ``<difficult>`` that is not 0/1, or a class not in ``classes``.
    """
    p = Path(xml_path)
    try:
        root = ET.parse(p).getroot()
    except ET.ParseError as exc:
        line, col = exc.position
        reason = _parse_error_reason(exc)
        raise UserError(f"{p}: malformed XML at line {line}, column {col + 1} ({reason}); "
                        "fix or regenerate this annotation") from exc
    except OSError as exc:
        raise UserError(f"cannot read {p}: {exc.strerror or exc}") from exc

    allowed = None if classes is None else set(classes)
    objects: dict[str, list[bool]] = {}
    for obj in root.findall("object"):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise UserError(f"{p}: an <object> has no <name>; every object needs a class name")
        if allowed is not None and name not in allowed:
            raise UserError(
                f"{p}: object class '{name}' is not in the class list "
                f"({len(allowed)} classes: {_preview(classes or [])}); pass --classes FILE "
                "with your own class names (one per line) or fix the annotation")
        raw = (obj.findtext("difficult") or "0").strip()
        if raw not in ("0", "1"):
            raise UserError(f"{p}: object '{name}' has <difficult>{raw}</difficult>; "
                            "expected 0 or 1")
        objects.setdefault(name, []).append(raw == "1")
    return objects


def encode_voc_labels(objects: dict[str, list[bool]], classes: Sequence[str],
                      binary: bool) -> list[int]:
    """Turn parsed objects into one label per class.

    Args:
        objects: the output of ``parse_voc_xml``.
        classes: class names in label-index order.
        binary: True for training splits (1 / 0), False for test splits (1 / -1 / 0).
    Returns:
        a list of ``len(classes)`` ints: 1 if any non-difficult object of the class exists,
        0 if all its objects are difficult, else -1 (or 0 when ``binary``).
    """
    labels: list[int] = []
    for name in classes:
        flags = objects.get(name)
        if not flags:
            value = NEGATIVE
        elif not all(flags):
            value = POSITIVE
        else:
            value = DIFFICULT
        labels.append(0 if binary and value == NEGATIVE else value)
    return labels


def locate_voc_files(voc_dir: str | os.PathLike[str], ids: Sequence[str], *,
                     source: str, skip_missing: bool = False,
                     image_exts: Sequence[str] = (".jpg",)) -> list[tuple[str, Path, Path]]:
    """Find the annotation and image file of every id.

    Args:
        voc_dir: the VOC folder (holding ``Annotations`` and ``JPEGImages``).
        ids: image ids, e.g. from ``read_id_list``.
        source: where the ids come from, used in messages (e.g. ``"ImageSets/Main/test.txt"``).
        skip_missing: skip ids with a missing file (one warning with the count) instead of
            raising.
        image_exts: image extensions tried in order (``.jpg`` for real VOC).
    Returns:
        ``[(id, xml_path, image_path), ...]`` for the ids whose files both exist.
    Raises:
        UserError: naming the first id with a missing file, unless ``skip_missing``.
    """
    root = Path(voc_dir)
    ann_dir, img_dir = root / "Annotations", root / "JPEGImages"
    found: list[tuple[str, Path, Path]] = []
    missing: list[tuple[str, Path]] = []
    for image_id in ids:
        xml_path = ann_dir / f"{image_id}.xml"
        if not xml_path.is_file():
            missing.append((image_id, xml_path))
            continue
        img_path = next((img_dir / f"{image_id}{ext}" for ext in image_exts
                         if (img_dir / f"{image_id}{ext}").is_file()), None)
        if img_path is None:
            missing.append((image_id, img_dir / f"{image_id}{image_exts[0]}"))
            continue
        found.append((image_id, xml_path, img_path))
    if missing:
        first_id, first_path = missing[0]
        if not skip_missing:
            others = f" ({len(missing) - 1} more ids lack files)" if len(missing) > 1 else ""
            raise UserError(f"image id '{first_id}' from {source} has no file {first_path}"
                            f"{others}; restore it, remove the id from the list, or pass "
                            "--skip_missing to leave such images out")
        log.warning("skipping %d of %d ids from %s whose annotation or image is missing "
                    "(first: '%s', %s)", len(missing), len(ids), source, first_id, first_path)
    return found


def build_voc_split(voc_dir: str | os.PathLike[str], ids: Sequence[str], classes: Sequence[str],
                    binary: bool, *, source: str = "the image list", skip_missing: bool = False,
                    absolute: bool = False,
                    image_exts: Sequence[str] = (".jpg",)) -> list[dict[str, Any]]:
    """Build one prepared split from a VOC folder.

    Args:
        voc_dir: the VOC folder as the user gave it; image paths are built from it.
        ids: image ids of the split, in output order.
        classes: class names in label-index order.
        binary: True for a training split (1 / 0), False for a test split (1 / -1 / 0).
        source: where the ids come from, used in messages.
        skip_missing: skip ids whose XML or image is missing instead of raising.
        absolute: store absolute image paths.
        image_exts: image extensions tried in order.
    Returns:
        ``[{"target": [...], "img_path": "..."}, ...]``.
    Raises:
        UserError: for missing files (unless ``skip_missing``) and bad annotations.
    """
    items = locate_voc_files(voc_dir, ids, source=source, skip_missing=skip_missing,
                             image_exts=image_exts)
    entries: list[dict[str, Any]] = []
    for _, xml_path, img_path in tqdm(items, desc=f"parse {source}", unit="img", disable=None):
        objects = parse_voc_xml(xml_path, classes)
        entries.append({"target": encode_voc_labels(objects, classes, binary),
                        "img_path": format_img_path(img_path, absolute)})
    return entries


def discover_voc_classes(xml_paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Collect every object class name used in some annotation files.

    Args:
        xml_paths: VOC annotation files.
    Returns:
        the distinct class names, sorted.
    Raises:
        UserError: for malformed annotations, or when no object is found at all.
    """
    names: set[str] = set()
    for xml_path in tqdm(xml_paths, desc="scan classes", unit="xml", disable=None):
        names.update(parse_voc_xml(xml_path, None))
    if not names:
        raise UserError("no <object> found in any annotation file; cannot discover the class "
                        "list (pass --classes FILE or check the Annotations folder)")
    return sorted(names)


def _parse_error_reason(exc: ET.ParseError) -> str:
    """ElementTree's message without its own ``line/column`` suffix."""
    msg = str(exc)
    return msg.split(": line ")[0] if ": line " in msg else msg


def _preview(names: Sequence[str], limit: int = 6) -> str:
    """``a, b, c, ...`` for messages."""
    shown = ", ".join(names[:limit])
    return shown + (", ..." if len(names) > limit else "")
