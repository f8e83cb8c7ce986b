"""Drawing CSRA class maps over images: upsampling, colouring, labels, contact sheets, files.

The maps come from ``models.csra`` (``ClassMaps.combined`` [B, C, h, w], converted to NumPy by
the caller). The model saw the whole image resized to a square (no crop), so a map [h, w]
covers the whole image and is stretched straight to the image's own size (W, H).

Per image, :func:`write_image_heatmaps` writes ``<stem>__<class>.png`` for each chosen class
(the class's map as a colour overlay, labelled ``name score``) and ``<stem>__sheet.png`` (the
image and those overlays side by side; with no class chosen, the image alone, labelled
"no class above threshold"). Every file is written atomically.

NumPy, Pillow and matplotlib's colour maps only (no Paddle; pyplot is never imported).
"""
from __future__ import annotations

import functools
import hashlib
import math
import re
import unicodedata
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from utils.errors import UserError
from utils.fileio import atomic_write
from utils.logger import get_logger

__all__ = ["NO_CLASS_TEXT", "contact_sheet", "normalise_map", "render_overlay", "safe_file_part", "upsample_map",
           "write_image_heatmaps"]

log = get_logger("heatmaps")

NO_CLASS_TEXT = "no class above threshold"
SHEET_SUFFIX = "sheet"
_MAX_CLASS_PART = 80  # characters of a class name kept in a file name
_MAX_STEM_BYTES = 150  # leaves room for "__<class>.png" under the usual 255-byte name limit
_SHEET_GAP = 4  # pixels between tiles of a contact sheet
_SHEET_BACKGROUND = (24, 24, 24)


