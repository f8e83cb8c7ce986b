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
* EXIF orientation is **not** applied (the reference does not apply it either), so a photo
  whose camera stored it rotated is read as stored.
* Multi-frame files (GIF, TIFF): the first frame.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from utils.errors import UserError

IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm",
)
"""File name endings (lower case) that :func:`list_images` treats as images."""

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


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


def load_rgb(path: str | Path) -> Image.Image:
    """Read an image file fully and return it as an 8-bit RGB PIL image.

    Equal to the reference's ``Image.open(path).convert("RGB")`` for every 8-bit mode
    (alpha dropped, no EXIF rotation); 16-bit greyscale is scaled rather than clipped (see
    the module docstring).

    Args:
        path: image file.
    Returns:
        PIL image, mode ``RGB``, size (width, height) as stored in the file. The file is
        closed before returning.
    Raises:
        UserError: the file is missing, is a folder, is not an image PIL can identify, or
            is truncated / corrupt. The message names the file and the reason.
    """
    p = Path(path)
    try:
        with Image.open(p) as img:
            img.load()
            rgb = to_rgb(img)
            # Closing the file also invalidates ``img``: return an independent copy.
            return rgb.copy() if rgb is img else rgb
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
        raise UserError(
            f"cannot read image {p}: not an image format PIL recognises "
            f"(empty, corrupt or not an image; supported endings: {', '.join(IMAGE_EXTENSIONS)})"
        ) from None
    except Image.DecompressionBombError as exc:
        raise UserError(
            f"refusing to read image {p}: {exc} (raise PIL.Image.MAX_IMAGE_PIXELS if the file "
            f"is trusted)"
        ) from None
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
