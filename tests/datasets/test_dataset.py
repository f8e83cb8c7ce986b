"""Image reading, preprocessing / augmentation and the multi-label dataset."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from datasets.classes import read_class_file
from datasets.config import DATASETS
from datasets.dataset import MultiLabelDataset
from datasets.image_io import list_images, load_rgb
from datasets.loader import make_loader, set_loader_epoch
from datasets.samplers import SeededBatchSampler
from datasets.splits import read_split
from datasets.transforms import (DEFAULT_MEAN, DEFAULT_STD, TestTransform, TrainTransform,
                                 WIDER_MEAN, WIDER_STD, crop_bbox, preprocess,
                                 random_resized_crop_box)
from utils.errors import UserError


def _gradient(w: int, h: int) -> Image.Image:
    """An RGB test image whose every pixel differs (so flips and crops are visible)."""
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1),
                    (xx * 7 + yy * 13) % 256], axis=-1).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


# --------------------------------------------------------------------------- load_rgb
def test_load_rgb_greyscale_and_one_bit(tmp_path: Path) -> None:
    Image.new("L", (5, 3), 77).save(tmp_path / "grey.png")
    one = Image.new("1", (4, 2), 0)
    one.putpixel((1, 0), 1)
    one.save(tmp_path / "bits.png")
    grey = load_rgb(tmp_path / "grey.png")
    assert grey.mode == "RGB" and grey.size == (5, 3)
    assert np.all(np.asarray(grey) == 77)
    bits = np.asarray(load_rgb(tmp_path / "bits.png"))
    assert bits.shape == (2, 4, 3)
    assert bits[0, 1].tolist() == [255, 255, 255] and bits[0, 0].tolist() == [0, 0, 0]


def test_load_rgb_palette_with_transparency_and_alpha_are_dropped(tmp_path: Path) -> None:
    pal = Image.new("P", (3, 2), 0)
    pal.putpalette([200, 10, 20, 5, 250, 60] + [0] * 762)
    pal.putpixel((2, 1), 1)
    pal.save(tmp_path / "pal.png", transparency=0)
    arr = np.asarray(load_rgb(tmp_path / "pal.png"))
    assert arr[0, 0].tolist() == [200, 10, 20]  # the transparent entry keeps its colour
    assert arr[1, 2].tolist() == [5, 250, 60]

    Image.new("RGBA", (2, 2), (10, 20, 30, 0)).save(tmp_path / "rgba.png")
    assert np.asarray(load_rgb(tmp_path / "rgba.png"))[0, 0].tolist() == [10, 20, 30]
    Image.new("LA", (2, 2), (90, 0)).save(tmp_path / "la.png")
    assert np.asarray(load_rgb(tmp_path / "la.png"))[1, 1].tolist() == [90, 90, 90]


def test_load_rgb_cmyk_jpeg_matches_pil_convert(tmp_path: Path) -> None:
    Image.new("CMYK", (8, 8), (255, 0, 0, 0)).save(tmp_path / "cmyk.jpg", quality=95)
    got = np.asarray(load_rgb(tmp_path / "cmyk.jpg"))
    with Image.open(tmp_path / "cmyk.jpg") as im:
        assert im.mode == "CMYK"
        expected = np.asarray(im.convert("RGB"))
    np.testing.assert_array_equal(got, expected)
    assert np.abs(got[4, 4].astype(int) - [0, 255, 255]).max() <= 3  # cyan


def test_load_rgb_sixteen_bit_is_scaled_not_clipped(tmp_path: Path) -> None:
    wide = np.array([[0, 257, 1000, 32896, 65535]], dtype=np.uint16)
    Image.fromarray(wide).save(tmp_path / "wide.png")
    with Image.open(tmp_path / "wide.png") as im:
        assert im.mode in ("I;16", "I")
    arr = np.asarray(load_rgb(tmp_path / "wide.png"))
    assert arr.dtype == np.uint8
    assert arr[0, :, 0].tolist() == [0, 1, 4, 128, 255]
    assert np.all(arr[..., 0] == arr[..., 2])
    # 32-bit integer greyscale too
    Image.fromarray(wide.astype(np.int32), mode="I").save(tmp_path / "int.tif")
    assert np.asarray(load_rgb(tmp_path / "int.tif"))[0, :, 1].tolist() == [0, 1, 4, 128, 255]


def test_load_rgb_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="nope.jpg"):
        load_rgb(tmp_path / "nope.jpg")
    (tmp_path / "junk.jpg").write_bytes(b"this is not an image at all")
    with pytest.raises(UserError, match="junk.jpg"):
        load_rgb(tmp_path / "junk.jpg")
    _gradient(64, 48).save(tmp_path / "full.jpg", quality=90)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"cut\.jpg.*(truncated|corrupt)"):
        load_rgb(tmp_path / "cut.jpg")
    with pytest.raises(UserError, match="folder"):
        load_rgb(tmp_path)


def test_list_images(tmp_path: Path) -> None:
    for name in ("b.JPG", "a.png", "c.Jpeg", ".hidden.jpg", "notes.txt"):
        Image.new("RGB", (2, 2)).save(tmp_path / name, format="PNG")
    (tmp_path / "sub.jpg").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.png", "b.JPG", "c.Jpeg"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no images"):
        list_images(empty)
    with pytest.raises(UserError, match="not found"):
        list_images(tmp_path / "missing")


# --------------------------------------------------------------------------- preprocess
def test_preprocess_solid_colour_exact_values() -> None:
    img = Image.new("RGB", (50, 30), (10, 128, 250))
    x = preprocess(img, 16)
    assert x.shape == (3, 16, 16) and x.dtype == np.float32
    expected = np.array([10, 128, 250], dtype=np.float32) / np.float32(255)
    np.testing.assert_array_equal(x, np.broadcast_to(expected[:, None, None], x.shape))

    mean, std = (0.1, 0.5, 0.9), (0.2, 0.25, 0.5)
    y = preprocess(img, 8, mean, std)
    want = (expected - np.array(mean, np.float32)) / np.array(std, np.float32)
    np.testing.assert_allclose(y[:, 3, 5], want, rtol=0, atol=1e-7)
    assert preprocess(img, 8, DEFAULT_MEAN, DEFAULT_STD).shape == (3, 8, 8)


def test_preprocess_is_pil_bilinear_resize_then_scale() -> None:
    img = _gradient(73, 41)
    x = preprocess(img, 24)
    ref = np.asarray(img.resize((24, 24), Image.Resampling.BILINEAR), np.float32) / 255
    np.testing.assert_array_equal(x, ref.transpose(2, 0, 1))
    np.testing.assert_array_equal(TestTransform(24)(img), x)
    # a non-RGB input is converted with the same rules as load_rgb
    np.testing.assert_array_equal(preprocess(img.convert("L"), 8),
                                  preprocess(img.convert("L").convert("RGB"), 8))


@pytest.mark.parametrize("bad", [dict(img_size=0), dict(mean=(0, 0)), dict(std=(1, 0, 1))])
def test_preprocess_rejects_bad_settings(bad: dict) -> None:
    kwargs = dict(img_size=8, mean=DEFAULT_MEAN, std=DEFAULT_STD) | bad
    with pytest.raises(UserError):
        preprocess(Image.new("RGB", (4, 4)), **kwargs)


# --------------------------------------------------------------------------- train transform
def test_train_transform_shape_and_seed_determinism() -> None:
    img = _gradient(90, 60)
    a = TrainTransform(32, seed=7)
    b = TrainTransform(32, seed=7)
    outs_a = [a(img) for _ in range(5)]
    outs_b = [b(img) for _ in range(5)]
    for oa, ob in zip(outs_a, outs_b):
        assert oa.shape == (3, 32, 32) and oa.dtype == np.float32
        np.testing.assert_array_equal(oa, ob)
    assert not all(np.array_equal(outs_a[0], o) for o in outs_a[1:])
    a.reseed(7)
    np.testing.assert_array_equal(a(img), outs_a[0])
    # an explicit generator overrides the transform's own
    g1, g2 = np.random.default_rng(3), np.random.default_rng(3)
    np.testing.assert_array_equal(a(img, rng=g1), b(img, rng=g2))


def test_train_transform_flip_only_and_wider() -> None:
    img = _gradient(40, 30)
    t = TrainTransform(16, flip_prob=1.0, random_crop=False)
    mirrored = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    np.testing.assert_array_equal(t(img), preprocess(mirrored, 16))
    w = DATASETS["wider"].train_transform(16)  # the WIDER recipe: flip + resize, mean = std = 0.5
    assert not w.random_crop and w.mean == WIDER_MEAN and w.std == WIDER_STD
    outs = {w(img, rng=np.random.default_rng(s)).tobytes() for s in range(12)}
    assert outs == {preprocess(img, 16, WIDER_MEAN, WIDER_STD).tobytes(),
                    preprocess(mirrored, 16, WIDER_MEAN, WIDER_STD).tobytes()}
    np.testing.assert_array_equal(DATASETS["wider"].test_transform(16)(img),
                                  preprocess(img, 16, WIDER_MEAN, WIDER_STD))
    assert all(DATASETS[name].train_transform(16).random_crop == (name not in ("wider", "demo")) for name in DATASETS)


def test_train_transform_flips_about_half_the_time() -> None:
    img = _gradient(20, 20)
    t = TrainTransform(20, random_crop=False, seed=1)
    plain = preprocess(img, 20)
    flips = sum(not np.array_equal(t(img), plain) for _ in range(400))
    assert 150 < flips < 250


@pytest.mark.parametrize("size", [(100, 100), (500, 375), (37, 53), (400, 90)])
def test_random_resized_crop_box_bounds(size: tuple[int, int]) -> None:
    w, h = size
    rng = np.random.default_rng(0)
    scale, ratio = (0.7, 1.0), (3 / 4, 4 / 3)
    for _ in range(3000):
        left, top, cw, ch = random_resized_crop_box(w, h, scale, ratio, rng)
        assert 0 <= left and 0 <= top and cw >= 1 and ch >= 1
        assert left + cw <= w and top + ch <= h
        # rounding to whole pixels moves the ratio by at most about one pixel per side
        assert ratio[0] * (ch - 1) / ch - 1 / ch <= cw / ch <= ratio[1] * (ch + 1) / ch + 1 / ch
        if 0.75 <= w / h <= 4 / 3:  # the fallback crop is then the whole image
            area = cw * ch / (w * h)
            assert scale[0] - 3 * (w + h) / (w * h) <= area <= 1.0


def test_random_resized_crop_box_fallback_clamps_ratio() -> None:
    # a scale range nothing fits in forces the fallback: a centre crop with ratio 4/3
    rng = np.random.default_rng(0)
    assert random_resized_crop_box(400, 90, (1.0, 1.0), (3 / 4, 4 / 3), rng) == (140, 0, 120, 90)
    assert random_resized_crop_box(90, 400, (1.0, 1.0), (3 / 4, 4 / 3), rng) == (0, 140, 90, 120)


def test_crop_bbox() -> None:
    img = _gradient(50, 40)
    box = crop_bbox(img, [10, 5, 20, 15])
    assert box.size == (20, 15)
    np.testing.assert_array_equal(np.asarray(box), np.asarray(img)[5:20, 10:30])
    assert crop_bbox(img, [-5, -5, 20, 100]).size == (15, 40)  # clamped
    assert crop_bbox(img, [10.4, 5.6, 19.5, 14.2]).size == (20, 14)  # rounded corners
    with pytest.raises(UserError, match="person.jpg"):
        crop_bbox(img, [10, 10, 0, 5], source="person.jpg")
    with pytest.raises(UserError, match="person.jpg"):
        crop_bbox(img, [60, 10, 5, 5], source="person.jpg")
    with pytest.raises(UserError, match="person.jpg"):
        crop_bbox(img, [1, 2, 3], source="person.jpg")


# --------------------------------------------------------------------------- dataset
COLOURS = [(200, 0, 0), (0, 200, 0), (0, 0, 200), (90, 90, 90), (250, 250, 0), (0, 120, 240)]
TARGETS = [[1, -1, 0], [-1, 1, -1], [0, -1, 1], [1, 1, -1], [-1, -1, 1], [99, 0, 1]]


@pytest.fixture()
def split(tmp_path: Path) -> Path:
    """A JSON split of 6 images (absolute paths) with ternary / 99 labels, and classes.txt."""
    img_dir = tmp_path / "imgs"
    img_dir.mkdir()
    entries = []
    for k, (colour, target) in enumerate(zip(COLOURS, TARGETS)):
        path = img_dir / f"img{k}.png"
        arr = np.asarray(_gradient(30 + 4 * k, 24), dtype=np.uint8).copy()
        arr[:4, :4] = colour
        Image.fromarray(arr).save(path)
        entries.append({"target": target, "img_path": str(path)})
    (tmp_path / "split.json").write_text(json.dumps(entries))
    (tmp_path / "classes.txt").write_text("cat\ndog\n# a comment line\nbird\n\n")
    return tmp_path / "split.json"


def test_dataset_items_and_raw_labels(split: Path) -> None:
    ds = MultiLabelDataset(split, TestTransform(16), classes=split.parent / "classes.txt")
    assert len(ds) == 6 and ds.classes == ["cat", "dog", "bird"] and ds.num_classes == 3
    x, y = ds[0]
    assert x.shape == (3, 16, 16) and x.dtype == np.float32
    assert y.dtype == np.float32 and y.tolist() == [1, -1, 0]
    assert ds[-1][1].tolist() == [99, 0, 1]
    assert ds.targets.shape == (6, 3) and ds.targets.dtype == np.float32
    np.testing.assert_array_equal(ds.targets, np.array(TARGETS, np.float32))
    assert ds.img_paths[2].endswith("img2.png")
    np.testing.assert_array_equal(x, preprocess(load_rgb(ds.img_paths[0]), 16))
    with pytest.raises(IndexError):
        ds[6]
    unnamed = MultiLabelDataset(split, TestTransform(8))
    assert unnamed.classes == ["class_0", "class_1", "class_2"]


def test_dataset_relative_paths_cwd_then_root(split: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    rel = [{"target": [1, 0, 0], "img_path": "imgs/img1.png"}]
    (tmp_path / "rel.json").write_text(json.dumps(rel))
    monkeypatch.chdir(tmp_path)
    assert MultiLabelDataset("rel.json", TestTransform(8))[0][0].shape == (3, 8, 8)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    ds = MultiLabelDataset(tmp_path / "rel.json", TestTransform(8), root=tmp_path)
    assert ds.resolve_path(0) == tmp_path / "imgs" / "img1.png"
    with pytest.raises(UserError, match=r"imgs/img1\.png.*entry 0 of .*rel\.json"):
        MultiLabelDataset(tmp_path / "rel.json", TestTransform(8))[0]


def test_dataset_bad_image_names_file(split: Path) -> None:
    entries = json.loads(split.read_text())
    bad = split.parent / "imgs" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    entries[1]["img_path"] = str(bad)
    (split.parent / "bad.json").write_text(json.dumps(entries))
    ds = MultiLabelDataset(split.parent / "bad.json", TestTransform(8))
    with pytest.raises(UserError, match=r"broken\.jpg.*entry 1"):
        ds[1]


def test_dataset_bbox_entries_are_cropped(tmp_path: Path) -> None:
    arr = np.zeros((40, 60, 3), np.uint8)
    arr[10:30, 20:50] = (0, 255, 0)
    Image.fromarray(arr).save(tmp_path / "person.png")
    entries = [{"target": [1, 0, 99], "img_path": str(tmp_path / "person.png"),
                "bbox": [20, 10, 30, 20]}]
    (tmp_path / "wider.json").write_text(json.dumps(entries))
    x, y = MultiLabelDataset(tmp_path / "wider.json", DATASETS["wider"].test_transform(8))[0]
    np.testing.assert_allclose(x[1], 1.0)   # (1 - 0.5) / 0.5: all green inside the box
    np.testing.assert_allclose(x[0], -1.0)
    assert y.tolist() == [1, 0, 99]
    full = MultiLabelDataset(tmp_path / "wider.json", TestTransform(8), use_bbox=False)[0][0]
    assert full.min() == 0.0


BAD_JSON = {
    "not_a_list": ({"target": [1], "img_path": "a.jpg"}, "JSON list"),
    "empty": ([], "empty list"),
    "not_an_object": ([{"target": [1, 0, 0], "img_path": "a.jpg"}, 5], "entry 1"),
    "missing_target": ([{"target": [1, 0, 0], "img_path": "a.jpg"}, {"img_path": "b.jpg"}],
                       "entry 1 has no 'target'"),
    "missing_path": ([{"target": [1, 0, 0]}], "entry 0 has no 'img_path'"),
    "wrong_length": ([{"target": [1, 0, 0], "img_path": "a"}, {"target": [1, 0], "img_path": "b"}],
                     "entry 1: 'target' has 2 values"),
    "string_value": ([{"target": [1, "1", 0], "img_path": "a"}], "entry 0: target value 1"),
    "bool_value": ([{"target": [1, 0, 0], "img_path": "a"}, {"target": [True, 0, 0], "img_path": "b"}],
                   "entry 1: target value 0"),
    "nan_value": ([{"target": [1, 0, 0], "img_path": "a"}, {"target": [1, float("nan"), 0],
                                                            "img_path": "b"}], "entry 1"),
    "bad_bbox": ([{"target": [1, 0, 0], "img_path": "a", "bbox": [1, 2]}], "entry 0: 'bbox'"),
    "target_not_list": ([{"target": 1, "img_path": "a"}], "entry 0: 'target'"),
}


@pytest.mark.parametrize("case", sorted(BAD_JSON))
def test_bad_json_names_file_and_entry(tmp_path: Path, case: str) -> None:
    data, fragment = BAD_JSON[case]
    path = tmp_path / f"{case}.json"
    path.write_text(json.dumps(data))
    with pytest.raises(UserError) as info:
        MultiLabelDataset(path, TestTransform(8))
    msg = str(info.value)
    assert str(path) in msg and fragment in msg


def test_bad_json_syntax_and_class_mismatch(tmp_path: Path, split: Path) -> None:
    (tmp_path / "broken.json").write_text('[{"target": [1], "img_path": "a.jpg"},')
    with pytest.raises(UserError, match=r"broken\.json.*not valid JSON.*line 1"):
        read_split(tmp_path / "broken.json")
    with pytest.raises(UserError, match=r"missing\.json does not exist"):
        read_split(tmp_path / "missing.json")
    with pytest.raises(UserError, match=r"split\.json: entry 0: 'target' has 3 values.*4 classes"):
        MultiLabelDataset(split, TestTransform(8), classes=["a", "b", "c", "d"])
    (tmp_path / "dup.txt").write_text("a\nb\na\n")
    with pytest.raises(UserError, match=r"dup\.txt, line 3: class 'a'"):
        read_class_file(tmp_path / "dup.txt")
    with pytest.raises(UserError, match="unique"):
        MultiLabelDataset(split, TestTransform(8), classes=["a", "a", "b"])


# --------------------------------------------------------------------------- loading
def _batches(loader: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(x.numpy(), y.numpy()) for x, y in loader]


def test_loader_same_batches_with_zero_and_one_worker(split: Path) -> None:
    ds = MultiLabelDataset(split, TrainTransform(16), seed=5)
    runs = []
    for workers in (0, 1, 0):
        loader = make_loader(ds, batch_size=4, shuffle=True, num_workers=workers, seed=11)
        set_loader_epoch(loader, 0)
        runs.append(_batches(loader))
    assert [b[0].shape for b in runs[0]] == [(4, 3, 16, 16), (2, 3, 16, 16)]
    for other in runs[1:]:
        for (xa, ya), (xb, yb) in zip(runs[0], other):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)
    # another epoch: another order and other augmentations, reproducible again
    loader = make_loader(ds, batch_size=4, shuffle=True, num_workers=0, seed=11)
    set_loader_epoch(loader, 1)
    epoch1 = _batches(loader)
    assert not np.array_equal(epoch1[0][0], runs[0][0][0])
    sampler = SeededBatchSampler(6, 4, shuffle=True, seed=11)
    sampler.set_epoch(1)
    order = [i for b in sampler for i in b]
    np.testing.assert_array_equal(epoch1[0][1], ds.targets[order[:4]])


def test_unseeded_workers_do_not_repeat_each_other(split: Path) -> None:
    entries = json.loads(split.read_text())
    same = [dict(entries[0]) for _ in range(8)]
    (split.parent / "same.json").write_text(json.dumps(same))
    ds = MultiLabelDataset(split.parent / "same.json", TrainTransform(16, seed=0))
    loader = make_loader(ds, batch_size=1, shuffle=False, num_workers=2)
    outs = [x.numpy().tobytes() for x, _ in loader]
    assert outs[0] != outs[1]  # two workers, same image, same starting generator state


def test_bad_image_inside_worker_surfaces_file_name(split: Path) -> None:
    entries = json.loads(split.read_text())
    bad = split.parent / "imgs" / "broken_in_worker.jpg"
    bad.write_bytes(b"garbage")
    entries[3]["img_path"] = str(bad)
    (split.parent / "bad.json").write_text(json.dumps(entries))
    ds = MultiLabelDataset(split.parent / "bad.json", TestTransform(8))
    loader = make_loader(ds, batch_size=2, shuffle=False, num_workers=1)
    with pytest.raises(UserError, match=r"broken_in_worker\.jpg"):
        _batches(loader)


def test_dataset_rejects_negative_seed(split: Path) -> None:
    with pytest.raises(UserError, match="seed"):
        MultiLabelDataset(split, TestTransform(8), seed=-1)
    assert math.isclose(float(TestTransform(8)(Image.new("RGB", (3, 3), (255, 0, 0)))[0, 0, 0]), 1.0)
