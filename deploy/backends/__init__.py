"""Inference backends of infer.py: a small registry.

Each backend is a module of this package with two functions,

* ``check(files, deploy, opts) -> None``: raise ``UserError`` when it cannot run this export
  with these settings (a missing file, an unsupported precision or device);
* ``create(files, deploy, opts) -> InferenceBackend``: the ready-to-run backend
  (``deploy.backends.base``),

plus one :class:`BackendEntry` in ``REGISTRY``. Adding a backend = a new module + an entry.
``--backend auto`` (the default) takes the first entry of ``AUTO_ORDER[precision]`` (or of the
model family's own CPU fp32 order, :func:`auto_order`) that is installed and accepts the
export, so a missing optional extra (onnxruntime) or an export without ``model.onnx`` falls
back to Paddle Inference without an error.
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any

from deploy.backends.base import InferenceBackend
from deploy.inference_config import DeployConfig, ModelFiles
from models.family import family_of_name
from utils.errors import UserError

ONNX_INSTALL_HINT = "pip install -r requirements-onnx.txt"


@dataclass(frozen=True)
class BackendEntry:
    """One registered backend.

    Attributes:
        name: the ``--backend`` value.
        module: the module holding ``check`` and ``create``.
        requires: Python modules it imports (all must be installed).
        install_hint: what to run when one is missing.
        summary: one line for ``--help`` and the docs.
    """

    name: str
    module: str
    requires: tuple[str, ...]
    install_hint: str
    summary: str


REGISTRY: dict[str, BackendEntry] = {
    entry.name: entry for entry in (
        BackendEntry("paddle", "deploy.backends.paddle_inference", ("paddle",), "pip install -r requirements.txt",
                     "Paddle Inference predictor (oneDNN on CPU; GPU/TensorRT on a CUDA build)"),
        BackendEntry("openvino", "deploy.backends.openvino_engine", ("paddle",), "pip install -r requirements.txt",
                     "Paddle Inference with its OpenVINO subgraph engine (legacy .pdmodel programs only)"),
        BackendEntry("onnxruntime", "deploy.backends.onnx_runtime", ("onnxruntime",), ONNX_INSTALL_HINT,
                     "ONNX Runtime CPU on the export's model.onnx (fp32) or model_int8.onnx (int8)"),
    )
}
AUTO = "auto"
BACKEND_CHOICES: tuple[str, ...] = (AUTO, *REGISTRY)
AUTO_ORDER: dict[str, tuple[str, ...]] = {
    # Measured on a 2-core AMD EPYC (AVX2), ResNet-101 + CSRA at 448, batch 1 (docs/inference_profile.md):
    # fp32 oneDNN and ONNX Runtime are within noise of each other, so the predictor every other
    # setting of infer.py (oneDNN on/off, IR passes, GPU) applies to comes first; int8 runs on ONNX Runtime only.
    "fp32": ("paddle", "onnxruntime"),
    "fp16": ("paddle",),
    "int8": ("onnxruntime",),
}


def missing_modules(name: str) -> list[str]:
    """The modules backend ``name`` needs that are not installed (empty when it is usable)."""
    return [m for m in REGISTRY[name].requires if importlib.util.find_spec(m) is None]


def installed_backends() -> list[str]:
    """Registered backends whose modules are installed, in registry order."""
    return [name for name in REGISTRY if not missing_modules(name)]


def _module(name: str) -> Any:
    return importlib.import_module(REGISTRY[name].module)


def _require_installed(name: str) -> None:
    missing = missing_modules(name)
    if missing:
        raise UserError(f"--backend {name} needs {' and '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
                        f"installed: run `{REGISTRY[name].install_hint}`, or choose another backend "
                        f"(--backend auto picks an installed one)")


def auto_order(deploy: DeployConfig, opts: Any) -> tuple[str, ...]:
    """The backends ``--backend auto`` tries, in order: Paddle on the GPU; on the CPU the model
    family's own fp32 order when it declares one (``BackboneFamily.cpu_fp32_backends``: ONNX
    Runtime first for ViT), else ``AUTO_ORDER[precision]``."""
    if opts.use_gpu:
        return ("paddle",)
    if opts.precision == "fp32":
        family = family_of_name(deploy.model)
        if family is not None and family.cpu_fp32_backends:
            return family.cpu_fp32_backends
    return AUTO_ORDER.get(opts.precision, ("paddle",))


def choose_backend(requested: str, files: ModelFiles, deploy: DeployConfig, opts: Any) -> str:
    """The backend infer.py runs: ``requested`` checked, or for ``auto`` the first usable one.

    Args:
        requested: ``auto`` or a name of ``REGISTRY``.
        files, deploy: the export (program files and inference.yml).
        opts: ``deploy.predictor.RuntimeOptions`` (device, precision, threads).
    Returns:
        a registry name.
    Raises:
        UserError: an unknown name, a backend that is not installed, or (also for ``auto``,
            with the reason of the first candidate) no backend that can run this export so.
    """
    if requested != AUTO:
        if requested not in REGISTRY:
            raise UserError(f"--backend {requested}: choose one of {', '.join(BACKEND_CHOICES)}")
        _require_installed(requested)
        _module(requested).check(files, deploy, opts)
        return requested
    order = auto_order(deploy, opts)
    first_error: UserError | None = None
    for name in order:
        if missing_modules(name):
            continue
        try:
            _module(name).check(files, deploy, opts)
            return name
        except UserError as exc:
            first_error = first_error or exc
    if first_error is not None:
        raise first_error
    needed = sorted({m for name in order for m in missing_modules(name)})
    raise UserError(f"--precision {opts.precision} on CPU runs on {' or '.join(order)}, which needs {' and '.join(needed)}: "
                    f"not installed; run `{REGISTRY[order[0]].install_hint}`")


def create_backend(name: str, files: ModelFiles, deploy: DeployConfig, opts: Any) -> InferenceBackend:
    """Instantiate backend ``name`` (already checked by :func:`choose_backend`) for the export."""
    return _module(name).create(files, deploy, opts)


__all__ = ["AUTO", "AUTO_ORDER", "BACKEND_CHOICES", "REGISTRY", "BackendEntry", "InferenceBackend", "choose_backend",
           "create_backend", "installed_backends", "missing_modules"]
