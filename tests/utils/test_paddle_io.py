"""The safe Paddle checkpoint reader: genuine paddle.save files load exactly as paddle.load
returns them; files that ask for code are refused before anything runs, through every entry
point that reads a user's Paddle file (--pretrained path and URL, --load_from, --resume)."""
from __future__ import annotations

import copyreg
import hashlib
import io
import json
import os
import pickle
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest

from tests.conftest import run_script, train_flags
from engine.checkpoint import rng_state, set_rng_state
from utils.errors import UserError
from utils.paddle_io import GeneratorStateRecord, UnsafePickleError, load_paddle


# ------------------------------------------------------------------ genuine files

def _small_training_objects() -> dict[str, object]:
    """A model state dict, an optimizer state with its LR scheduler, training states, tensors."""
    paddle.seed(1)
    net = paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3), paddle.nn.BatchNorm2D(4), paddle.nn.Flatten(), paddle.nn.Linear(4 * 3 * 2, 2))
    scheduler = paddle.optimizer.lr.StepDecay(0.1, 2)
    optimizer = paddle.optimizer.Momentum(learning_rate=scheduler, parameters=net.parameters(),
                                          weight_decay=paddle.regularizer.L2Decay(1e-4))
    net(paddle.randn([2, 3, 5, 4])).mean().backward()
    optimizer.step()
    scheduler.step()
    return {
        "params": net.state_dict(),
        "optimizer": optimizer.state_dict(),
        "states": {"epoch": 3, "best_map": 0.5, "rng": rng_state(), "np_scalar": np.float32(2.5),
                   "array": np.arange(6, dtype=np.int16).reshape(2, 3), "config": {"model": "resnet18", "stages": [3, 4], "x": None}},
        "tensor": paddle.to_tensor([1.0, 2.0]),
        "list": [paddle.to_tensor([1, 2]), paddle.to_tensor([[1.5]], dtype="float64")],
    }


