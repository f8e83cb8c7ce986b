"""int8 post-training quantisation of an export (``export_model.py --quantize int8``).

The fp32 ``model.onnx`` (paddle2onnx) is quantised statically with ONNX Runtime's tools:
``quant_pre_process`` folds BatchNorm into the convolutions first (so the folded weights are
what gets quantised), then ``quantize_static`` calibrates the activation ranges on real
images (MinMax over ``--calib_images`` images of ``--calib_dir``, preprocessed exactly as
infer.py preprocesses, with the export's size and mean/std) and writes ``model_int8.onnx``:
QDQ format, int8 weights per output channel, uint8 activations. infer.py runs it with
``--precision int8`` (``onnxruntime`` backend).

Why ONNX Runtime and not Paddle's own PTQ: Paddle 3.3's ``PostTrainingQuantization``
(``paddle.static.quantization``) works on legacy programs; on the ``inference.json`` programs
that Paddle 3.3 exports it fails while loading them (an assertion in its variable lookup),
and Paddle 3.3 cannot write the legacy format; see docs/inference_profile.md.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from utils.errors import UserError
from utils.logger import get_logger

log = get_logger("export")

QUANTIZE_CHOICES: tuple[str, ...] = ("int8",)
QUANTIZE_TOOLS: tuple[str, ...] = ("paddle2onnx", "onnx", "onnxruntime", "ml_dtypes")
"""Modules ``--quantize int8`` needs (all in requirements-onnx.txt)."""
DEFAULT_CALIB_IMAGES = 32


def quantize_tools_missing() -> list[str]:
    """Modules ``--quantize int8`` needs that are not installed (empty when all are)."""
    return [name for name in QUANTIZE_TOOLS if importlib.util.find_spec(name) is None]


def check_quantize_request(quantize: str | None, calib_dir: str | None, calib_images: int | None) -> None:
    """Refuse an impossible ``--quantize`` request before anything is exported (cheap: no paddle import).

    Args:
        quantize: None or ``int8``.
        calib_dir: folder of calibration images (required with ``--quantize``).
        calib_images: how many of them to use (None: the default).
    Raises:
        UserError: calibration flags without ``--quantize``, an unknown scheme, no/missing/empty
            calibration folder, or the ONNX tools not installed.
    """
    if quantize is None:
        if calib_dir is not None or calib_images is not None:
            raise UserError("--calib_dir/--calib_images only apply with --quantize int8: add --quantize int8, or drop them")
        return
    if quantize not in QUANTIZE_CHOICES:
        raise UserError(f"--quantize {quantize}: choose one of {', '.join(QUANTIZE_CHOICES)}")
    if not calib_dir:
        raise UserError("--quantize int8 needs --calib_dir DIR: a folder of representative images (e.g. some training "
                        "images) to calibrate the int8 ranges on")
    calibration_images(calib_dir, calib_images or DEFAULT_CALIB_IMAGES)
    missing = quantize_tools_missing()
    if missing:
        raise UserError(f"--quantize int8 needs {' and '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
                        "installed: run `pip install -r requirements-onnx.txt`, or export without --quantize")


def calibration_images(calib_dir: str, count: int) -> list[str]:
    """``count`` images of ``calib_dir`` (not recursive), spread evenly over its sorted file names.

    Returns:
        the chosen paths (all of them when the folder holds fewer than ``count``).
    Raises:
        UserError: the folder is missing, not a folder, or holds no image.
    """
    from datasets.image_io import list_images

    folder = Path(calib_dir)
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "not found"
        raise UserError(f"--calib_dir {calib_dir} {what}: give a folder of calibration images (e.g. training images)")
    try:
        found = list_images(folder)
    except UserError:
        raise UserError(f"--calib_dir {calib_dir} holds no image (.jpg, .png, ...): give a folder of calibration images") from None
    if len(found) <= count:
        return [str(p) for p in found]
    step = len(found) / count
    return [str(found[int(i * step)]) for i in range(count)]


def load_calibration_batch(paths: Sequence[str], img_size: int, mean: Sequence[float], std: Sequence[float]) -> list[Any]:
    """Preprocess the calibration images exactly as infer.py does (``load_rgb`` -> ``preprocess``).

    Returns:
        float32 arrays [1, 3, S, S], one per readable image (unreadable ones are skipped with a warning).
    Raises:
        UserError: none of the images could be read.
    """
    from datasets.image_io import load_rgb
    from datasets.transforms import preprocess

    arrays = []
    for path in paths:
        try:
            arrays.append(preprocess(load_rgb(path), img_size, mean, std)[None])
        except UserError as exc:
            log.warning("calibration: skipped %s (%s)", path, exc)
    if not arrays:
        raise UserError(f"none of the {len(paths)} calibration images could be read; give a --calib_dir with readable images")
    return arrays


def quantize_int8(onnx_file: str | Path, out_file: str | Path, images: Sequence[str], input_name: str, img_size: int,
                  mean: Sequence[float], std: Sequence[float]) -> dict[str, Any]:
    """Statically quantise ``onnx_file`` to int8, calibrated on ``images``; writes ``out_file`` atomically.

    Args:
        onnx_file: the fp32 ONNX model (input ``input_name`` float32 [N, 3, S, S]).
        out_file: the int8 model to write.
        images: calibration image paths (unreadable ones are skipped with a warning).
        input_name, img_size, mean, std: the export's input and preprocessing (inference.yml).
    Returns:
        the record stored under ``int8`` in inference.yml (file name, runtime, scheme, images used).
    Raises:
        UserError: no calibration image could be read, or the quantiser failed.
    """
    arrays = load_calibration_batch(images, img_size, mean, std)  # before any work: unreadable images fail fast
    import onnxruntime
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    onnxruntime.set_default_logger_severity(3)  # its graph clean-up warnings are about paddle2onnx's unused constants

    class Reader(CalibrationDataReader):
        """Feeds the calibration images one at a time as ``{input_name: float32 [1, 3, S, S]}``."""

        def __init__(self) -> None:
            self.items = iter(arrays)

        def get_next(self) -> dict[str, Any] | None:
            item = next(self.items, None)
            return None if item is None else {input_name: item}

    dest = Path(out_file)
    tmp = Path(tempfile.mkdtemp(prefix=".quantize-", dir=dest.parent))
    t0 = time.perf_counter()
    try:
        prepared = tmp / "prepared.onnx"
        try:
            quant_pre_process(str(onnx_file), str(prepared), skip_symbolic_shape=True)
            quantize_static(str(prepared), str(tmp / dest.name), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            reduce_range=False, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax)
        except Exception as exc:
            raise UserError(f"int8 quantisation of {onnx_file} failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                            "the fp32 export is fine, only the int8 model is missing") from None
        os.replace(tmp / dest.name, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("int8 model calibrated on %d image(s) in %.0f s: %s", len(arrays), time.perf_counter() - t0, dest)
    return {"file": dest.name, "runtime": "onnxruntime", "onnxruntime_version": onnxruntime.__version__,
            "format": "QDQ", "weights": "int8 per output channel", "activations": "uint8",
            "calibration": "MinMax", "calib_images": len(arrays),
            "calib_dir": str(Path(images[0]).parent.resolve()) if images else None}
