"""Choosing the Paddle device of a run (``auto``, ``cpu`` or ``gpu``)."""
from __future__ import annotations

from engine.config import DEVICES
from utils.errors import UserError


def select_device(name: str) -> str:
    """Make ``name`` Paddle's current device.

    Args:
        name: ``auto`` (a GPU when Paddle has CUDA and sees one, else the CPU), ``cpu`` or ``gpu``.
    Returns:
        ``"cpu"`` or ``"gpu"``, the device now in use.
    Raises:
        UserError: ``gpu`` on a Paddle build without CUDA or without a visible GPU (``--device gpu``),
            or an unknown name.
    """
    import paddle

    if name not in DEVICES:
        raise UserError(f"--device {name}: choose auto, cpu or gpu")
    has_gpu = paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if name == "gpu" and not has_gpu:
        raise UserError("--device gpu: this Paddle build has no CUDA or no GPU is visible; use --device cpu")
    device = "gpu" if (name == "gpu" or (name == "auto" and has_gpu)) else "cpu"
    paddle.set_device(device)
    return device
