"""Reading images from disk as 8-bit RGB, with readable errors.

Every image the project reads (training, evaluation, prediction, Paddle-Inference) goes
through :func:`load_rgb`, so that all entry points see the same pixels.

Conversion policy (kept equal to the reference, which opens a file with PIL and calls
``convert("RGB")``):

* ``RGB``, ``L``, ``1``, ``P``, ``CMYK``, ``YCbCr``: PIL's own ``convert("RGB")``.
* ``RGBA``, ``LA``, ``PA`` and palette images with a transparency entry: the alpha channel /
  transparency is **dropped**, not composited on a background (what ``convert("RGB")`` does).
* 16-bit and 32-bit integer greyscale (``I;16*``, ``I``): scaled to 8 bit with
  ``round(v / 257)`` (0 -> 0, 65535 -> 255), values clipped to [0, 65535] first. Here the
  project deliberately differs from the reference: PIL's ``convert`` clips those values at
  255, which turns almost every 16-bit pixel white.
* ``F`` (32-bit float): clipped to [0, 255] and rounded.
* EXIF orientation **is** applied: a photo whose camera stored it rotated or mirrored
  (orientation tag 2..8, e.g. 6 for a phone held upright) is turned upright, exactly as
  ``PIL.ImageOps.exif_transpose`` would, so training, validation, predict.py and infer.py
  all see what an image viewer shows. Here the project deliberately differs from the
  reference, which ignores the tag and scores the raw, rotated pixels. A damaged EXIF block
  is ignored (the pixels are read as stored). Bounding boxes in a dataset JSON are applied
  to the upright image.
* Multi-frame files (GIF, TIFF): the first frame.

Pixel limit (decompression bombs): a small file can declare a huge image (a 420 KB PNG
can decode to 12000 x 12000 = 144 million pixels, 1.5 GB). :func:`load_rgb` checks the
size from the file header, right after ``Image.open`` and before decoding, and refuses
images with more than :func:`max_image_pixels` pixels: the value given to
:func:`set_max_image_pixels` (the scripts' ``--max_image_pixels`` flag), else the
environment variable ``CSRA_MAX_IMAGE_PIXELS``, else :data:`DEFAULT_MAX_IMAGE_PIXELS`
(89,478,485, PIL's own warning threshold); 0 means no limit. So that only
this limit decides (PIL would otherwise warn above its own ``Image.MAX_IMAGE_PIXELS`` and
raise above twice that, whatever ``--max_image_pixels`` says), :func:`load_rgb` sets PIL's
global ``Image.MAX_IMAGE_PIXELS`` to the same limit (None for 0) only while it reads a file,
restoring the previous value afterwards, and silences PIL's ``DecompressionBombWarning``
there. PIL's check is kept rather than switched off because some formats decode part of
the file while opening it or learn the real size only while decoding (an ICO's embedded
PNG, TIFF tiles): PIL refuses those above twice the limit, and :func:`load_rgb` checks the
size again after decoding. Code outside :func:`load_rgb` keeps PIL's own setting, except
other threads that use PIL during those moments.
"""
from __future__ import annotations

import contextlib
import os
import re
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from utils.errors import UserError

IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm",
)
"""File name endings (lower case) that :func:`list_images` treats as images."""

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")

DEFAULT_MAX_IMAGE_PIXELS: int = 89_478_485
"""Default pixel limit of :func:`load_rgb`: PIL's DecompressionBombWarning threshold
(``1024 * 1024 * 1024 // 4 // 3``, a 256 MiB RGBA image)."""

MAX_IMAGE_PIXELS_ENV = "CSRA_MAX_IMAGE_PIXELS"
"""Environment variable overriding :data:`DEFAULT_MAX_IMAGE_PIXELS` (0 = no limit)."""

_max_pixels_override: int | None = None

# EXIF orientation tag (0x0112) -> the transposition that makes the image upright, the
# table of PIL.ImageOps.exif_transpose.
_ORIENTATION_TAG = 0x0112
_EXIF_TRANSPOSE: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def set_max_image_pixels(n: int | None) -> None:
    """Set the pixel limit of :func:`load_rgb` for this process (and forked workers).

    Args:
        n: the largest ``width * height`` accepted; 0 means no limit; None goes back to
            ``$CSRA_MAX_IMAGE_PIXELS``, else :data:`DEFAULT_MAX_IMAGE_PIXELS`.
    Returns:
        None. Spawned processes do not inherit it: set the environment variable for them
        (``cli.args.apply_image_limit`` does both).
    Raises:
        ValueError: ``n`` is not None or an integer >= 0.
    """
    global _max_pixels_override
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 0):
        raise ValueError(f"max image pixels must be an integer >= 0 (0 = no limit) or None, got {n!r}")
    _max_pixels_override = n


