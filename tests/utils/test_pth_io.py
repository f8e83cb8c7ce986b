"""Tests for utils.pth_io: torch-free, code-free reading/writing of torch.save checkpoints.

No torch here. Hand-made archives reproduce the opcodes torch writes: a normal
``pickle.Pickler`` pickles local stand-ins, then their GLOBAL lines (protocol 2 writes them
as plain ``c<module>\\n<name>\\n`` text) are renamed to the torch names.
"""
from __future__ import annotations

import collections
import contextlib
import copyreg
import os
import pickle
import struct
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from utils.errors import UserError
from utils.pth_io import UnsafePickleError, extract_state_dict, load_pth, save_pth

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

# ----------------------------------------------------------------------------- helpers


class FloatStorage:
    """Stand-in for torch.FloatStorage (renamed to ``torch FloatStorage`` in the pickle)."""


class BFloat16Storage:
    """Stand-in for torch.BFloat16Storage."""


class BoolStorage:
    """Stand-in for torch.BoolStorage."""


def fake_rebuild(*args):  # pragma: no cover - only its pickled name matters
    """Stand-in for torch._utils._rebuild_tensor_v2."""


def fake_param(*args):  # pragma: no cover
    """Stand-in for torch._utils._rebuild_parameter."""


class Storage:
    """A storage to reference through a persistent id."""

    def __init__(self, key: str, stype: type, numel: int):
        self.key, self.stype, self.numel = key, stype, numel


class Tensor:
    """Pickles exactly like a torch tensor: _rebuild_tensor_v2(storage, offset, size, stride, ...)."""

    def __init__(self, storage: Storage, offset: int, size: tuple, stride: tuple):
        self.args = (storage, offset, size, stride, False, collections.OrderedDict())

    def __reduce__(self):
        return (fake_rebuild, self.args)


class Param:
    """Pickles like an nn.Parameter: _rebuild_parameter(tensor, requires_grad, hooks)."""

    def __init__(self, data: Tensor):
        self.data = data

    def __reduce__(self):
        return (fake_param, (self.data, True, collections.OrderedDict()))


class TorchLikePickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", obj.stype, obj.key, "cpu", obj.numel)
        return None


def torch_like_pickle(obj) -> bytes:
    """Protocol-2 pickle of ``obj`` with the stand-in names replaced by torch's."""
    import io

    buf = io.BytesIO()
    TorchLikePickler(buf, protocol=2).dump(obj)
    data = buf.getvalue()
    mod = __name__.encode()
    renames = {
        b"fake_rebuild": b"torch._utils\n_rebuild_tensor_v2",
        b"fake_param": b"torch._utils\n_rebuild_parameter",
        b"FloatStorage": b"torch\nFloatStorage",
        b"BFloat16Storage": b"torch\nBFloat16Storage",
        b"BoolStorage": b"torch\nBoolStorage",
    }
    for local, torch_name in renames.items():
        data = data.replace(b"c" + mod + b"\n" + local + b"\n", b"c" + torch_name + b"\n")
    assert mod not in data, "a stand-in name was left in the pickle"
    return data


