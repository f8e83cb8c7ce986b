"""EfficientMod checkpoints: conversion round trips with files written here, and the safe reader.

The original checkpoints are timm training files: a dict with ``state_dict`` (torch key layout,
Linear weights ``[out, in]``, an ImageNet ``head``), ``state_dict_ema``, ``optimizer``,
``amp_scaler``, ``epoch``, ``arch``, ``version``, ``metric`` and ``args``, a pickled
``argparse.Namespace``. ``utils.pth_io.save_pth`` writes the same layout without torch.
"""
from __future__ import annotations

import argparse
import collections
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import paddle
import pytest

from models import build_model
from models.convert import convert_torch_state, detect_format
from models.weights import read_paddle_state
from tools import convert_torch_weights
from utils.errors import UserError
from utils.pth_io import UnsafePickleError, load_pth, save_pth, select_weights
from utils.safe_pickle import InertRecord

NAME = "efficientmod_xxs"


def torch_layout(model: paddle.nn.Layer) -> "collections.OrderedDict[str, np.ndarray]":
    """The model's backbone in the original's key layout: every Linear (Paddle [in, out], or a
    1x1 conv [out, in, 1, 1]) as torch's [out, in]."""
    linears = {f"{n}.weight" for n, m in model.named_sublayers() if isinstance(m, paddle.nn.Linear)}
    out = collections.OrderedDict()
    for key, value in model.state_dict().items():
        if key.startswith("classifier."):
            continue
        arr = value.numpy()
        if key in linears:
            arr = arr.T
        elif arr.ndim == 4 and arr.shape[2:] == (1, 1):
            arr = arr[:, :, 0, 0]
        out[key] = np.ascontiguousarray(arr)
    return out


@pytest.fixture(scope="module")
def source() -> tuple[paddle.nn.Layer, dict, dict]:
    """(model with non-trivial weights, its torch-layout state with an ImageNet head, an EMA copy)."""
    paddle.seed(0)
    model = build_model(NAME, num_classes=4)
    rng = np.random.default_rng(1)
    for name, param in model.named_parameters():
        if name.endswith("gamma_1") or ".norm" in name or name.startswith("norm"):
            param.set_value(rng.uniform(0.2, 0.6, param.shape).astype("float32"))
    state = torch_layout(model)
    state["head.weight"] = rng.standard_normal((1000, 256)).astype("float32")
    state["head.bias"] = rng.standard_normal(1000).astype("float32")
    ema = collections.OrderedDict((k, v + np.float32(0.5)) for k, v in state.items())
    model.eval()
    return model, state, ema


def training_file(path: Path, state: dict, ema: dict) -> Path:
    """A timm-style ``model_best.pth.tar``: the weights plus the training entries."""
    save_pth({
        "epoch": 299, "arch": "efficientMod_xxs", "state_dict": state,
        "optimizer": {"state": {0: {"exp_avg": np.zeros(3, "float32")}}, "param_groups": [{"lr": 1e-5, "params": [0]}]},
        "version": 2, "args": argparse.Namespace(model="efficientMod_xxs", lr=4e-3, amp=True, input_size=None,
                                                 mean=(0.485, 0.456, 0.406), model_ema=True),
        "amp_scaler": {"scale": 65536.0, "growth_factor": 2.0}, "state_dict_ema": ema, "metric": 77.1,
    }, path)
    return path


def backbone(model: paddle.nn.Layer) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in model.state_dict().items() if not k.startswith("classifier.")}


def test_training_file_converts_with_a_line_per_dropped_entry(tmp_path, source, capsys) -> None:
    model, state, ema = source
    src = training_file(tmp_path / "model_best.pth.tar", state, ema)
    dst = tmp_path / "emod.pdparams"
    assert convert_torch_weights.main(["--src", str(src), "--dst", str(dst), "--model", NAME, "--num_cls", "4"]) == 0
    out = capsys.readouterr().out
    assert "source format: efficientmod-timm" in out
    assert "weights: 'state_dict' of a training checkpoint (arch 'efficientMod_xxs', epoch 299)" in out
    for line in ("dropped 'optimizer': optimizer state", "dropped 'amp_scaler': AMP loss-scaler state",
                 "dropped 'state_dict_ema': EMA copy of the weights (pass --use_ema to take it instead)",
                 "dropped 'args': training arguments (argparse.Namespace, read as an inert record, nothing run)",
                 "skipped 2: ImageNet classifier, replaced by the CSRA head (head.weight, head.bias)"):
        assert line in out, out
    converted = read_paddle_state(dst)
    expected = backbone(model)
    assert set(converted) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(np.asarray(converted[key]), value, err_msg=key)


