"""deploy.heatmaps: map upsampling and normalisation, overlays, contact sheets, file names and files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deploy.heatmaps import (NO_CLASS_TEXT, contact_sheet, normalise_map, render_overlay, safe_file_part, upsample_map,
                             write_image_heatmaps)
from utils.errors import UserError


def _image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("map_hw", [(2, 2), (7, 5), (14, 14)])
@pytest.mark.parametrize("size", [(37, 53), (200, 120), (16, 16)])
def test_upsample_one_hot_peaks_in_its_cell(map_hw: tuple[int, int], size: tuple[int, int]) -> None:
    """[height, width] float32, and the hot cell's region holds the maximum."""
    h, w = map_hw
    width, height = size
    row, col = h - 1, w // 2
    m = np.zeros((h, w), dtype=np.float32)
    m[row, col] = 1.0
    up = upsample_map(m, width, height)
    assert up.shape == (height, width) and up.dtype == np.float32
    peak_y, peak_x = np.unravel_index(int(up.argmax()), up.shape)
    # The hot cell spans [row*H/h, (row+1)*H/h) x [col*W/w, (col+1)*W/w) of the output (1 px slack for rounding).
    assert row * height / h - 1 <= peak_y < (row + 1) * height / h + 1
    assert col * width / w - 1 <= peak_x < (col + 1) * width / w + 1
    assert up.max() <= 1.0 + 1e-6 and up.min() >= -1e-6
    # Far from the hot cell (the opposite corner) the map stays 0 when cells are bigger than one pixel.
    if height >= 2 * h and width >= 2 * w:
        assert up[0, 0 if col >= w // 2 else -1] == pytest.approx(0.0, abs=1e-6)


def test_upsample_is_bilinear_between_cell_centres() -> None:
    """A 1 x 2 map [0, 1] stretched to 1 x 4: pixel centres at 1/4, 3/4 of each cell give 0, 0.25, 0.75, 1."""
    up = upsample_map(np.array([[0.0, 1.0]]), 4, 1)
    np.testing.assert_allclose(up[0], [0.0, 0.25, 0.75, 1.0], atol=1e-6)


def test_normalise_map() -> None:
    np.testing.assert_allclose(normalise_map(np.array([[2.0, 4.0], [3.0, 6.0]])), [[0.0, 0.5], [0.25, 1.0]])
    const = normalise_map(np.full((3, 4), 7.5))
    assert const.shape == (3, 4) and const.dtype == np.float32
    assert np.all(const == 0.0)
    with_nan = normalise_map(np.array([[np.nan, 1.0], [np.inf, 3.0]]))
    assert np.all(np.isfinite(with_nan))
    np.testing.assert_allclose(with_nan, [[0.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(normalise_map(np.array([[-1.0, -3.0]])), [[1.0, 0.0]])


def test_overlay_colours_where_the_map_is_high() -> None:
    """On a black image the overlay is bright where the map is high, dark where it is low; the text box is dark."""
    width, height = 120, 80
    black = Image.new("RGB", (width, height))
    m = np.zeros((4, 6), dtype=np.float32)
    m[3, 5] = 5.0  # bottom-right cell
    out = render_overlay(black, m, "dog", 0.934)
    assert out.mode == "RGB" and out.size == (width, height)
    px = np.asarray(out, dtype=np.int32)
    hot = px[70:80, 105:120]  # inside the hot cell (rows 60..80, cols 100..120)
    cold = px[30:50, 10:40]  # far away, below the label
    assert hot.sum(axis=2).mean() > 200  # inferno's top is near white, at alpha 0.5 still bright
    assert cold.sum(axis=2).mean() < 20  # inferno's bottom is near black
    assert not np.array_equal(px[60:, 90:], np.zeros_like(px[60:, 90:]))
    # The label: light text pixels in the top-left corner (anti-aliased, so not always pure white).
    assert px[:20, :60].max() > 150
    # alpha 0 leaves the image outside the label box.
    img = _image(width, height, seed=1)
    same = np.asarray(render_overlay(img, m, "dog", 0.5, alpha=0.0))
    np.testing.assert_array_equal(same[40:, :], np.asarray(img)[40:, :])


def test_overlay_on_tiny_and_odd_inputs() -> None:
    """A 16 x 16 image, a greyscale image, a constant map and a non-Latin label do not crash."""
    tiny = render_overlay(_image(16, 16), np.ones((2, 2)), "traffic light", 0.51)
    assert tiny.size == (16, 16) and tiny.mode == "RGB"
    grey = render_overlay(Image.new("L", (30, 20), 128), np.arange(6.0).reshape(2, 3), "狗", 1.0, cmap="viridis")
    assert grey.size == (30, 20) and grey.mode == "RGB"
    with pytest.raises(UserError, match="not a matplotlib colour map"):
        render_overlay(_image(16, 16), np.ones((2, 2)), "x", 0.5, cmap="no_such_map")


def test_contact_sheet_layout() -> None:
    tiles = [_image(40, 20), _image(10, 10), _image(30, 60)]
    sheet = contact_sheet(tiles, tile_height=50)
    # widths at height 50: 100, 50, 25, plus two 4-px gaps
    assert sheet.size == (100 + 50 + 25 + 8, 50)
    grid = contact_sheet([_image(20, 20)] * 5, columns=2, tile_height=20)
    assert grid.size == (20 + 4 + 20, 3 * 20 + 2 * 4)
    many = contact_sheet([_image(20, 20)] * 9, tile_height=20)  # default: 3 x 3 beyond 6 tiles
    assert many.size == (3 * 20 + 2 * 4, 3 * 20 + 2 * 4)
    # The first tile is pasted unchanged when it already has the tile height.
    first = _image(20, 20, seed=5)
    np.testing.assert_array_equal(np.asarray(contact_sheet([first, _image(20, 20)], tile_height=20))[:, :20],
                                  np.asarray(first))


@pytest.mark.parametrize(
    "name, want",
    [
        ("dog", "dog"),
        ("traffic light", "traffic_light"),
        ("a/b\\c", "a_b_c"),
        ("café crème", "cafe_creme"),
        ("..", None),
        ("", None),
        ("狗", None),
        ("  hair drier?! ", "hair_drier"),
        ("x" * 300, "x" * 80),
    ],
)
def test_safe_file_part(name: str, want: str | None) -> None:
    part = safe_file_part(name)
    assert part and all(ch.isascii() and (ch.isalnum() or ch in "._-") for ch in part)
    assert not part.startswith(".")
    if want is not None:
        assert part == want
    assert safe_file_part(name) == part  # stable


def test_safe_file_part_distinguishes_unicode_names() -> None:
    assert safe_file_part("狗") != safe_file_part("猫")


@pytest.mark.parametrize("size", [(37, 53), (200, 120), (16, 16)])
@pytest.mark.parametrize("map_hw", [(2, 2), (7, 5), (14, 14)])
def test_write_image_heatmaps_sizes(tmp_path: Path, size: tuple[int, int], map_hw: tuple[int, int]) -> None:
    """One PNG per class at the image's size, plus a sheet of the image and the overlays."""
    width, height = size
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(4, *map_hw)).astype(np.float32)
    scores = np.array([0.9, 0.1, 0.7, 0.2], dtype=np.float32)
    names = ["cat", "dog", "traffic light", "tree"]
    paths = write_image_heatmaps(tmp_path, "/data/imgs/photo 1.jpg", _image(width, height), maps, scores, [0, 2], names)
    assert [p.name for p in paths] == ["photo 1__cat.png", "photo 1__traffic_light.png", "photo 1__sheet.png"]
    for p in paths[:2]:
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size == (width, height) and im.mode == "RGB"
    tile_h = min(256, height)
    tile_w = max(1, round(width * tile_h / height))
    with Image.open(paths[2]) as sheet:
        assert sheet.size == (3 * tile_w + 2 * 4, tile_h)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_sheet_grows_with_classes_and_overlays_match(tmp_path: Path) -> None:
    image = _image(60, 40)
    maps = np.random.default_rng(1).normal(size=(5, 3, 3))
    scores = np.linspace(0.9, 0.5, 5)
    names = ["a", "b", "c", "d", "e"]
    widths = []
    for k in range(1, 5):
        paths = write_image_heatmaps(tmp_path / str(k), "img.png", image, maps, scores, list(range(k)), names)
        assert len(paths) == k + 1
        with Image.open(paths[-1]) as sheet:
            widths.append(sheet.width)
            assert sheet.height == 40
    assert widths == sorted(widths) and len(set(widths)) == 4
    assert widths[1] - widths[0] == 60 + 4
    # The written overlay is render_overlay's output, losslessly.
    with Image.open(tmp_path / "1" / "img__a.png") as written:
        np.testing.assert_array_equal(np.asarray(written), np.asarray(render_overlay(image, maps[0], "a", scores[0])))


def test_no_class_still_writes_a_labelled_sheet(tmp_path: Path) -> None:
    image = Image.new("RGB", (200, 100), (200, 200, 200))
    paths = write_image_heatmaps(tmp_path, "x/empty.jpg", image, np.zeros((3, 2, 2)), np.zeros(3), [], ["a", "b", "c"])
    assert [p.name for p in paths] == ["empty__sheet.png"]
    with Image.open(paths[0]) as sheet:
        px = np.asarray(sheet.convert("RGB"), dtype=np.int32)
    assert sheet.size == (200, 100)
    corner = px[:12, :80].sum(axis=2) / 3  # the label box: mostly dark, with light text on it
    assert px[:2, :80].max() < 100 and np.median(corner) < 100 and corner.max() > 150
    np.testing.assert_array_equal(px[60:, :], 200)  # the image itself below the label
    assert NO_CLASS_TEXT == "no class above threshold"


def test_same_stem_and_odd_names_do_not_collide(tmp_path: Path) -> None:
    """stem= keeps two 'img.jpg' apart; class names that clean to the same text (or to 'sheet') get _c<index>."""
    maps = np.random.default_rng(2).normal(size=(4, 2, 2))
    names = ["a b", "a/b", "sheet", "狗"]
    first = write_image_heatmaps(tmp_path, "one/img.jpg", _image(20, 20), maps, np.ones(4), [0, 1, 2, 3], names,
                                 stem="img")
    second = write_image_heatmaps(tmp_path, "two/img.jpg", _image(20, 20), maps, np.ones(4), [0], names,
                                  stem="two/img")
    names_written = [p.name for p in first]
    assert names_written[:3] == ["img__a_b_c0.png", "img__a_b_c1.png", "img__sheet_c2.png"]
    assert names_written[3].startswith("img__x") and names_written[3].endswith(".png")
    assert names_written[4] == "img__sheet.png"
    assert [p.name for p in second] == ["two_img__a_b.png", "two_img__sheet.png"]
    assert len({*first, *second}) == 7 and all(p.is_file() for p in (*first, *second))


def test_write_image_heatmaps_rejects_inconsistent_inputs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="outside"):
        write_image_heatmaps(tmp_path, "i.jpg", _image(8, 8), np.zeros((2, 2, 2)), np.zeros(2), [2], ["a", "b"])
    with pytest.raises(ValueError, match="class names"):
        write_image_heatmaps(tmp_path, "i.jpg", _image(8, 8), np.zeros((2, 2, 2)), np.zeros(2), [0], ["a"])


def test_heatmap_writer_never_reuses_a_stem(tmp_path: Path) -> None:
    from deploy.prediction import HeatmapWriter

    folder = tmp_path / "in"
    folder.mkdir()
    paths = []
    for name in ("img.jpg", "img.png", "img_2.jpg"):
        Image.new("RGB", (20, 10), (200, 10, 10)).save(folder / name)
        paths.append(str(folder / name))
    writer = HeatmapWriter(tmp_path / "out")
    maps = np.zeros((2, 2, 2), np.float32)
    written = [writer.write(p, maps, np.array([0.9, 0.1]), [0], ["a", "b"]) for p in paths]
    sheets = [next(w.name for w in files if w.name.endswith("__sheet.png")) for files in written]
    assert len(set(sheets)) == 3
    assert len(list((tmp_path / "out").glob("*__sheet.png"))) == 3