def _assert_same(expected, got, where: str) -> None:
    if isinstance(expected, paddle.Tensor):
        assert isinstance(got, paddle.Tensor), where
        assert expected.dtype == got.dtype and expected.shape == got.shape, where
        if not expected.name.startswith("generated"):
            assert expected.name == got.name, where
        np.testing.assert_array_equal(expected.numpy(), got.numpy(), err_msg=where)
    elif isinstance(expected, np.ndarray):
        assert isinstance(got, np.ndarray) and expected.dtype == got.dtype and expected.shape == got.shape, where
        np.testing.assert_array_equal(expected, got, err_msg=where)
    elif isinstance(expected, dict):
        assert type(expected) is type(got) and list(expected) == list(got), where
        for key in expected:
            _assert_same(expected[key], got[key], f"{where}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert type(expected) is type(got) and len(expected) == len(got), where
        for i, (a, b) in enumerate(zip(expected, got)):
            _assert_same(a, b, f"{where}[{i}]")
    elif type(expected).__name__ == "GeneratorState":
        assert isinstance(got, GeneratorStateRecord) and got.state == expected.__getstate__(), where
    else:
        assert type(expected) is type(got) and expected == got, where


@pytest.mark.parametrize("protocol", [2, 3, 4])
@pytest.mark.parametrize("return_numpy", [False, True])
def test_genuine_files_load_as_paddle_load_returns_them(tmp_path: Path, protocol: int, return_numpy: bool) -> None:
    for name, obj in _small_training_objects().items():
        path = tmp_path / f"{name}.pd"
        paddle.save(obj, str(path), protocol=protocol)
        _assert_same(paddle.load(str(path), return_numpy=return_numpy), load_paddle(path, return_numpy=return_numpy), name)


def test_split_big_parameters_are_joined(tmp_path: Path) -> None:
    """paddle.save's protocol-2 layout for >1 GiB parameters, built by hand (small slices)."""
    whole = np.arange(10, dtype=np.float32).reshape(2, 5)
    flat = whole.reshape(-1)
    obj = {"w@@.0": flat[:6], "w@@.1": flat[6:], "b": np.ones(2, np.float32),
           "UnpackBigParamInfor@@": {"w": {"OriginShape": (2, 5), "slices": ["w@@.0", "w@@.1"]}}}
    path = tmp_path / "big.pdparams"
    path.write_bytes(pickle.dumps(obj, protocol=2))
    loaded = load_paddle(path, return_numpy=True)
    assert sorted(loaded) == ["b", "w"]
    np.testing.assert_array_equal(loaded["w"], whole)


def test_restored_generator_state_replays_the_same_numbers(tmp_path: Path) -> None:
    paddle.seed(7)
    random.seed(7)
    path = tmp_path / "rng.pdstates"
    paddle.save({"rng": rng_state()}, str(path))
    first = paddle.rand([4]).numpy(), random.random()
    set_rng_state(load_paddle(path, return_numpy=True)["rng"])
    again = paddle.rand([4]).numpy(), random.random()
    np.testing.assert_array_equal(first[0], again[0])
    assert first[1] == again[1]


# ------------------------------------------------------------------ malicious files

class _Payload:
    """Pickles as a call of ``os.system`` that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _StealthArray:
    """Pickles as an ``eval`` that runs code and then yields a genuine-looking array."""

    def __init__(self, marker: Path, shape: tuple[int, ...]) -> None:
        self.expr = f"__import__('pathlib').Path({str(marker)!r}).touch() or __import__('numpy').zeros({shape}, 'float32')"

    def __reduce__(self):
        return eval, (self.expr,)


def _stealth_state(marker: Path) -> dict:
    """A real state dict in which one tensor is rebuilt through a call that runs code."""
    state = {k: v.numpy() for k, v in paddle.nn.Linear(3, 2).state_dict().items()}
    state["weight"] = _StealthArray(marker, (3, 2))
    return state


def _assert_refused(path: Path, marker: Path, needle: str = "refusing to load") -> None:
    with pytest.raises(UnsafePickleError, match=needle) as info:
        load_paddle(path)
    assert str(path) in str(info.value) and "nothing from the file was imported or run" in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_reduce_to_os_system_is_refused_for_every_protocol(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pdparams"
    path.write_bytes(pickle.dumps({"weight": _Payload(marker)}, protocol=protocol))
    _assert_refused(path, marker, "posix.system|os.system")


def test_stealth_tensor_is_refused_not_loaded(tmp_path: Path) -> None:
    marker = tmp_path / "stealth"
    path = tmp_path / "stealth.pdparams"
    path.write_bytes(pickle.dumps(_stealth_state(marker), protocol=2))
    with pytest.raises(UnsafePickleError):
        load_paddle(path, return_numpy=True)
    assert not marker.exists()


def test_stealth_eval_through_paddles_own_dense_tensor_form_is_refused(tmp_path: Path) -> None:
    """The one eval form Paddle writes is answered by a stand-in; any other expression is refused."""
    marker = tmp_path / "m"

    class Sneaky:
        def __reduce__(self):
            return eval, ("__import__('os').system('touch %s')" % marker, {"data": 1})

    path = tmp_path / "e.pdparams"
    path.write_bytes(pickle.dumps({"w": Sneaky()}, protocol=2))
    with pytest.raises(UnsafePickleError, match="eval"):
        load_paddle(path)
    assert not marker.exists()


@pytest.mark.parametrize("cached", [False, True])
def test_extension_opcodes_cannot_reach_a_callable(tmp_path: Path, cached: bool) -> None:
    marker = tmp_path / "ext"
    code = 0x7A11
    module = os.system.__module__  # "posix" on Linux
    copyreg.add_extension(module, "system", code)
    try:
        if cached:  # as if an earlier unpickle in this process had resolved the code
            copyreg._extension_cache[code] = os.system
        path = tmp_path / "ext.pdparams"
        path.write_bytes(pickle.dumps({"w": _Payload(marker)}, protocol=2))
        assert b"\x82" in path.read_bytes() or b"\x83" in path.read_bytes()  # EXT1/EXT2 opcode present
        _assert_refused(path, marker, f"{module}.system")
    finally:
        copyreg._extension_cache.pop(code, None)
        copyreg.remove_extension(module, "system", code)


def test_forged_arrays_are_refused(tmp_path: Path) -> None:
    """Object dtypes, structured dtypes and shapes larger than the bytes in the file."""
    cases = {
        "object": np.array([1, "x"], dtype=object),
        "structured": np.zeros(2, dtype=[("a", "f4"), ("b", "i4")]),
    }
    for name, value in cases.items():
        path = tmp_path / f"{name}.pdparams"
        path.write_bytes(pickle.dumps({"w": value}, protocol=2))
        with pytest.raises(UserError):
            load_paddle(path)
    class Forged:  # announces a 20000 x 20000 float32 array but carries 16 bytes
        def __reduce__(self):
            return (np.core.multiarray._reconstruct, (np.ndarray, (0,), b"b"),
                    (1, (20000, 20000), np.dtype("float32"), False, b"\0" * 16))

    path = tmp_path / "huge.pdparams"
    path.write_bytes(pickle.dumps({"w": Forged()}, protocol=2))
    with pytest.raises(UserError, match="needs 1600000000 bytes"):
        load_paddle(path)


def test_other_files_get_clear_errors(tmp_path: Path) -> None:
    for name, data, needle in [
        ("empty.pdparams", b"", "empty"),
        ("text.pdparams", b"hello", "not a paddle.save checkpoint"),
        ("cut.pdparams", None, "truncated or corrupt"),
    ]:
        path = tmp_path / name
        if data is None:
            paddle.save({"w": paddle.ones([100])}, str(path))
            data = path.read_bytes()[:-50]
        path.write_bytes(data)
        with pytest.raises(UserError, match=needle):
            load_paddle(path)
    with pytest.raises(UserError, match="not found"):
        load_paddle(tmp_path / "missing.pdparams")
    with pytest.raises(UserError, match="folder"):
        load_paddle(tmp_path)


# ------------------------------------------------------------------ every entry point

def _refused_cleanly(result, marker: Path) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "refusing to load" in errors[0], result.stderr[-2000:]
    assert not marker.exists()


@pytest.fixture(scope="module")
def evil_run(two_epochs, tmp_path_factory) -> dict:
    """A copy of a finished training run whose files are malicious, plus a marker path."""
    folder = tmp_path_factory.mktemp("evil_run")
    marker = folder / "pwned"
    for item in two_epochs[0].iterdir():
        if item.is_file():
            shutil.copy(item, folder / item.name)
    evil = pickle.dumps({"weight": _Payload(marker)}, protocol=4)
    (folder / "best.pdparams").write_bytes(evil)
    (folder / "last.pdstates").write_bytes(evil)
    manifest = json.loads((folder / "last.manifest.json").read_text())  # a whole, verifiable set
    manifest["files"][".pdstates"] = {"size": len(evil), "sha256": hashlib.sha256(evil).hexdigest()}
    (folder / "last.manifest.json").write_text(json.dumps(manifest))
    return {"dir": folder, "marker": marker, "weights": folder / "best.pdparams"}


def test_entry_points_refuse_malicious_checkpoints(evil_run, tiny_demo, tmp_path: Path) -> None:
    marker, weights = evil_run["marker"], str(evil_run["weights"])
    image = sorted(tiny_demo["images"].iterdir())[0]
    commands = {
        "train --pretrained": train_flags(tiny_demo, tmp_path / "a", 1) + ["--pretrained", weights],
        "train --resume": train_flags(tiny_demo, evil_run["dir"], 3) + ["--resume", str(evil_run["dir"])],
        "val --load_from": ["val.py", "--load_from", weights, "--test_json", str(tiny_demo["test"]), "--dataset", "demo"],
        "predict --load_from": ["predict.py", "--load_from", weights, str(image)],
        "export --model_path": ["export_model.py", "--model_path", weights, "--save_dir", str(tmp_path / "export")],
    }
    for what, argv in commands.items():
        result = run_script(*argv)
        assert result.returncode == 2, (what, result.stderr[-2000:])
        _refused_cleanly(result, marker)


def test_downloaded_weights_are_read_safely(tmp_path: Path, monkeypatch) -> None:
    import http.server
    import threading

    from models import build_model

    marker = tmp_path / "pwned"
    served = tmp_path / "served"
    served.mkdir()
    (served / "w.pdparams").write_bytes(pickle.dumps(_stealth_state(marker), protocol=4))

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(served), **kw)

        def log_message(self, *a):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    monkeypatch.setenv("CSRA_WEIGHTS_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    try:
        with pytest.raises(UnsafePickleError):
            build_model("resnet18", num_classes=4, pretrained=f"http://127.0.0.1:{httpd.server_address[1]}/w.pdparams")
    finally:
        httpd.shutdown()
    assert not marker.exists()