def test_use_ema_takes_the_ema_copy(tmp_path, source, capsys) -> None:
    model, state, ema = source
    src = training_file(tmp_path / "model_best.pth.tar", state, ema)
    dst = tmp_path / "ema.pdparams"
    convert_torch_weights.main(["--src", str(src), "--dst", str(dst), "--model", NAME, "--num_cls", "4", "--use_ema"])
    out = capsys.readouterr().out
    assert "weights: 'state_dict_ema'" in out and "dropped 'state_dict': the trained (non-EMA) weights" in out
    converted = read_paddle_state(dst)
    for key, value in backbone(model).items():
        np.testing.assert_allclose(np.asarray(converted[key]), value + np.float32(0.5), err_msg=key)


def test_use_ema_without_an_ema_copy_is_an_error(tmp_path, source) -> None:
    _, state, _ = source
    src = tmp_path / "plain.pth"
    save_pth(state, src)
    with pytest.raises(UserError, match="holds no EMA copy"):
        convert_torch_weights.main(["--src", str(src), "--dst", str(tmp_path / "x.pdparams"), "--model", NAME, "--use_ema"])


def test_pretrained_takes_the_original_file_directly(tmp_path, source) -> None:
    model, state, ema = source
    src = training_file(tmp_path / "model_best.pth.tar", state, ema)
    loaded = build_model(NAME, num_classes=4, pretrained=str(src))
    loaded.eval()
    x = paddle.rand([1, 3, 96, 64])
    with paddle.no_grad():
        np.testing.assert_allclose(loaded.forward_features(x).numpy(), model.forward_features(x).numpy(), rtol=1e-6, atol=1e-6)


def test_plain_and_prefixed_state_dicts(tmp_path, source) -> None:
    model, state, _ = source
    assert detect_format(list(state)) == "efficientmod-timm"
    prefixed = collections.OrderedDict((f"module.{k}", v) for k, v in state.items())
    src = tmp_path / "prefixed.pth"
    save_pth(prefixed, src)
    weights, notes = select_weights(load_pth(src))
    assert notes == []  # a plain state dict: nothing else to report
    conv = convert_torch_state(weights, build_model(NAME, num_classes=4))
    assert conv.prefix_stripped == "module." and conv.missing_ok  # no classifier in the source: it starts fresh
    for key, value in backbone(model).items():
        np.testing.assert_array_equal(conv.state[key], value)


def test_wrong_preset_is_refused_naming_the_keys(source) -> None:
    _, state, _ = source
    with pytest.raises(UserError, match="does not fit the target model"):
        convert_torch_state(state, build_model("efficientmod_xs", num_classes=4))


# ----------------------------------------------------------------------------- the Namespace entry, safely
class Reduce:
    """Pickles as ``func(*args)``."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def raw_archive(path: Path, pkl: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pkl)
        zf.writestr("archive/byteorder", b"little")
        zf.writestr("archive/version", b"3\n")
    return path


def test_namespace_is_rebuilt_inert_without_calling_the_class(tmp_path, monkeypatch) -> None:
    src = tmp_path / "args.pth"
    save_pth({"args": argparse.Namespace(lr=0.5, name="x", sizes=[1, 2]), "state_dict": {"w": np.ones(2, "float32")}}, src)
    with zipfile.ZipFile(src) as zf:
        assert b"argparse\nNamespace" in zf.read("archive/data.pkl")  # pickle's own NEWOBJ + BUILD form

    def boom(*args, **kwargs):
        raise AssertionError("argparse.Namespace was called")

    monkeypatch.setattr(argparse.Namespace, "__init__", boom)
    record = load_pth(src)["args"]
    assert isinstance(record, InertRecord) and not isinstance(record, argparse.Namespace)
    assert record.pickled_name == "argparse.Namespace" and record.lr == 0.5 and dict(record.fields) == {
        "lr": 0.5, "name": "x", "sizes": [1, 2]}
    with pytest.raises(ValueError, match="read-only"):
        record.lr = 1.0


def test_namespace_built_with_arguments_is_refused(tmp_path) -> None:
    pkl = pickle.dumps({"args": Reduce(argparse.Namespace, "x")}, protocol=2)
    with pytest.raises(UserError, match=r"corrupt checkpoint.*record built with arguments"):
        load_pth(raw_archive(tmp_path / "args.pth", pkl))


def test_namespace_does_not_open_the_door_to_other_globals(tmp_path) -> None:
    pwned = tmp_path / "pwned"
    pkl = pickle.dumps({"args": argparse.Namespace(lr=1), "x": Reduce(os.system, f"touch {pwned}")}, protocol=2)
    with pytest.raises(UnsafePickleError, match=r"(posix|os)\.system"):
        load_pth(raw_archive(tmp_path / "evil.pth", pkl))
    assert not pwned.exists()
    # a Namespace whose fields hold a forbidden object is refused the same way
    pkl = pickle.dumps(argparse.Namespace(hook=Reduce(eval, "1")), protocol=2)
    with pytest.raises(UnsafePickleError, match=r"(__builtin__|builtins)\.eval"):
        load_pth(raw_archive(tmp_path / "evil2.pth", pkl))