def upsample_map(m: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize of a map.

    Args:
        m: [h, w] numbers (any real dtype).
        width, height: the output size (positive).
    Returns:
        [height, width] float32; each map cell covers an equal share of the output (pixel centres aligned).
    """
    m = np.asarray(m)
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"a class map must be a non-empty 2-D array [h, w], got shape {m.shape}")
    if width < 1 or height < 1:
        raise ValueError(f"the output size must be positive, got {width} x {height}")
    image = Image.fromarray(np.ascontiguousarray(m, dtype=np.float32))  # mode "F"
    return np.asarray(image.resize((int(width), int(height)), Image.Resampling.BILINEAR), dtype=np.float32)


def normalise_map(m: np.ndarray) -> np.ndarray:
    """Min-max scale one map to [0, 1].

    Args:
        m: [h, w] numbers.
    Returns:
        [h, w] float32 in [0, 1]; a constant map gives zeros and non-finite entries give 0 (never NaN).
    """
    m = np.asarray(m, dtype=np.float32)
    finite = np.isfinite(m)
    out = np.zeros(m.shape, dtype=np.float32)
    if not finite.any():
        return out
    lo, hi = float(m[finite].min()), float(m[finite].max())
    if not hi > lo:
        return out
    out[finite] = (m[finite] - lo) / (hi - lo)
    return np.clip(out, 0.0, 1.0)


@functools.lru_cache(maxsize=8)
def _colour_table(cmap: str) -> np.ndarray:
    """matplotlib colour map ``cmap`` as a [256, 3] uint8 lookup table."""
    import matplotlib  # lazily: only drawing needs it; colormaps do not touch pyplot or a backend

    try:
        colour_map = matplotlib.colormaps[cmap]
    except KeyError:
        raise UserError(f"colour map {cmap!r} is not a matplotlib colour map; use a perceptual one such as "
                        f"inferno, magma, viridis or turbo") from None
    return np.round(colour_map(np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.uint8)


def _font(image_size: tuple[int, int]) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """PIL's default font at a size that suits an image of ``image_size`` (W, H)."""
    size = max(10, min(96, round(min(image_size) / 18)))
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ValueError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _draw_label(image: Image.Image, text: str) -> Image.Image:
    """``image`` (RGB) with ``text`` in white on a dark box in its top-left corner (clipped on tiny images)."""
    font = _font(image.size)
    pad = max(1, round(getattr(font, "size", 10) / 5))
    layer = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    try:
        box = draw.textbbox((pad, pad), text, font=font)
    except UnicodeEncodeError:  # the bitmap fallback font knows Latin-1 only
        text = text.encode("ascii", "replace").decode("ascii")
        box = draw.textbbox((pad, pad), text, font=font)
    draw.rectangle((0, 0, box[2] + pad, box[3] + pad), fill=(0, 0, 0, 170))
    draw.text((pad, pad), text, font=font, fill=(255, 255, 255, 255))
    return Image.alpha_composite(image.convert("RGBA"), layer).convert("RGB")


def render_overlay(image: Image.Image, class_map: np.ndarray, label: str, score: float, alpha: float = 0.5,
                   cmap: str = "inferno") -> Image.Image:
    """One class map as a colour overlay on the image, labelled ``"<label> <score>"``.

    Args:
        image: the input image (any PIL mode; drawn as RGB), size (W, H).
        class_map: [h, w] map covering the whole image (min-max normalised here, then stretched to (W, H)).
        label: the class name; score: its probability, printed with 2 decimals (``dog 0.93``).
        alpha: weight of the colours (0 = the image, 1 = the colours only).
        cmap: a matplotlib colour map name (low values dark, high values bright for ``inferno``).
    Returns:
        an RGB image of size (W, H).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    rgb = image.convert("RGB")
    width, height = rgb.size
    heat = np.clip(upsample_map(normalise_map(class_map), width, height), 0.0, 1.0)
    colours = _colour_table(cmap)[np.round(heat * 255).astype(np.intp)].astype(np.float32)  # [H, W, 3]
    pixels = np.asarray(rgb, dtype=np.float32)
    blended = np.clip(np.round((1.0 - alpha) * pixels + alpha * colours), 0, 255).astype(np.uint8)
    return _draw_label(Image.fromarray(blended), f"{label} {score:.2f}")


def contact_sheet(tiles: Sequence[Image.Image], columns: int | None = None, tile_height: int = 256) -> Image.Image:
    """Tiles side by side on a dark background, in rows of ``columns``.

    Args:
        tiles: at least one image; each is resized to ``tile_height`` keeping its aspect ratio.
        columns: tiles per row; None = all in one row up to 6 tiles, else ceil(sqrt(n)).
        tile_height: the height of every tile in pixels (positive).
    Returns:
        an RGB image: width = the widest row (tile widths + 4 px gaps), height = rows * tile_height + gaps.
    """
    if not tiles:
        raise ValueError("contact_sheet needs at least one tile")
    if tile_height < 1:
        raise ValueError(f"tile_height must be positive, got {tile_height}")
    n = len(tiles)
    if columns is None:
        columns = n if n <= 6 else math.ceil(math.sqrt(n))
    columns = max(1, min(int(columns), n))
    resized = [
        tile.convert("RGB").resize((max(1, round(tile.width * tile_height / tile.height)), tile_height),
                                   Image.Resampling.BILINEAR)
        for tile in tiles
    ]
    rows = [resized[i:i + columns] for i in range(0, n, columns)]
    width = max(sum(t.width for t in row) + _SHEET_GAP * (len(row) - 1) for row in rows)
    height = len(rows) * tile_height + _SHEET_GAP * (len(rows) - 1)
    sheet = Image.new("RGB", (width, height), _SHEET_BACKGROUND)
    for r, row in enumerate(rows):
        x = 0
        for tile in row:
            sheet.paste(tile, (x, r * (tile_height + _SHEET_GAP)))
            x += tile.width + _SHEET_GAP
    return sheet


def safe_file_part(name: str) -> str:
    """A class name as file-name-safe text: ASCII letters, digits, ``.``, ``-``, ``_`` only.

    Accents are dropped (``café`` -> ``cafe``), other characters and runs of them become one
    ``_`` (``traffic light/red`` -> ``traffic_light_red``), leading/trailing ``.``/``_`` go, and
    the result is at most 80 characters. A name with nothing left (``狗``, ``..``) becomes
    ``x`` + 8 hex digits of its hash, so it is never empty and stable across runs.
    """
    ascii_text = unicodedata.normalize("NFKD", str(name)).encode("ascii", "ignore").decode("ascii")
    part = re.sub(r"[^A-Za-z0-9._-]+", "_", ascii_text).strip("._")[:_MAX_CLASS_PART].strip("._")
    if not part:
        part = "x" + hashlib.blake2s(str(name).encode("utf-8"), digest_size=4).hexdigest()
    return part


def _safe_stem(stem: str) -> str:
    """An image stem usable as a file-name prefix: path separators replaced, length bounded, never empty."""
    stem = re.sub(r"[/\\\x00]", "_", stem)
    if not stem.strip("."):
        return "image"
    encoded = stem.encode("utf-8")
    if len(encoded) > _MAX_STEM_BYTES:
        stem = encoded[:_MAX_STEM_BYTES].decode("utf-8", "ignore")
    return stem


def _save_png(path: Path, image: Image.Image) -> Path:
    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def write_image_heatmaps(out_dir: str | Path, image_path: str, image: Image.Image, maps: np.ndarray,
                         scores: np.ndarray, classes: Sequence[int], names: Sequence[str],
                         stem: str | None = None) -> list[Path]:
    """Write one image's class overlays and its contact sheet as PNGs (each atomically).

    Args:
        out_dir: the output folder (created if missing).
        image_path: the image's file; its stem names the outputs unless ``stem`` is given.
        image: the image as read (``datasets.image_io.load_rgb``), size (W, H).
        maps: [C, h, w] class maps of this image (e.g. ``ClassMaps.combined[b]``).
        scores: [C] the classes' scores (probabilities), printed on the overlays.
        classes: indices (0..C-1) of the classes to draw, in the order wanted on the sheet.
        names: [C] class names.
        stem: file-name prefix instead of the image's stem. Two inputs with the same stem
            (``a/img.jpg``, ``b/img.jpg``) would overwrite each other's files in one run: the
            caller passes distinct stems then (e.g. ``img_1``). Path separators in it become ``_``.
    Returns:
        the written paths: ``<stem>__<class>.png`` per class of ``classes`` (``safe_file_part`` of its
        name; ``_c<index>`` is appended when two drawn names give the same text or the text is
        ``sheet``), then ``<stem>__sheet.png`` (the image and the overlays; with no class, the image
        labelled "no class above threshold").
    """
    maps = np.asarray(maps)
    scores = np.asarray(scores).reshape(-1)
    if maps.ndim != 3:
        raise ValueError(f"maps must be [C, h, w], got shape {maps.shape}")
    num_classes = maps.shape[0]
    if scores.shape[0] != num_classes or len(names) != num_classes:
        raise ValueError(f"{num_classes} maps but {scores.shape[0]} scores and {len(names)} class names")
    bad = [c for c in classes if not 0 <= int(c) < num_classes]
    if bad:
        raise ValueError(f"class indices {bad} are outside 0..{num_classes - 1}")

    folder = Path(out_dir)
    prefix = _safe_stem(stem if stem is not None else Path(image_path).stem)
    parts = [safe_file_part(names[int(c)]) for c in classes]
    clashes = {p for p in parts if parts.count(p) > 1 or p == SHEET_SUFFIX}
    parts = [f"{p}_c{int(c)}" if p in clashes else p for p, c in zip(parts, classes)]

    rgb = image.convert("RGB")
    written: list[Path] = []
    overlays: list[Image.Image] = []
    for c, part in zip(classes, parts):
        c = int(c)
        overlay = render_overlay(rgb, maps[c], names[c], float(scores[c]))
        written.append(_save_png(folder / f"{prefix}__{part}.png", overlay))
        overlays.append(overlay)
    tiles = [rgb, *overlays] if overlays else [_draw_label(rgb, NO_CLASS_TEXT)]
    sheet = contact_sheet(tiles, tile_height=min(256, rgb.height))
    written.append(_save_png(folder / f"{prefix}__{SHEET_SUFFIX}.png", sheet))
    log.debug("%s: %d class maps written to %s", image_path, len(overlays), folder)
    return written