def write_archive(path: Path, pkl: bytes, storages: dict[str, bytes] | None = None,
                  prefix: str = "mymodel", byteorder: bytes | None = b"little") -> Path:
    """Write a torch-style zip: <prefix>/data.pkl, <prefix>/data/<key>, byteorder, version."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{prefix}/data.pkl", pkl)
        if byteorder is not None:
            zf.writestr(f"{prefix}/byteorder", byteorder)
        for key, raw in (storages or {}).items():
            zf.writestr(f"{prefix}/data/{key}", raw)
        zf.writestr(f"{prefix}/version", b"3\n")
    return path


def assert_same(a: np.ndarray, b: np.ndarray) -> None:
    assert isinstance(a, np.ndarray)
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- round trip


def test_round_trip_dtypes_shapes_and_containers(tmp_path):
    rng = np.random.default_rng(0)
    sd = collections.OrderedDict()
    sd["conv.weight"] = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    sd["half"] = rng.standard_normal((3, 5)).astype(np.float16)
    sd["f64"] = rng.standard_normal(3)
    sd["bn.num_batches_tracked"] = np.array(7, dtype=np.int64)  # 0-d
    sd["i32"] = np.array([-70000, 2], np.int32)
    sd["i16"] = np.array([-300, 2], np.int16)
    sd["i8"] = np.array([-1, 2], np.int8)
    sd["u8"] = np.arange(5, dtype=np.uint8)
    sd["bool"] = np.array([True, False, True])
    sd["empty"] = np.zeros((2, 0, 3), np.float32)
    sd["scalar"] = np.array(3.5, np.float32)
    sd["fortran"] = np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4))
    sd["transposed"] = np.arange(12, dtype=np.float32).reshape(3, 4).T
    sd["big_endian"] = np.arange(4, dtype=">f4")
    obj = {
        "state_dict": sd,
        "epoch": 3,
        "best": np.float64(0.75),
        "meta": {"lst": [1, 2.5, "x", None, True, (1, 2)], "od": collections.OrderedDict(a=1)},
    }
    path = tmp_path / "ck.pth"
    save_pth(obj, path)

    out = load_pth(path)
    assert type(out["state_dict"]) is collections.OrderedDict
    assert list(out["state_dict"]) == list(sd)
    for k, v in sd.items():
        got = out["state_dict"][k]
        assert_same(got, np.asarray(v, dtype=v.dtype.newbyteorder("=")))
        assert got.flags.c_contiguous and got.flags.writeable
    assert out["epoch"] == 3 and type(out["best"]) is float and out["best"] == 0.75
    assert out["meta"]["lst"] == [1, 2.5, "x", None, True, (1, 2)]
    assert type(out["meta"]["od"]) is collections.OrderedDict and out["meta"]["od"] == {"a": 1}


def test_saved_archive_layout_matches_torch(tmp_path):
    path = tmp_path / "small.pth"
    save_pth(collections.OrderedDict(w=np.zeros((2, 3), np.float32), n=np.array(1)), path)
    raw = path.read_bytes()
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist() == ["archive/data.pkl", "archive/byteorder", "archive/data/0",
                                 "archive/data/1", "archive/version"]
        assert zf.read("archive/version") == b"3\n"
        assert zf.read("archive/byteorder") == b"little"
        # data.pkl byte-identical to what torch 2.13's torch.save writes for
        # OrderedDict(w=torch.zeros(2, 3), n=torch.tensor(1))
        assert zf.read("archive/data.pkl") == (
            b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01(X\x01\x00\x00\x00wq\x02ctorch._utils\n"
            b"_rebuild_tensor_v2\nq\x03((X\x07\x00\x00\x00storageq\x04ctorch\nFloatStorage\nq\x05X"
            b"\x01\x00\x00\x000q\x06X\x03\x00\x00\x00cpuq\x07K\x06tq\x08QK\x00K\x02K\x03\x86q\tK\x03K"
            b"\x01\x86q\n\x89h\x00)Rq\x0btq\x0cRq\rX\x01\x00\x00\x00nq\x0eh\x03((h\x04ctorch\nLongStorage"
            b"\nq\x0fX\x01\x00\x00\x001q\x10h\x07K\x01tq\x11QK\x00))\x89h\x00)Rq\x12tq\x13Rq\x14u."
        )
        for info in zf.infolist():
            assert info.compress_type == zipfile.ZIP_STORED
            name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26: info.header_offset + 30])
            assert (info.header_offset + 30 + name_len + extra_len) % 64 == 0, info.filename


def test_shared_array_saved_once(tmp_path):
    a = np.arange(3, dtype=np.float32)
    save_pth({"x": a, "y": a}, tmp_path / "s.pth")
    with zipfile.ZipFile(tmp_path / "s.pth") as zf:
        assert [n for n in zf.namelist() if "/data/" in n] == ["archive/data/0"]
    out = load_pth(tmp_path / "s.pth")
    assert_same(out["x"], a)
    assert_same(out["y"], a)


@pytest.mark.parametrize("bad", [object(), b"bytes", {1, 2}, np.zeros(2, np.complex64), np.zeros(2, np.uint16)])
def test_save_rejects_unsupported_values(tmp_path, bad):
    with pytest.raises(UserError, match="save_pth"):
        save_pth({"x": bad}, tmp_path / "bad.pth")


# ----------------------------------------------------------------------------- real torch file


def test_loads_real_torch_2_13_file():
    """tests/fixtures/torch213_state_dict.pth was written by torch 2.13 (see fixtures/README.md)."""
    obj = load_pth(FIXTURES / "torch213_state_dict.pth")
    assert obj["epoch"] == 3 and obj["arch"] == "resnet"
    sd = obj["state_dict"]
    assert type(sd) is collections.OrderedDict
    assert sd._metadata[""] == {"version": 1}  # OrderedDict attribute restored through BUILD
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    expected = {
        "0.weight": np.arange(6, dtype=np.float32).reshape(2, 3) / 4,
        "0.bias": np.array([0.5, -0.5], np.float32),
        "1.weight": np.ones(2, np.float32),
        "1.bias": np.zeros(2, np.float32),
        "1.running_mean": np.zeros(2, np.float32),
        "1.running_var": np.ones(2, np.float32),
        "1.num_batches_tracked": np.array(7, np.int64),
        "half": (np.arange(6, dtype=np.float32) / 8).astype(np.float16),
        "bf16": np.array([1.0, -2.5, 0.15625], np.float32),
        "t_view": base.T,
        "slice_view": base[1:3, ::2],
        "base": base,
        "expand": np.array([[1.0] * 3, [2.0] * 3], np.float32),
        "scalar": np.array(3.5, np.float32),
        "empty": np.zeros((0, 3), np.float32),
        "param": np.array([[1.0, 2.0], [3.0, 4.0]], np.float32),
        "bool": np.array([True, False, True]),
        "u8": np.arange(5, dtype=np.uint8),
        "i32": np.array([-70000, 2], np.int32),
    }
    assert list(sd) == list(expected)
    for k, v in expected.items():
        assert_same(sd[k], v)


# ----------------------------------------------------------------------------- hand-written torch-like pickles


def test_hand_written_strided_views(tmp_path):
    flat = np.arange(20, dtype="<f4")
    st = Storage("0", FloatStorage, 20)
    obj = collections.OrderedDict(
        full=Tensor(st, 0, (4, 5), (5, 1)),
        transposed=Tensor(st, 0, (5, 4), (1, 5)),
        window=Tensor(st, 6, (2, 2), (5, 2)),       # offset + non-unit strides, shared storage
        scalar=Tensor(st, 13, (), ()),
        empty=Tensor(st, 0, (0, 7), (7, 1)),
        broadcast=Tensor(st, 2, (3, 2), (0, 1)),
        param=Param(Tensor(st, 1, (2,), (3,))),
    )
    path = write_archive(tmp_path / "v.pth", torch_like_pickle(obj), {"0": flat.tobytes()})
    out = load_pth(path)
    grid = flat.reshape(4, 5)
    assert_same(out["full"], grid)
    assert_same(out["transposed"], grid.T.copy())
    assert_same(out["window"], grid[1:3, 1:5:2].copy())
    assert_same(out["scalar"], np.array(13, np.float32))
    assert_same(out["empty"], np.zeros((0, 7), np.float32))
    assert_same(out["broadcast"], np.array([[2, 3]] * 3, np.float32))
    assert_same(out["param"], np.array([1, 4], np.float32))
    assert all(v.flags.c_contiguous and v.flags.writeable for v in out.values())
    out["window"][0, 0] = -1  # independent copies, not views of one buffer
    assert out["full"][1, 1] == 6


def test_big_endian_bfloat16_and_nonstandard_bools(tmp_path):
    pkl = torch_like_pickle({
        "be": Tensor(Storage("0", FloatStorage, 3), 0, (3,), (1,)),
        "bf": Tensor(Storage("1", BFloat16Storage, 2), 0, (2,), (1,)),
        "b": Tensor(Storage("2", BoolStorage, 3), 0, (3,), (1,)),
    })
    bf16 = (np.array([1.5, -0.0078125], np.float32).view(np.uint32) >> 16).astype(">u2")
    path = write_archive(
        tmp_path / "be.pth", pkl,
        {"0": np.array([1, 2, 3], ">f4").tobytes(), "1": bf16.tobytes(), "2": bytes([0, 1, 2])},
        byteorder=b"big",
    )
    out = load_pth(path)
    assert_same(out["be"], np.array([1, 2, 3], np.float32))
    assert_same(out["bf"], np.array([1.5, -0.0078125], np.float32))
    assert_same(out["b"], np.array([False, True, True]))


def test_view_outside_storage_is_refused(tmp_path):
    pkl = torch_like_pickle({"w": Tensor(Storage("0", FloatStorage, 4), 2, (2, 2), (2, 1))})
    path = write_archive(tmp_path / "oob.pth", pkl, {"0": np.zeros(4, "<f4").tobytes()})
    with pytest.raises(UserError, match=r"oob\.pth.*storage"):
        load_pth(path)


def test_storage_size_mismatch_is_refused(tmp_path):
    pkl = torch_like_pickle({"w": Tensor(Storage("0", FloatStorage, 8), 0, (2,), (1,))})
    path = write_archive(tmp_path / "short.pth", pkl, {"0": np.zeros(2, "<f4").tobytes()})
    with pytest.raises(UserError, match=r"short\.pth.*corrupt"):
        load_pth(path)


# ----------------------------------------------------------------------------- malicious pickles


class Reduce:
    """Pickles as ``func(*args)``."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def _touch_cmd(target: Path) -> str:
    return f"touch {target}"


