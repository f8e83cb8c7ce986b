"""The ``openvino`` backend: Paddle Inference with the OpenVINO engine its CPU wheel ships.

``paddle.inference.Config.enable_openvino_engine`` hands subgraphs to OpenVINO through an
analysis pass of the legacy program representation; OpenVINO's Paddle front end reads
``.pdmodel`` programs. Paddle 3.3 exports ``inference.json`` (the new IR), for which the pass
never runs: the predictor silently runs its oneDNN kernels instead, with outputs identical to
``--backend paddle``. So this backend accepts only legacy ``.pdmodel`` exports and refuses
``.json`` ones with that explanation rather than pretend to run OpenVINO.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from deploy.inference_config import DeployConfig, ModelFiles
from utils.errors import UserError


def openvino_libraries() -> list[Path]:
    """The OpenVINO libraries inside the installed paddle package (empty if it has none)."""
    import importlib.util

    spec = importlib.util.find_spec("paddle")
    if spec is None or not spec.submodule_search_locations:
        return []
    libs = Path(list(spec.submodule_search_locations)[0]) / "libs"
    return sorted(libs.glob("libopenvino*.so*")) if libs.is_dir() else []


def check(files: ModelFiles, deploy: DeployConfig, opts: Any) -> None:
    """UserError unless this is a CPU fp32 run of a legacy ``.pdmodel`` program with OpenVINO in the wheel."""
    if opts.use_gpu or opts.use_tensorrt:
        raise UserError("--backend openvino runs on the CPU: drop --use_gpu/--use_tensorrt, or use --backend paddle")
    if opts.precision != "fp32":
        raise UserError(f"--backend openvino runs fp32 only (got --precision {opts.precision}); int8 on CPU: "
                        "--backend onnxruntime with an export made with --quantize int8")
    if not openvino_libraries():
        raise UserError("--backend openvino: this paddlepaddle build ships no OpenVINO libraries (paddle/libs/libopenvino*); "
                        "use --backend paddle or onnxruntime")
    if files.model_file.suffix == ".json":
        raise UserError(f"--backend openvino: {files.model_file} is a Paddle 3 (.json, new IR) program, and Paddle's OpenVINO "
                        "engine only converts legacy .pdmodel programs (for .json ones Paddle would silently run oneDNN "
                        "instead); use --backend paddle (the same oneDNN kernels) or --backend onnxruntime")


def create(files: ModelFiles, deploy: DeployConfig, opts: Any):  # -> deploy.predictor.Predictor
    """A Paddle Inference predictor with the OpenVINO engine enabled (legacy IR and executor)."""
    from deploy.predictor import Predictor

    class OpenVINOPredictor(Predictor):
        """``Predictor`` whose config hands the program to OpenVINO."""

        name = "openvino"

        def configure(self, config: Any) -> None:
            import paddle.inference as paddle_infer

            config.enable_new_ir(False)
            config.enable_new_executor(False)
            config.enable_openvino_engine(paddle_infer.PrecisionType.Float32)

    return OpenVINOPredictor(files, opts, deploy)
