"""The ``onnxruntime`` backend: ONNX Runtime's CPU execution provider on the export's ONNX files.

fp32 runs ``model.onnx`` (``export_model.py --onnx``), int8 runs ``model_int8.onnx``
(``export_model.py --quantize int8``, static post-training quantisation). Both take the same
input ``x`` float32 [N, 3, S, S] as the Paddle program and return probabilities [N, C].
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from deploy.backends.base import InferenceBackend
from deploy.inference_config import EXPORT_HINT, ONNX_FILENAME, DeployConfig, ModelFiles
from utils.errors import UserError

QUANTIZE_HINT = "python export_model.py --model_path WEIGHTS.pdparams --save_dir DIR --quantize int8 --calib_dir IMAGES"


def export_folder(files: ModelFiles) -> Path:
    """The folder holding inference.yml (the ONNX files sit beside it)."""
    return (files.config_file or files.model_file).parent


def onnx_model_path(files: ModelFiles, deploy: DeployConfig, precision: str) -> Path:
    """The ONNX file for ``precision`` (fp32 or int8) named by inference.yml.

    Raises:
        UserError: the export has no such file (says how to export it).
    """
    folder = export_folder(files)
    if precision == "int8":
        name = (deploy.int8 or {}).get("file") if isinstance(deploy.int8, dict) else None
        if not name:
            raise UserError(f"--precision int8 on CPU needs an int8 model, but this export has only fp32 (inference.yml in "
                            f"{folder} records no quantised model): export one with `{QUANTIZE_HINT}`, or run fp32 "
                            "(on a GPU build, int8 runs through TensorRT: --use_gpu True --use_tensorrt True)")
        path = folder / name
        if not path.is_file():
            raise UserError(f"{path} not found although inference.yml lists it: export again with `{QUANTIZE_HINT}`")
        return path
    path = folder / (deploy.onnx_file or ONNX_FILENAME)
    if not path.is_file():
        raise UserError(f"--backend onnxruntime needs {path}, which this export lacks: export with --onnx "
                        f"(`{EXPORT_HINT} --onnx`), or use --backend paddle")
    return path


def check(files: ModelFiles, deploy: DeployConfig, opts: Any) -> None:
    """UserError unless this is a CPU run at fp32 or int8 whose ONNX file exists."""
    if opts.use_gpu or opts.use_tensorrt:
        raise UserError("--backend onnxruntime runs on the CPU here (CPU execution provider): drop --use_gpu/--use_tensorrt, "
                        "or use --backend paddle")
    if opts.precision not in ("fp32", "int8"):
        raise UserError(f"--backend onnxruntime: --precision {opts.precision} is not supported on CPU; use fp32 or int8")
    onnx_model_path(files, deploy, opts.precision)


class OnnxRuntimeBackend(InferenceBackend):
    """An ``onnxruntime.InferenceSession`` on one ONNX file, created once.

    Args:
        path: the ``.onnx`` file.
        deploy: inference.yml (input name, size, classes).
        threads: intra-op threads (the predictor's ``cpu_threads``).
    """

    name = "onnxruntime"

    def __init__(self, path: Path, deploy: DeployConfig, threads: int) -> None:
        import onnxruntime as ort

        super().__init__(deploy, path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, int(threads))
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # No busy-waiting between parallel sections: infer.py's loader processes (and any other
        # process on a small machine) need the cores then; measured as fast or faster on 2 cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise UserError(f"onnxruntime cannot load {path} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                            f"export it again ({EXPORT_HINT} --onnx)") from None
        names = [i.name for i in self.session.get_inputs()]
        if deploy.input_name not in names:
            raise UserError(f"{path} has inputs {names}, but inference.yml says '{deploy.input_name}': the files come from "
                            f"different exports; re-export ({EXPORT_HINT} --onnx)")
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.output_name = self.output_names[0]

    def run(self, batch: np.ndarray) -> np.ndarray:
        """One session run on a checked batch float32 [B, 3, S, S] -> float32 [B, C]."""
        try:
            return self.session.run([self.output_name], {self.deploy.input_name: batch})[0]
        except Exception as exc:
            raise UserError(f"onnxruntime failed on {self.model_path} ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:200]})") from None


    def run_with_maps(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One run of a ``--with_heatmaps`` export: (float32 [B, C], class maps float32 [B, C, h, w])."""
        if len(self.output_names) < 2:
            raise UserError(f"{self.model_path} has one output but inference.yml says it has class maps; "
                            f"re-export ({EXPORT_HINT} --onnx --with_heatmaps)")
        try:
            probs, maps = self.session.run(self.output_names[:2], {self.deploy.input_name: batch})
        except Exception as exc:
            raise UserError(f"onnxruntime failed on {self.model_path} ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:200]})") from None
        return probs, maps


def create(files: ModelFiles, deploy: DeployConfig, opts: Any) -> OnnxRuntimeBackend:
    """The session for the export's fp32 or int8 ONNX file (``opts.precision``), ``opts.cpu_threads`` threads."""
    return OnnxRuntimeBackend(onnx_model_path(files, deploy, opts.precision), deploy, opts.cpu_threads)
