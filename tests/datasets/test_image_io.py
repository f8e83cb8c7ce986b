"""Tests for datasets.image_io.load_rgb: EXIF orientation and the pixel limit (decompression bombs)."""
from __future__ import annotations

import importlib
import os
import struct
import subprocess
import sys
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps

from datasets import image_io
from datasets.image_io import (DEFAULT_MAX_IMAGE_PIXELS, MAX_IMAGE_PIXELS_ENV, load_rgb, max_image_pixels,
                               set_max_image_pixels)
from tests.conftest import REPO_ROOT
from cli.args import apply_image_limit
from utils.errors import UserError

BIG_SIDE = 12000  # 144 million pixels: over the default limit of 89,478,485


@pytest.fixture(autouse=True)
def default_limit(monkeypatch):
    """Every test starts from the default limit and leaves no override or variable behind."""
    monkeypatch.setenv(MAX_IMAGE_PIXELS_ENV, "")  # restored (removed) after the test
    set_max_image_pixels(None)
    yield
    set_max_image_pixels(None)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@pytest.fixture(scope="session")
def bomb_png(tmp_path_factory) -> Path:
    """A valid 12000 x 12000 black 1-bit PNG of ~18 KB, written row block by row block
    (never more than ~1.5 MB in memory); decoding it takes 144 MB, 432 MB as RGB."""
    row = bytes(1 + BIG_SIDE // 8)  # filter byte 0 + 1500 bytes of 1-bit pixels
    comp = zlib.compressobj(9)
    idat = bytearray()
    for _ in range(BIG_SIDE // 1000):
        idat += comp.compress(row * 1000)
    idat += comp.flush()
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    ihdr = struct.pack(">IIBBBBB", BIG_SIDE, BIG_SIDE, 1, 0, 0, 0, 0)  # 1-bit greyscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", bytes(idat))
                     + _png_chunk(b"IEND", b""))
    assert path.stat().st_size < 100_000
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as img:  # a genuine PNG: PIL reads the header
            assert img.size == (BIG_SIDE, BIG_SIDE) and img.mode == "1"
    return path


def _small_png(path: Path, size: tuple[int, int] = (100, 50)) -> Path:
    Image.new("RGB", size, (10, 200, 30)).save(path)
    return path


# --------------------------------------------------------------------------- EXIF orientation


def _pattern(width: int, height: int) -> Image.Image:
    """RGB image whose quadrants differ, so every rotation/mirror gives other pixels."""
    arr = np.zeros((height, width, 3), np.uint8)
    arr[: height // 2, : width // 2] = (255, 0, 0)
    arr[: height // 2, width // 2:] = (0, 255, 0)
    arr[height // 2:, : width // 2] = (0, 0, 255)
    arr[height // 2:, width // 2:] = (255, 255, 255)
    return Image.fromarray(arr)


def test_jpeg_with_exif_orientation_6_is_turned_upright(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display after turning 90 degrees clockwise
    path = tmp_path / "phone.jpg"
    _pattern(64, 32).save(path, quality=95, exif=exif)
    with Image.open(path) as raw:
        stored = np.asarray(raw.convert("RGB"))  # what the reference scores
    got = load_rgb(path)
    assert stored.shape[:2] == (32, 64)
    assert got.size == (32, 64)  # (width, height) swapped
    arr = np.asarray(got)
    np.testing.assert_array_equal(arr, np.rot90(stored, k=-1))  # exactly the stored pixels, turned clockwise
    # the stored top-left quadrant (red) is now the top-right one
    assert arr[5, 27].tolist() == pytest.approx([255, 0, 0], abs=30)
    assert arr[5, 5].tolist() == pytest.approx([0, 0, 255], abs=30)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_matches_pil_exif_transpose(tmp_path, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.png"  # lossless: exact comparison
    _pattern(6, 4).save(path, exif=exif)
    with Image.open(path) as img:
        expected = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    np.testing.assert_array_equal(np.asarray(load_rgb(path)), expected)


def test_no_or_broken_exif_reads_as_stored(tmp_path):
    plain = tmp_path / "plain.jpg"
    _pattern(8, 4).save(plain)
    assert load_rgb(plain).size == (8, 4)
    exif = Image.Exif()
    exif[0x0112] = 99  # not an orientation
    odd = tmp_path / "odd.png"
    _pattern(8, 4).save(odd, exif=exif)
    assert load_rgb(odd).size == (8, 4)


# --------------------------------------------------------------------------- pixel limit


def test_bomb_png_refused_before_decoding(bomb_png, monkeypatch):
    loads = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(self) or real_load(self))
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's DecompressionBombWarning must not leak out
        with pytest.raises(UserError) as info:
            load_rgb(bomb_png)
    assert time.perf_counter() - start < 2
    assert loads == []  # refused from the header: nothing decoded
    msg = str(info.value)
    assert str(bomb_png) in msg and "12000 x 12000 = 144,000,000 pixels" in msg
    assert "limit of 89,478,485 pixels" in msg
    assert "--max_image_pixels" in msg and MAX_IMAGE_PIXELS_ENV in msg and "0 = no limit" in msg


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_bomb_png_refusal_uses_little_memory(bomb_png):
    """In a fresh process: decoding would take >= 144 MB (432 MB more as RGB).

    Measured with VmHWM (the peak resident size of this address space, reset by exec), not
    ru_maxrss, which on Linux keeps the high-water mark of the forked parent from before exec.
    """
    code = (
        "import re, sys\n"
        "from datasets.image_io import load_rgb\n"
        "from utils.errors import UserError\n"
        "def hwm():\n"
        "    return int(re.search(r'VmHWM:\\s*(\\d+)', open('/proc/self/status').read())[1])\n"
        "before = hwm()\n"
        "try:\n"
        "    load_rgb(sys.argv[1])\n"
        "except UserError:\n"
        "    pass\n"
        "else:\n"
        "    sys.exit('not refused')\n"
        "print(hwm() - before)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != MAX_IMAGE_PIXELS_ENV}
    out = subprocess.run([sys.executable, "-c", code, str(bomb_png)], cwd=REPO_ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) < 50_000  # KiB


def test_far_over_limit_refused_by_pil_check_with_our_message(bomb_png):
    set_max_image_pixels(1000)  # 144M is more than twice the limit: PIL's own check fires first
    with pytest.raises(UserError, match=r"bomb\.png: it is 144,000,000 pixels, more than the limit of 1,000 pixels"):
        load_rgb(bomb_png)


@pytest.mark.filterwarnings("ignore:Image was not the expected size")
def test_size_learnt_while_decoding_is_limited_too(tmp_path):
    """An ICO whose directory says 16 x 16 but whose embedded PNG is 200 x 200."""
    path = tmp_path / "sneaky.ico"
    Image.new("RGB", (200, 200), (1, 2, 3)).save(path, sizes=[(200, 200)])
    raw = bytearray(path.read_bytes())
    raw[6:8] = bytes([16, 16])  # the directory entry's width and height
    path.write_bytes(bytes(raw))
    set_max_image_pixels(5000)
    with pytest.raises(UserError, match=r"sneaky\.ico: it is 40,000 pixels, more than the limit of 5,000"):
        load_rgb(path)
    set_max_image_pixels(0)
    assert load_rgb(path).size == (200, 200)


def test_set_max_image_pixels_and_env_var_change_the_limit(tmp_path, monkeypatch):
    path = _small_png(tmp_path / "small.png")  # 100 x 50 = 5000 pixels
    assert max_image_pixels() == DEFAULT_MAX_IMAGE_PIXELS
    assert load_rgb(path).size == (100, 50)

    monkeypatch.setenv(MAX_IMAGE_PIXELS_ENV, "4999")
    with pytest.raises(UserError, match=r"small\.png: it is 100 x 50 = 5,000 pixels, more than the limit of 4,999"):
        load_rgb(path)
    monkeypatch.setenv(MAX_IMAGE_PIXELS_ENV, "5000")
    assert load_rgb(path).size == (100, 50)

    set_max_image_pixels(4999)  # the function wins over the variable
    with pytest.raises(UserError, match="limit of 4,999"):
        load_rgb(path)
    set_max_image_pixels(0)  # no limit
    assert max_image_pixels() == 0 and load_rgb(path).size == (100, 50)
    set_max_image_pixels(None)  # back to the variable
    assert max_image_pixels() == 5000

    monkeypatch.setenv(MAX_IMAGE_PIXELS_ENV, "lots")
    with pytest.raises(UserError, match=rf"{MAX_IMAGE_PIXELS_ENV}='lots' is not a whole number >= 0"):
        load_rgb(path)
    with pytest.raises(ValueError):
        set_max_image_pixels(-1)


def test_only_our_limit_decides_and_pil_setting_is_restored(tmp_path, monkeypatch):
    path = _small_png(tmp_path / "small.png")  # 5000 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # PIL alone would refuse it (> 2 x 100)
    set_max_image_pixels(10_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_rgb(path).size == (100, 50)
    assert Image.MAX_IMAGE_PIXELS == 100  # PIL's own setting is back after the call
    with pytest.raises(UserError):
        load_rgb(tmp_path / "missing.png")
    assert Image.MAX_IMAGE_PIXELS == 100  # also after an error


# --------------------------------------------------------------------------- command line


def test_apply_image_limit_sets_process_and_child_limit(tmp_path):
    path = _small_png(tmp_path / "small.png")  # 5000 pixels
    apply_image_limit(None)
    assert max_image_pixels() == DEFAULT_MAX_IMAGE_PIXELS
    apply_image_limit(4000)
    assert max_image_pixels() == 4000
    assert os.environ[MAX_IMAGE_PIXELS_ENV] == "4000"  # for spawned workers
    with pytest.raises(UserError, match="limit of 4,000"):
        load_rgb(path)
    child = subprocess.run(
        [sys.executable, "-c", "import sys; from datasets.image_io import load_rgb; load_rgb(sys.argv[1])", str(path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )
    assert child.returncode != 0 and "limit of 4,000" in child.stderr


def test_apply_image_limit_rejects_bad_env_var_up_front(monkeypatch):
    monkeypatch.setenv(MAX_IMAGE_PIXELS_ENV, "-3")
    with pytest.raises(UserError, match=MAX_IMAGE_PIXELS_ENV):
        apply_image_limit(None)


SCRIPTS = {
    "train": [],
    "val": ["--load_from", "w.pdparams"],
    "predict": ["--load_from", "w.pdparams"],
    "infer": ["--input_file", "x.jpg"],
}


@pytest.mark.parametrize("script", list(SCRIPTS))
def test_scripts_apply_the_flag_right_after_parsing(script, monkeypatch, capsys):
    module = importlib.import_module(script)
    parser = module.build_parser()
    assert parser.parse_args([*SCRIPTS[script]]).max_image_pixels is None
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args([*SCRIPTS[script], "--max_image_pixels", "-1"])
    assert exit_info.value.code == 2 and "--max_image_pixels" in capsys.readouterr().err

    class Applied(Exception):
        pass

    seen = []

    def fake_apply(value):
        seen.append(value)
        raise Applied  # stop main() here: nothing else runs

    monkeypatch.setattr(module, "apply_image_limit", fake_apply)
    with pytest.raises(Applied):
        module.main([*SCRIPTS[script], "--max_image_pixels", "1234"])
    assert seen == [1234]


def test_script_help_shows_the_flag():
    """End to end through a real process (infer.py: the script that starts without Paddle)."""
    out = subprocess.run([sys.executable, "infer.py", "--help"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "--max_image_pixels N" in out.stdout and MAX_IMAGE_PIXELS_ENV in out.stdout
    bad = subprocess.run([sys.executable, "infer.py", "--input_file", "x.jpg"], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=120, env={**os.environ, MAX_IMAGE_PIXELS_ENV: "many"})
    assert bad.returncode == 2 and bad.stderr.startswith(f"error: environment variable {MAX_IMAGE_PIXELS_ENV}='many'")
    assert "Traceback" not in bad.stderr