def max_image_pixels() -> int:
    """The pixel limit :func:`load_rgb` applies now.

    Returns:
        the value given to :func:`set_max_image_pixels` if any, else
        ``$CSRA_MAX_IMAGE_PIXELS`` if set and not empty, else
        :data:`DEFAULT_MAX_IMAGE_PIXELS`; 0 means no limit.
    Raises:
        UserError: the environment variable is not an integer >= 0.
    """
    if _max_pixels_override is not None:
        return _max_pixels_override
    text = os.environ.get(MAX_IMAGE_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise UserError(
            f"environment variable {MAX_IMAGE_PIXELS_ENV}={text!r} is not a whole number >= 0: set "
            f"it to the largest number of pixels (width x height) to accept, 0 for no limit, or "
            f"unset it for the default {DEFAULT_MAX_IMAGE_PIXELS:,}"
        )
    return value


_pil_lock = threading.Lock()
_pil_users = 0
_pil_saved: int | None = None


@contextlib.contextmanager
def _pil_limit(limit: int) -> Iterator[None]:
    """Make PIL's own checks use our limit (``Image.MAX_IMAGE_PIXELS = limit``, None for 0)
    for the duration of the block, then restore the previous value.

    PIL then raises ``DecompressionBombError`` above twice our limit, also for sizes it only
    learns while decoding (an ICO's embedded PNG, decoded inside ``Image.open`` itself; TIFF
    tiles; GIF frames), and warns above it (silenced by the caller, whose own check refuses
    those). Reference-counted, so overlapping calls from several threads restore the value
    when the last one leaves.
    """
    global _pil_users, _pil_saved
    with _pil_lock:
        if _pil_users == 0:
            _pil_saved = Image.MAX_IMAGE_PIXELS
        _pil_users += 1
        Image.MAX_IMAGE_PIXELS = limit or None
    try:
        yield
    finally:
        with _pil_lock:
            _pil_users -= 1
            if _pil_users == 0:
                Image.MAX_IMAGE_PIXELS = _pil_saved


def _too_many_pixels(path: Path, what: str, limit: int) -> UserError:
    """The error for an image above the pixel limit; ``what`` describes its size."""
    return UserError(
        f"refusing to read image {path}: it is {what}, more than the limit of {limit:,} pixels "
        f"(a guard against decompression bombs: small files that decode to huge images). If "
        f"the image is genuine, raise the limit with --max_image_pixels N or the environment "
        f"variable {MAX_IMAGE_PIXELS_ENV}=N (0 = no limit), or shrink the image"
    )


def _check_pixels(path: Path, size: tuple[int, int], limit: int) -> None:
    """Raise :class:`UserError` if an image of ``size`` (width, height) has more than
    ``limit`` pixels (0 = no limit)."""
    width, height = size
    if limit and width * height > limit:
        raise _too_many_pixels(path, f"{width} x {height} = {width * height:,} pixels", limit)


def _exif_transposition(img: Image.Image) -> Image.Transpose | None:
    """The transposition making ``img`` upright per its EXIF orientation tag (None: as stored).

    A missing, unknown or unreadable tag counts as "as stored": EXIF is metadata, and a
    damaged block must not make the pixels unreadable.
    """
    try:
        orientation = img.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 - any parse failure of the EXIF block: ignore the tag
        return None
    return _EXIF_TRANSPOSE.get(orientation) if isinstance(orientation, int) else None


def _scale_wide_grey(img: Image.Image) -> Image.Image:
    """Scale a 16/32-bit integer or float greyscale image to an 8-bit RGB image.

    Args:
        img: PIL image in mode ``I;16*``, ``I`` or ``F``.
    Returns:
        PIL image in mode ``RGB`` (three equal channels), same size.
    """
    arr = np.asarray(img)
    if img.mode == "F":
        grey = np.clip(np.rint(arr.astype(np.float64)), 0, 255).astype(np.uint8)
    else:
        wide = np.clip(arr.astype(np.int64), 0, 65535)
        # round(v / 257) in integers: 65535 / 257 == 255 exactly.
        grey = ((wide * 2 + 257) // 514).astype(np.uint8)
    return Image.fromarray(grey, mode="L").convert("RGB")


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert an already opened PIL image to mode ``RGB`` with the module's policy.

    Args:
        img: PIL image of any mode PIL can open.
    Returns:
        PIL image in mode ``RGB`` (uint8 per channel), same size. ``img`` itself when it is
        already RGB.
    """
    if img.mode == "RGB":
        return img
    if img.mode in _SIXTEEN_BIT_MODES or img.mode == "F":
        return _scale_wide_grey(img)
    with warnings.catch_warnings():
        # PIL warns that palette transparency given as bytes "should be converted to RGBA";
        # dropping it is the documented policy, so the warning is noise here.
        warnings.simplefilter("ignore", UserWarning)
        return img.convert("RGB")


def _decode(path: Path, img: Image.Image, limit: int) -> Image.Image:
    """Check, decode, upright and convert an image just opened by ``Image.open``.

    Args:
        path: the file (for messages).
        img: the opened, not yet decoded image.
        limit: pixel limit (0 = none).
    Returns:
        an RGB image independent of the file (safe to use after it is closed).
    Raises:
        UserError: more pixels than ``limit`` (from the header, before decoding; again
            after decoding, for formats whose decoded size can differ from the header).
    """
    _check_pixels(path, img.size, limit)
    img.load()
    _check_pixels(path, img.size, limit)
    transposition = _exif_transposition(img)
    rgb = to_rgb(img)
    if transposition is not None:
        return rgb.transpose(transposition)  # a new image
    # Closing the file also invalidates ``img``: return an independent copy.
    return rgb.copy() if rgb is img else rgb


def _is_empty(path: Path) -> bool:
    """True when ``path`` is a file of 0 bytes."""
    try:
        return path.stat().st_size == 0
    except OSError:
        return False


def load_rgb(path: str | Path) -> Image.Image:
    """Read an image file fully and return it as an 8-bit RGB PIL image.

    Equal to the reference's ``Image.open(path).convert("RGB")`` for every 8-bit mode
    (alpha dropped) stored upright; unlike the reference, the EXIF orientation is applied,
    and 16-bit greyscale is scaled rather than clipped (see the module docstring).

    Args:
        path: image file.
    Returns:
        PIL image, mode ``RGB``, upright: size (width, height) as stored in the file, or
        (height, width) when the EXIF orientation is a quarter turn (5..8). The file is
        closed before returning.
    Raises:
        UserError: the file is missing, is a folder, is not an image PIL can identify, is
            truncated / corrupt, or has more pixels than :func:`max_image_pixels` (checked
            from the header, before decoding). The message names the file and the reason.
    """
    p = Path(path)
    limit = max_image_pixels()
    try:
        with _pil_limit(limit), warnings.catch_warnings():
            # PIL warns between its limit (now ours) and twice it, where our check refuses.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(p) as img:
                return _decode(p, img, limit)
    except FileNotFoundError:
        raise UserError(
            f"image not found: {p} (check the path; relative paths are resolved against "
            f"the current directory {Path.cwd()})"
        ) from None
    except IsADirectoryError:
        raise UserError(f"expected an image file but {p} is a folder") from None
    except PermissionError:
        raise UserError(f"cannot read image {p}: permission denied") from None
    except UnidentifiedImageError:
        if _is_empty(p):
            raise UserError(
                f"cannot read image {p}: the file is empty (0 bytes); re-download or re-export it, "
                f"or remove it from the dataset"
            ) from None
        raise UserError(
            f"cannot read image {p}: not an image format PIL recognises "
            f"(empty, corrupt or not an image; supported endings: {', '.join(IMAGE_EXTENSIONS)})"
        ) from None
    except Image.DecompressionBombError as exc:  # PIL's check: more than twice our limit
        found = re.search(r"\((\d+) pixels\)", str(exc))
        raise _too_many_pixels(p, f"{int(found[1]):,} pixels" if found else f"too large ({exc})", limit) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise UserError(
            f"cannot read image {p}: the file is truncated or corrupt ({exc}); "
            f"re-download or re-export it, or remove it from the dataset"
        ) from None


def list_images(folder: str | Path) -> list[Path]:
    """List the image files directly inside a folder (not recursive).

    Args:
        folder: folder to scan.
    Returns:
        paths of regular files whose ending is in :data:`IMAGE_EXTENSIONS` (compared case
        insensitively), sorted by file name. Hidden files (name starting with ".", e.g.
        macOS ``._x.jpg`` side files) are skipped.
    Raises:
        UserError: the folder is missing, is not a folder, or holds no image.
    """
    d = Path(folder)
    if not d.exists():
        raise UserError(f"image folder not found: {d}")
    if not d.is_dir():
        raise UserError(f"expected a folder of images but {d} is a file")
    found = sorted(
        (f for f in d.iterdir()
         if f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith(".") and f.is_file()),
        key=lambda f: f.name,
    )
    if not found:
        raise UserError(
            f"no images in {d} (looked for files ending in {', '.join(IMAGE_EXTENSIONS)}, "
            f"any case; sub-folders are not searched)"
        )
    return found