def test_os_system_refused_and_not_run(tmp_path):
    pwned = tmp_path / "pwned"
    pkl = pickle.dumps({"w": Reduce(os.system, _touch_cmd(pwned))}, protocol=2)
    path = write_archive(tmp_path / "evil.pth", pkl)
    with pytest.raises(UnsafePickleError) as info:
        load_pth(path)
    msg = str(info.value)
    assert "evil.pth" in msg and ("posix.system" in msg or "os.system" in msg)
    assert "execute code" in msg and "torch.save(model.state_dict(), path)" in msg
    assert not pwned.exists()


@pytest.mark.parametrize(
    "opcodes, name",
    [
        (b"cos\nsystem\n(S'{cmd}'\ntR.", "os.system"),                 # GLOBAL + REDUCE
        (b"(S'{cmd}'\nios\nsystem\n.", "os.system"),                   # INST
        (b"(cos\nsystem\nS'{cmd}'\no.", "os.system"),                  # OBJ
        (b"\x80\x04\x8c\x05posix\x8c\x06system\x93\x8c{n}{cmd}\x85R.", "posix.system"),  # STACK_GLOBAL
        (b"c__builtin__\neval\n(S'open(\"{esc}\", \"w\")'\ntR.", "__builtin__.eval"),
        (b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93\x8c{m}open('{esc}','w')\x85R.", "builtins.eval"),
        (b"cbuiltins\ngetattr\n(cos\nsystem\nS'x'\ntR.", "builtins.getattr"),
        (b"csubprocess\nPopen\n(S'{cmd}'\ntR.", "subprocess.Popen"),
    ],
)
def test_disallowed_globals_refused_for_every_opcode(tmp_path, opcodes, name):
    pwned = tmp_path / "pwned"
    cmd = _touch_cmd(pwned).encode()
    esc = str(pwned).encode()
    code = f"open('{pwned}','w')".encode()
    pkl = (opcodes.replace(b"{n}", bytes([len(cmd)])).replace(b"{m}", bytes([len(code)]))
           .replace(b"{cmd}", cmd).replace(b"{esc}", esc))
    path = write_archive(tmp_path / "evil.pth", pkl)
    with pytest.raises(UnsafePickleError, match=rf"evil\.pth.*`{name.replace('.', '[.]')}`"):
        load_pth(path)
    assert not pwned.exists()


def test_ext_opcodes_refused_even_when_registered_and_cached(tmp_path):
    pwned = tmp_path / "pwned"
    cmd = _touch_cmd(pwned).encode()
    code = 0xF1
    copyreg.add_extension("os", "system", code)
    try:
        # Resolving it once with plain pickle fills copyreg._extension_cache, after which
        # CPython's unpickler serves EXT1 from the cache without calling find_class.
        assert pickle.loads(b"\x80\x02\x82\xf1.") is os.system
        pkl = b"\x80\x02\x82\xf1X" + struct.pack("<I", len(cmd)) + cmd + b"\x85R."
        path = write_archive(tmp_path / "ext.pth", pkl)
        with pytest.raises(UnsafePickleError, match=r"ext\.pth.*`os\.system`"):
            load_pth(path)
    finally:
        copyreg.remove_extension("os", "system", code)
    assert not pwned.exists()
    for opcode in (b"\x82\xf2", b"\x83\xf2\x00", b"\x84\xf2\x00\x00\x00"):  # EXT1/2/4, unregistered
        path = write_archive(tmp_path / "ext2.pth", b"\x80\x02" + opcode + b".")
        with pytest.raises(UnsafePickleError, match="extension code 242"):
            load_pth(path)


def test_other_persistent_ids_refused(tmp_path):
    class P(pickle.Pickler):
        def persistent_id(self, obj):
            return ("module", "os") if obj == "x" else None

    import io

    buf = io.BytesIO()
    P(buf, protocol=2).dump({"w": "x"})
    path = write_archive(tmp_path / "pid.pth", buf.getvalue())
    with pytest.raises(UnsafePickleError, match=r"pid\.pth.*persistent id 'module'"):
        load_pth(path)


def test_legacy_raw_pickle_refused_without_unpickling(tmp_path):
    pwned = tmp_path / "pwned"
    path = tmp_path / "legacy.pth"
    path.write_bytes(pickle.dumps(Reduce(os.system, _touch_cmd(pwned)), protocol=2))
    with pytest.raises(UserError, match=r"legacy\.pth: legacy/non-zip checkpoint: re-save it with torch >= 1\.6"):
        load_pth(path)
    assert not pwned.exists()


# ----------------------------------------------------------------------------- broken files


def test_truncated_zip(tmp_path):
    path = tmp_path / "trunc.pth"
    save_pth({"w": np.ones((64, 64), np.float32)}, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(UserError, match=r"trunc\.pth.*(truncated|corrupt)"):
        load_pth(path)


def test_corrupted_storage_bytes(tmp_path):
    path = tmp_path / "crc.pth"
    save_pth({"w": np.ones(256, np.float32)}, path)
    raw = bytearray(path.read_bytes())
    start = raw.index(np.ones(256, np.float32).tobytes())
    raw[start + 10] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(UserError, match=r"crc\.pth.*(truncated|corrupt)"):
        load_pth(path)


def test_zip_without_data_pkl(tmp_path):
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("stuff/readme.txt", "hi")
    with pytest.raises(UserError, match=r"other\.zip.*data\.pkl"):
        load_pth(path)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_pth(tmp_path / "nope.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(UserError, match="empty"):
        load_pth(tmp_path / "empty.pth")


# ----------------------------------------------------------------------------- extract_state_dict


def test_extract_state_dict_variants():
    w = np.ones(2, np.float32)
    raw = collections.OrderedDict([("b", w), ("a", w * 2), ("epoch_like", 5)])
    assert list(extract_state_dict(raw)) == ["b", "a"]
    assert list(extract_state_dict({"state_dict": raw, "epoch": 3, "optimizer": {"lr": 0.1}})) == ["b", "a"]
    assert list(extract_state_dict({"model": raw, "epoch": 3})) == ["b", "a"]
    assert list(extract_state_dict({"state_dict_ema": raw})) == ["b", "a"]
    prefixed = {"module.conv.weight": w, "module.fc.bias": w}
    assert list(extract_state_dict({"state_dict": prefixed})) == ["module.conv.weight", "module.fc.bias"]
    assert isinstance(extract_state_dict(raw), collections.OrderedDict)


def test_extract_state_dict_errors():
    with pytest.raises(UserError, match="no tensors"):
        extract_state_dict({"epoch": 3, "arch": "resnet"})
    with pytest.raises(UserError, match="not a dict"):
        extract_state_dict([np.ones(2)])


def test_save_load_extract_end_to_end(tmp_path):
    sd = collections.OrderedDict([("module.fc.weight", np.eye(3, dtype=np.float32)),
                                  ("module.bn.num_batches_tracked", np.array(0, np.int64))])
    save_pth({"state_dict": sd, "epoch": 12}, tmp_path / "train.pth")
    got = extract_state_dict(load_pth(tmp_path / "train.pth"))
    assert list(got) == list(sd)
    for k in sd:
        assert_same(got[k], sd[k])


# ----------------------------------------------------------------------------- memory limits (malicious sizes)


@contextlib.contextmanager
def peak_traced_memory():
    """Yield a dict whose ``peak`` is set to the peak bytes traced (Python + numpy) inside the block."""
    result = {"peak": 0}
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    try:
        yield result
    finally:
        result["peak"] = tracemalloc.get_traced_memory()[1] - base
        if not was_tracing:
            tracemalloc.stop()


SMALL = 32 << 20  # far below what the malicious files below ask for (>= 256 MiB)


def deflate_zeros(nbytes: int) -> tuple[bytes, int]:
    """A raw deflate stream of ``nbytes`` zero bytes and their CRC-32, built in ~1 KB per MiB.

    After a full flush the compressor state is reset, so every further MiB of zeros
    compresses to the same block; it is computed once and repeated.
    """
    mib = bytes(1 << 20)
    assert nbytes % len(mib) == 0
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = comp.compress(mib) + comp.flush(zlib.Z_FULL_FLUSH)
    assert comp.compress(mib) + comp.flush(zlib.Z_FULL_FLUSH) == block
    crc = 0
    for _ in range(nbytes // len(mib)):
        crc = zlib.crc32(mib, crc)
    return block * (nbytes // len(mib)) + comp.flush(), crc


def write_raw_zip(path: Path, records: list[tuple[str, bytes, int, int, int]]) -> Path:
    """Write a zip whose records are given already compressed: (name, payload, method, crc, size).

    Lets a test declare any uncompressed size, as a hostile file can.
    """
    out, central = bytearray(), bytearray()
    for name, payload, method, crc, size in records:
        raw_name = name.encode()
        offset = len(out)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, len(payload), size,
                           len(raw_name), 0) + raw_name + payload
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc, len(payload),
                               size, len(raw_name), 0, 0, 0, 0, 0, offset) + raw_name
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(records), len(records), len(central), len(out), 0)
    path.write_bytes(bytes(out + central + end))
    return path


def stored(name: str, payload: bytes) -> tuple[str, bytes, int, int, int]:
    return (name, payload, zipfile.ZIP_STORED, zlib.crc32(payload), len(payload))


def test_stride0_view_bomb_refused_before_allocating(tmp_path):
    # One float in the file, viewed as 10000 x 10000 with stride 0: 400 MB if materialised.
    pkl = torch_like_pickle({"w": Tensor(Storage("0", FloatStorage, 1), 0, (10000, 10000), (0, 0))})
    path = write_archive(tmp_path / "bomb.pth", pkl, {"0": np.ones(1, "<f4").tobytes()})
    assert path.stat().st_size < 1000
    with peak_traced_memory() as mem, pytest.raises(UserError) as info:
        load_pth(path)
    msg = str(info.value)
    assert "bomb.pth" in msg and "malformed or malicious" in msg and "(10000, 10000)" in msg
    assert "400,000,000 bytes" in msg and "nothing from the file was run" in msg
    assert mem["peak"] < SMALL


def test_many_views_of_one_storage_limited_in_total(tmp_path, monkeypatch):
    """Each view fits its storage, but together they exceed what the file can justify."""
    import utils.pth_io as pth_io

    monkeypatch.setattr(pth_io, "_EXPANSION_SLACK", 0)  # budget = 16 x file size
    st = Storage("0", FloatStorage, 4096)
    pkl = torch_like_pickle([Tensor(st, 0, (4096,), (1,)) for _ in range(40)])
    path = write_archive(tmp_path / "views.pth", pkl, {"0": np.zeros(4096, "<f4").tobytes()})
    with pytest.raises(UserError, match=r"views\.pth: .*malformed or malicious: a tensor of shape \(4096,\)"):
        load_pth(path)
    # the same file with fewer views (within 16 x its size) loads
    pkl = torch_like_pickle([Tensor(st, 0, (4096,), (1,)) for _ in range(8)])
    path = write_archive(tmp_path / "ok.pth", pkl, {"0": np.zeros(4096, "<f4").tobytes()})
    assert len(load_pth(path)) == 8


def test_deflated_storage_bomb_refused_before_reading(tmp_path):
    numel = 64 << 20  # 256 MiB of float32 zeros, ~260 KB deflated
    stream, crc = deflate_zeros(numel * 4)
    pkl = torch_like_pickle({"w": Tensor(Storage("0", FloatStorage, numel), 0, (numel,), (1,))})
    path = write_raw_zip(tmp_path / "zipbomb.pth", [
        stored("m/data.pkl", pkl), stored("m/byteorder", b"little"),
        ("m/data/0", stream, zipfile.ZIP_DEFLATED, crc, numel * 4), stored("m/version", b"3\n"),
    ])
    assert path.stat().st_size < 400_000
    with peak_traced_memory() as mem, pytest.raises(UserError) as info:
        load_pth(path)
    msg = str(info.value)
    assert "zipbomb.pth" in msg and "malformed or malicious" in msg and "storage record m/data/0" in msg
    assert mem["peak"] < SMALL


def test_deflated_pickle_bomb_refused_before_reading(tmp_path):
    stream, crc = deflate_zeros(256 << 20)
    path = write_raw_zip(tmp_path / "pklbomb.pth", [("m/data.pkl", stream, zipfile.ZIP_DEFLATED, crc, 256 << 20)])
    with peak_traced_memory() as mem, pytest.raises(UserError, match=r"pklbomb\.pth: .*malicious: the pickle record m/data\.pkl"):
        load_pth(path)
    assert mem["peak"] < SMALL


def test_record_holding_more_than_declared_is_read_only_up_to_declared_size(tmp_path):
    # data/0 declares 4 bytes (one float) but its deflate stream expands to 256 MiB.
    stream, _ = deflate_zeros(256 << 20)
    pkl = torch_like_pickle({"w": Tensor(Storage("0", FloatStorage, 1), 0, (1,), (1,))})
    path = write_raw_zip(tmp_path / "liar.pth", [
        stored("m/data.pkl", pkl), ("m/data/0", stream, zipfile.ZIP_DEFLATED, zlib.crc32(bytes(4)), 4),
    ])
    with peak_traced_memory() as mem:
        out = load_pth(path)
    assert_same(out["w"], np.zeros(1, np.float32))
    assert mem["peak"] < SMALL


def test_declared_size_checked_before_reading(tmp_path):
    pkl = torch_like_pickle({"w": Tensor(Storage("0", FloatStorage, 2), 0, (2,), (1,))})
    stream, crc = deflate_zeros(256 << 20)  # declares 256 MiB where 8 bytes are expected
    path = write_raw_zip(tmp_path / "size.pth", [
        stored("m/data.pkl", pkl), ("m/data/0", stream, zipfile.ZIP_DEFLATED, crc, 256 << 20),
    ])
    with peak_traced_memory() as mem, pytest.raises(UserError, match=r"size\.pth: corrupt checkpoint: m/data/0 declares 268435456 bytes, expected 2 x 4"):
        load_pth(path)
    assert mem["peak"] < SMALL


@pytest.mark.parametrize("method, name", [(zipfile.ZIP_BZIP2, "bzip2"), (zipfile.ZIP_LZMA, "lzma")])
def test_bzip2_and_lzma_records_refused(tmp_path, method, name):
    path = tmp_path / "c.pth"
    with zipfile.ZipFile(path, "w", compression=method) as zf:
        zf.writestr("m/data.pkl", pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(UserError, match=rf"c\.pth: .*m/data\.pkl is {name}-compressed"):
        load_pth(path)


def test_deflated_genuine_archive_still_loads(tmp_path):
    w = np.arange(12, dtype="<f4").reshape(3, 4)
    pkl = torch_like_pickle({"w": Tensor(Storage("0", FloatStorage, 12), 0, (3, 4), (4, 1))})
    path = tmp_path / "deflated.pth"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("m/data.pkl", pkl)
        zf.writestr("m/byteorder", "little")
        zf.writestr("m/data/0", w.tobytes())
    assert_same(load_pth(path)["w"], w)


def test_save_pth_files_load_bit_identically(tmp_path, monkeypatch):
    import utils.pth_io as pth_io

    monkeypatch.setattr(pth_io, "_READ_CHUNK", 1000)  # many chunks, none aligned to an element
    rng = np.random.default_rng(1)
    sd = collections.OrderedDict(
        # random bit patterns: NaNs with payloads, signalling NaNs, -0.0, subnormals, inf
        f32=rng.integers(0, 2**32, 5000, dtype=np.uint32).view(np.float32).reshape(50, 100),
        f16=rng.integers(0, 2**16, 777, dtype=np.uint16).view(np.float16),
        f64=rng.integers(0, 2**63, 300, dtype=np.uint64).view(np.float64),
        i64=rng.integers(-2**63, 2**63 - 1, 10, dtype=np.int64),
        u8=rng.integers(0, 256, 4099, dtype=np.uint8),
    )
    path = tmp_path / "bits.pth"
    save_pth(sd, path)
    out = load_pth(path)
    for k, v in sd.items():
        assert out[k].dtype == v.dtype and out[k].shape == v.shape
        assert out[k].tobytes() == v.tobytes(), k
