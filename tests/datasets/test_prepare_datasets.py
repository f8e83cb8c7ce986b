"""Tests of the dataset preparation scripts (VOC, COCO, WIDER, custom) and class files."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from datasets.classes import (BUILTIN_CLASSES, COCO_CLASSES, VOC_CLASSES, WIDER_ATTRIBUTES,
                              read_class_file, write_class_file)
from datasets.prepare.coco import prepare_coco
from datasets.prepare.custom import prepare_custom_csv, prepare_custom_voc, split_indices
from datasets.prepare.voc import prepare_voc
from datasets.prepare.wider import prepare_wider
from datasets.prepare.voc_annotations import encode_voc_labels, parse_voc_xml
from utils.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[2]
FAKE_JPEG = b"\xff\xd8\xff\xe0 not decoded by the preparation scripts"


# --------------------------------------------------------------------------- helpers


def load(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))


def by_name(entries: list[dict]) -> dict[str, list[int]]:
    """{image file name: target} for a prepared split."""
    return {Path(e["img_path"]).name: e["target"] for e in entries}


def write_xml(path: Path, objects: list[tuple[str, int]]) -> None:
    """A minimal VOC annotation with (class name, difficult) objects."""
    body = "".join(
        f"  <object>\n    <name>{name}</name>\n    <difficult>{diff}</difficult>\n"
        "    <bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox>\n"
        "  </object>\n" for name, diff in objects)
    path.write_text(f"<annotation>\n  <filename>{path.stem}.jpg</filename>\n{body}"
                    "</annotation>\n", encoding="utf-8")


def make_voc(voc_dir: Path, objects: dict[str, list[tuple[str, int]]],
             lists: dict[str, list[str]] | None, ext: str = ".jpg") -> Path:
    """A VOC-layout folder with fake JPEGs; ``lists`` maps e.g. 'train' to ids."""
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (voc_dir / sub).mkdir(parents=True, exist_ok=True)
    for image_id, objs in objects.items():
        write_xml(voc_dir / "Annotations" / f"{image_id}.xml", objs)
        (voc_dir / "JPEGImages" / f"{image_id}{ext}").write_bytes(FAKE_JPEG)
    for name, ids in (lists or {}).items():
        (voc_dir / "ImageSets" / "Main" / f"{name}.txt").write_text(
            "".join(f"{i}\n" for i in ids), encoding="utf-8")
    return voc_dir


@pytest.fixture
def log_records() -> Iterator[list[logging.LogRecord]]:
    """Records logged on the project logger during the test (it does not propagate)."""
    records: list[logging.LogRecord] = []

    class ListHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = ListHandler(level=logging.DEBUG)
    logger = logging.getLogger("csra")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def warnings_of(records: list[logging.LogRecord]) -> list[str]:
    return [r.getMessage() for r in records if r.levelno == logging.WARNING]


def run_script(args: list[str], cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0]


# --------------------------------------------------------------------------- class lists


def test_builtin_class_lists() -> None:
    assert len(VOC_CLASSES) == 20 and VOC_CLASSES[0] == "aeroplane"
    assert VOC_CLASSES[-1] == "tvmonitor"
    assert len(COCO_CLASSES) == 80 == len(set(COCO_CLASSES))
    assert (COCO_CLASSES[0], COCO_CLASSES[1], COCO_CLASSES[-1]) == ("person", "bicycle",
                                                                   "toothbrush")
    assert len(WIDER_ATTRIBUTES) == 14 and WIDER_ATTRIBUTES[4] == "Tshirt"
    assert set(BUILTIN_CLASSES) == {"voc07", "coco", "wider"}


def test_class_file_round_trip_and_errors(tmp_path: Path) -> None:
    path = write_class_file(tmp_path / "classes.txt", ["cat", "dog"])
    assert path.read_text() == "cat\ndog\n"
    assert read_class_file(path) == ["cat", "dog"]
    (tmp_path / "trailing.txt").write_text("cat\n dog \n\n\n")
    assert read_class_file(tmp_path / "trailing.txt") == ["cat", "dog"]
    for name, text, needle in [("empty.txt", "\n\n", "empty"),
                               ("dup.txt", "cat\ndog\ncat\n", "line 3"),
                               ("blank.txt", "cat\n\ndog\n", "line 2")]:
        (tmp_path / name).write_text(text)
        with pytest.raises(UserError, match=needle) as err:
            read_class_file(tmp_path / name)
        assert name in str(err.value)
    with pytest.raises(UserError, match="missing.txt"):
        read_class_file(tmp_path / "missing.txt")


# --------------------------------------------------------------------------- VOC 2007 layout, full annotations

# A small VOC 2007 folder written by the test itself, in the real dataset's format: the
# ids and ImageSets lists of a 33-image VOC 2007 subset (18 train + 10 val = 28 trainval,
# 5 test), full XML files (source, size, pose, truncated, difficult, bndbox, and <part>
# elements whose <name> is a body part, not a class) and small decodable JPEGs. The images
# the assertions below check carry the objects of the real images of the same ids;
# the others hold one object each. Class indices:
# 2 bird, 3 boat, 6 car, 8 chair, 10 diningtable, 11 dog, 14 person, 15 pottedplant, 17 sofa.
VOC07_LISTS = {
    "train": ["000012", "000026", "000034", "000036", "000044", "000047", "000064", "000077",
              "000078", "000091", "000112", "000122", "000134", "000140", "000141", "000147",
              "000153", "000154"],
    "val": ["000005", "000007", "000016", "000019", "000020", "000021", "000024", "000046",
            "000052", "000060"],
    "test": ["000002", "000003", "000004", "000006", "000008"],
}
# (class, difficult, parts); every id not listed here holds one non-difficult object
VOC07_OBJECTS: dict[str, list[tuple[str, int, tuple[str, ...]]]] = {
    "000012": [("car", 0, ())],
    "000005": [("chair", 0, ()), ("chair", 0, ()), ("chair", 1, ()), ("chair", 0, ()),
               ("chair", 1, ())],                                     # chair x5, 2 difficult
    "000154": [("boat", 0, ()), ("boat", 1, ())],                     # one boat difficult
    "000021": [("dog", 0, ()), ("person", 0, ("head", "foot", "foot")),
               ("person", 0, ("foot", "head", "hand")),
               ("person", 0, ("hand", "foot", "foot", "head"))],      # parts are not classes
    "000006": [("pottedplant", 0, ()), ("diningtable", 0, ()), ("chair", 0, ()),
               ("chair", 1, ()), ("chair", 1, ()), ("chair", 1, ()), ("chair", 1, ()),
               ("chair", 0, ())],                                     # chair x6, 4 difficult
    "000003": [("sofa", 0, ()), ("chair", 0, ())],
    "000008": [("bird", 1, ()), ("bird", 1, ()), ("person", 0, ())],  # bird: all difficult
}
EXPECTED_TRAINVAL = {
    "000005.jpg": [0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    "000154.jpg": [0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    "000021.jpg": [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0],
}
EXPECTED_TEST = {
    "000006.jpg": [-1, -1, -1, -1, -1, -1, -1, -1, 1, -1, 1, -1, -1, -1, -1, 1, -1, -1, -1, -1],
    "000003.jpg": [-1, -1, -1, -1, -1, -1, -1, -1, 1, -1, -1, -1, -1, -1, -1, -1, -1, 1, -1, -1],
    "000008.jpg": [-1, -1, 0, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 1, -1, -1, -1, -1, -1],
}


def write_full_voc_xml(path: Path, image_id: str,
                       objects: list[tuple[str, int, tuple[str, ...]]]) -> None:
    """A VOC 2007 annotation laid out as the dataset's own files are (tab-indented)."""
    def box(indent: str, x: int) -> str:
        return (f"{indent}<bndbox>\n{indent}\t<xmin>{x}</xmin>\n{indent}\t<ymin>{x + 1}</ymin>\n"
                f"{indent}\t<xmax>{x + 20}</xmax>\n{indent}\t<ymax>{x + 15}</ymax>\n{indent}</bndbox>\n")

    parts_xml = []
    for k, (name, difficult, parts) in enumerate(objects):
        part_xml = "".join(f"\t\t<part>\n\t\t\t<name>{p}</name>\n{box(chr(9) * 3, 2 + j)}\t\t</part>\n"
                           for j, p in enumerate(parts))
        parts_xml.append(f"\t<object>\n\t\t<name>{name}</name>\n\t\t<pose>Unspecified</pose>\n"
                         f"\t\t<truncated>{k % 2}</truncated>\n\t\t<difficult>{difficult}</difficult>\n"
                         f"{box(chr(9) * 2, 1 + k)}{part_xml}\t</object>\n")
    path.write_text(
        f"<annotation>\n\t<folder>VOC2007</folder>\n\t<filename>{image_id}.jpg</filename>\n"
        "\t<source>\n\t\t<database>The VOC2007 Database</database>\n"
        "\t\t<annotation>PASCAL VOC2007</annotation>\n\t\t<image>flickr</image>\n\t</source>\n"
        "\t<size>\n\t\t<width>48</width>\n\t\t<height>32</height>\n\t\t<depth>3</depth>\n\t</size>\n"
        f"\t<segmented>0</segmented>\n{''.join(parts_xml)}</annotation>\n", encoding="utf-8")


@pytest.fixture(scope="module")
def voc07_devkit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The VOCdevkit folder of the small VOC 2007 set above (read-only for the tests)."""
    from PIL import Image

    devkit = tmp_path_factory.mktemp("voc07") / "VOCdevkit"
    voc = devkit / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True)
    every = VOC07_LISTS["train"] + VOC07_LISTS["val"] + VOC07_LISTS["test"]
    for n, image_id in enumerate(every):
        objects = VOC07_OBJECTS.get(image_id, [(VOC_CLASSES[n % 20], 0, ())])
        write_full_voc_xml(voc / "Annotations" / f"{image_id}.xml", image_id, objects)
        Image.new("RGB", (48, 32), (7 * n % 256, 90, 200)).save(voc / "JPEGImages" / f"{image_id}.jpg")
    lists = {**VOC07_LISTS, "trainval": VOC07_LISTS["train"] + VOC07_LISTS["val"]}
    for name, ids in lists.items():
        (voc / "ImageSets" / "Main" / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
    return devkit


def test_prepare_voc07_layout(voc07_devkit: Path, tmp_path: Path) -> None:
    out = tmp_path / "voc07"
    written = prepare_voc(str(voc07_devkit), str(out))
    assert set(written) == {"trainval", "train", "val", "test", "classes"}
    trainval, test = load(out / "trainval_voc07.json"), load(out / "test_voc07.json")
    lists = voc07_devkit / "VOC2007" / "ImageSets" / "Main"
    ids = {n: (lists / f"{n}.txt").read_text().split() for n in ("train", "val", "test")}
    assert [Path(e["img_path"]).stem for e in trainval] == ids["train"] + ids["val"]
    assert load(out / "train_voc07.json") + load(out / "val_voc07.json") == trainval  # the two halves, same labels
    assert [Path(e["img_path"]).stem for e in test] == ids["test"]
    assert (len(trainval), len(test)) == (28, 5)

    assert all(len(e["target"]) == 20 and set(e["target"]) <= {0, 1} for e in trainval)
    assert all(set(e["target"]) <= {-1, 0, 1} for e in test)
    assert any(-1 in e["target"] for e in test)
    for name, target in EXPECTED_TRAINVAL.items():
        assert by_name(trainval)[name] == target, name
    for name, target in EXPECTED_TEST.items():
        assert by_name(test)[name] == target, name

    first = trainval[0]["img_path"]
    assert first == f"{voc07_devkit}/VOC2007/JPEGImages/000012.jpg"
    assert read_class_file(out / "classes.txt") == list(VOC_CLASSES)


def test_prepare_voc_absolute_accepts_voc_folder(voc07_devkit: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(voc07_devkit)
    prepare_voc("VOC2007", str(tmp_path), absolute=True)  # the VOC2007 folder itself
    test = load(tmp_path / "test_voc07.json")
    assert len(test) == 5
    for entry in test:
        assert os.path.isabs(entry["img_path"]) and os.path.isfile(entry["img_path"])


# --------------------------------------------------------------------------- VOC, edge cases


def test_voc_difficult_encoding(tmp_path: Path) -> None:
    objects = {
        "d_only": [("cat", 1), ("cat", 1), ("dog", 0)],   # cat: every object difficult
        "mixed": [("cat", 1), ("cat", 0)],                # cat: one non-difficult
        "none": [],                                       # no object at all
    }
    ids = list(objects)
    make_voc(tmp_path / "VOCdevkit" / "VOC2007", objects,
             {"train": ids[:2], "val": ids[2:], "test": ids})
    write_class_file(tmp_path / "classes.txt", ["bird", "cat", "dog"])
    prepare_voc(str(tmp_path / "VOCdevkit"), str(tmp_path / "out"),
                classes_file=str(tmp_path / "classes.txt"))
    trainval = by_name(load(tmp_path / "out" / "trainval_voc07.json"))
    test = by_name(load(tmp_path / "out" / "test_voc07.json"))
    assert trainval == {"d_only.jpg": [0, 0, 1], "mixed.jpg": [0, 1, 0], "none.jpg": [0, 0, 0]}
    assert test == {"d_only.jpg": [-1, 0, 1], "mixed.jpg": [-1, 1, -1],
                    "none.jpg": [-1, -1, -1]}
    assert read_class_file(tmp_path / "out" / "classes.txt") == ["bird", "cat", "dog"]


def test_encode_voc_labels_directly(tmp_path: Path) -> None:
    write_xml(tmp_path / "a.xml", [("cat", 1), ("dog", 0), ("dog", 1)])
    objects = parse_voc_xml(tmp_path / "a.xml", ["cat", "dog", "cow"])
    assert objects == {"cat": [True], "dog": [False, True]}
    assert encode_voc_labels(objects, ["cat", "dog", "cow"], binary=False) == [0, 1, -1]
    assert encode_voc_labels(objects, ["cat", "dog", "cow"], binary=True) == [0, 1, 0]


def test_voc_unknown_class(tmp_path: Path) -> None:
    make_voc(tmp_path / "VOC2007", {"a": [("unicorn", 0)]},
             {"train": ["a"], "val": [], "test": ["a"]})
    with pytest.raises(UserError) as err:
        prepare_voc(str(tmp_path), str(tmp_path / "out"))
    msg = str(err.value)
    assert "a.xml" in msg and "'unicorn'" in msg and "--classes" in msg
    assert not (tmp_path / "out").exists()


def test_voc_malformed_xml(tmp_path: Path) -> None:
    voc = make_voc(tmp_path / "VOC2007", {"good": [("car", 0)]},
                   {"train": ["good", "bad"], "val": [], "test": ["good"]})
    (voc / "Annotations" / "bad.xml").write_text(
        "<annotation>\n  <object>\n    <name>car</nme>\n  </object>\n</annotation>\n")
    (voc / "JPEGImages" / "bad.jpg").write_bytes(FAKE_JPEG)
    with pytest.raises(UserError) as err:
        prepare_voc(str(tmp_path), str(tmp_path / "out"))
    assert "bad.xml" in str(err.value) and "line 3" in str(err.value)


def test_voc_missing_jpeg_error_and_skip(tmp_path: Path,
                                        log_records: list[logging.LogRecord]) -> None:
    voc = make_voc(tmp_path / "VOC2007", {i: [("car", 0)] for i in ("a", "b", "c", "t")},
                   {"train": ["a", "b"], "val": ["c"], "test": ["t"]})
    (voc / "JPEGImages" / "b.jpg").unlink()
    (voc / "JPEGImages" / "c.jpg").unlink()
    with pytest.raises(UserError) as err:
        prepare_voc(str(tmp_path), str(tmp_path / "out"))
    assert "'b'" in str(err.value) and "b.jpg" in str(err.value)
    assert "--skip_missing" in str(err.value)

    prepare_voc(str(tmp_path), str(tmp_path / "out"), skip_missing=True)
    assert list(by_name(load(tmp_path / "out" / "trainval_voc07.json"))) == ["a.jpg"]
    warned = warnings_of(log_records)
    assert len(warned) == 1 and "skipping 2 of 3" in warned[0]


def test_voc_missing_layout(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="VOC2007"):
        prepare_voc(str(tmp_path), str(tmp_path / "out"))
    (tmp_path / "VOC2007" / "Annotations").mkdir(parents=True)
    with pytest.raises(UserError) as err:
        prepare_voc(str(tmp_path), str(tmp_path / "out"))
    assert "JPEGImages" in str(err.value) and "Expected layout" in str(err.value)


def test_voc2012_without_test_list(tmp_path: Path) -> None:
    make_voc(tmp_path / "VOC2012", {"x": [("dog", 0)], "y": [("cat", 0)]},
             {"train": ["x"], "val": ["y"]})
    written = prepare_voc(str(tmp_path), str(tmp_path / "out"), year=2012)
    assert set(written) == {"trainval", "train", "val", "classes"}
    assert len(load(tmp_path / "out" / "trainval_voc12.json")) == 2
    assert not (tmp_path / "out" / "test_voc12.json").exists()
    make_voc(tmp_path / "VOC2007", {"x": [("dog", 0)]}, {"train": ["x"], "val": []})
    with pytest.raises(UserError, match="test.txt"):
        prepare_voc(str(tmp_path), str(tmp_path / "out7"), year=2007)


def test_voc_empty_lists_are_refused(tmp_path: Path) -> None:
    objects = {"a": [("car", 0)], "t": [("dog", 0)]}
    voc = make_voc(tmp_path / "VOC2007", objects, {"trainval": ["a"], "test": []})
    (voc / "ImageSets" / "Main" / "test.txt").write_text("\n\n", encoding="utf-8")  # blank lines only
    with pytest.raises(UserError) as err:
        prepare_voc(str(tmp_path), str(tmp_path / "out"))
    assert f"{voc / 'ImageSets' / 'Main' / 'test.txt'} lists no image id" in str(err.value)
    assert not (tmp_path / "out").exists()  # nothing written

    (voc / "ImageSets" / "Main" / "test.txt").write_text("t\n", encoding="utf-8")
    (voc / "JPEGImages" / "t.jpg").unlink()  # every test image skipped as missing
    with pytest.raises(UserError, match="no usable image in .*test.txt"):
        prepare_voc(str(tmp_path), str(tmp_path / "out"), skip_missing=True)
    assert not (tmp_path / "out").exists()

    (voc / "ImageSets" / "Main" / "trainval.txt").write_text("", encoding="utf-8")
    with pytest.raises(UserError, match="trainval.txt lists no image id"):
        prepare_voc(str(tmp_path), str(tmp_path / "out"))

    voc12 = make_voc(tmp_path / "VOC2012", objects, {"train": ["a"], "val": [], "test": []})
    with pytest.raises(UserError, match="delete it"):
        prepare_voc(str(tmp_path), str(tmp_path / "out12"), year=2012)


def test_cli_voc_empty_test_list_one_line(tmp_path: Path) -> None:
    make_voc(tmp_path / "VOC2007", {"a": [("car", 0)]}, {"train": ["a"], "val": [], "test": []})
    proc = run_script(["datasets/prepare_voc.py", "--data_path", str(tmp_path),
                       "--out_dir", str(tmp_path / "out")])
    assert_one_line_error(proc, "test.txt", "no image id")
    assert proc.returncode == 2 and not (tmp_path / "out").exists()


def test_custom_voc_empty_test_list(tmp_path: Path) -> None:
    voc = make_voc(tmp_path / "mine", {"a": [("widget", 0)], "b": [("gadget", 0)]},
                   {"trainval": ["a", "b"], "test": []})
    with pytest.raises(UserError, match="test.txt lists no image id"):
        prepare_custom_voc(str(voc), str(tmp_path / "out"))
    (voc / "ImageSets" / "Main" / "test.txt").write_text("b\n", encoding="utf-8")
    (voc / "JPEGImages" / "b.jpg").unlink()
    with pytest.raises(UserError, match="no usable image in .*test.txt"):
        prepare_custom_voc(str(voc), str(tmp_path / "out"), skip_missing=True)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- COCO


def make_coco(root: Path, year: int = 2014) -> None:
    """Three categories with unsorted ids; train: 2 annotated images (one crowd only), 1 bare."""
    cats = [{"id": 5, "name": "cat"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"}]
    splits = {
        "train": ([{"id": 10, "file_name": "a.jpg"}, {"id": 7, "file_name": "b.jpg"},
                   {"id": 9, "file_name": "empty.jpg"}],
                  [{"id": 1, "image_id": 10, "category_id": 5, "iscrowd": 0},
                   {"id": 2, "image_id": 10, "category_id": 3, "iscrowd": 0},
                   {"id": 3, "image_id": 10, "category_id": 5, "iscrowd": 0},
                   {"id": 4, "image_id": 7, "category_id": 1, "iscrowd": 1}]),
        "val": ([{"id": 1, "file_name": "v.jpg"}],
                [{"id": 5, "image_id": 1, "category_id": 1, "iscrowd": 0}]),
    }
    (root / "annotations").mkdir(parents=True)
    for split, (images, anns) in splits.items():
        (root / f"{split}{year}").mkdir()
        for im in images:
            (root / f"{split}{year}" / im["file_name"]).write_bytes(FAKE_JPEG)
        (root / "annotations" / f"instances_{split}{year}.json").write_text(
            json.dumps({"images": images, "annotations": anns, "categories": cats}))


def test_prepare_coco(tmp_path: Path, log_records: list[logging.LogRecord]) -> None:
    make_coco(tmp_path / "coco")
    prepare_coco(str(tmp_path / "coco"), str(tmp_path / "out"))
    train = load(tmp_path / "out" / "train_coco2014.json")
    # label order: ids 1 person, 3 car, 5 cat; empty.jpg has no annotation -> left out;
    # b.jpg has only a crowd annotation -> still positive.
    assert by_name(train) == {"a.jpg": [0, 1, 1], "b.jpg": [1, 0, 0]}
    assert train[0]["img_path"] == f"{tmp_path}/coco/train2014/a.jpg"
    assert by_name(load(tmp_path / "out" / "val_coco2014.json")) == {"v.jpg": [1, 0, 0]}
    assert read_class_file(tmp_path / "out" / "classes.txt") == ["person", "car", "cat"]
    assert any("3 categories" in w for w in warnings_of(log_records))
    assert any("1 of 3 images" in r.getMessage() for r in log_records)


def test_coco_2017_and_errors(tmp_path: Path) -> None:
    make_coco(tmp_path / "c17", year=2017)
    prepare_coco(str(tmp_path / "c17"), str(tmp_path / "out"), year=2017)
    assert (tmp_path / "out" / "val_coco2017.json").is_file()
    with pytest.raises(UserError, match="instances_train2014.json"):
        prepare_coco(str(tmp_path / "c17"), str(tmp_path / "o2"), year=2014)

    (tmp_path / "c17" / "train2017" / "b.jpg").unlink()
    with pytest.raises(UserError, match="b.jpg"):
        prepare_coco(str(tmp_path / "c17"), str(tmp_path / "o3"), year=2017)
    prepare_coco(str(tmp_path / "c17"), str(tmp_path / "o3"), year=2017, skip_missing=True)
    assert list(by_name(load(tmp_path / "o3" / "train_coco2017.json"))) == ["a.jpg"]

    ann = tmp_path / "c17" / "annotations" / "instances_val2017.json"
    data = json.loads(ann.read_text())
    data["annotations"][0]["category_id"] = 42
    ann.write_text(json.dumps(data))
    with pytest.raises(UserError, match="category_id 42"):
        prepare_coco(str(tmp_path / "c17"), str(tmp_path / "o4"), year=2017, skip_missing=True)


# --------------------------------------------------------------------------- WIDER


def make_wider(root: Path) -> None:
    attr_map = {str(i): ("Tshiirt" if n == "Tshirt" else n)  # the dataset's own spelling
                for i, n in enumerate(WIDER_ATTRIBUTES)}
    row_a = [1, -1, 0, 1, -1, 0, 1, -1, 0, 1, -1, 0, 1, -1]
    row_b = [-1] * 13 + [1]
    files = {
        "trainval": [{"file_name": "0--Parade/p1.jpg", "targets": [
                         {"bbox": [1, 2, 30, 40], "attribute": row_a},
                         {"bbox": [5.5, 6, 7, 8], "attribute": row_b}]},
                     {"file_name": "0--Parade/nobody.jpg", "targets": []}],
        "test": [{"file_name": "1--Handshaking/h1.jpg", "targets": [
                     {"bbox": [0, 0, 10, 10], "attribute": row_a}]}],
    }
    (root / "Annotations").mkdir(parents=True)
    for split, images in files.items():
        for im in images:
            (root / "Image" / im["file_name"]).parent.mkdir(parents=True, exist_ok=True)
            (root / "Image" / im["file_name"]).write_bytes(FAKE_JPEG)
        (root / "Annotations" / f"wider_attribute_{split}.json").write_text(json.dumps(
            {"images": images, "attribute_id_map": attr_map, "scene_id_map": {"0": "Parade"}}))


def test_prepare_wider(tmp_path: Path, log_records: list[logging.LogRecord]) -> None:
    make_wider(tmp_path / "wider")
    prepare_wider(str(tmp_path / "wider"), str(tmp_path / "out"))
    trainval = load(tmp_path / "out" / "trainval_wider.json")
    test = load(tmp_path / "out" / "test_wider.json")
    assert len(trainval) == 2 and len(test) == 1  # one entry per person; nobody.jpg skipped
    assert trainval[0]["target"] == [1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0]
    assert trainval[1]["target"] == [0] * 13 + [1]
    assert trainval[1]["bbox"] == [5.5, 6, 7, 8]
    assert trainval[0]["img_path"] == trainval[1]["img_path"] == \
        f"{tmp_path}/wider/Image/0--Parade/p1.jpg"
    assert test[0]["target"] == [1, 0, 99, 1, 0, 99, 1, 0, 99, 1, 0, 99, 1, 0]
    assert test[0]["bbox"] == [0, 0, 10, 10]
    assert read_class_file(tmp_path / "out" / "classes.txt") == list(WIDER_ATTRIBUTES)
    assert warnings_of(log_records) == []  # "Tshiirt" is the known spelling


def test_wider_errors(tmp_path: Path) -> None:
    make_wider(tmp_path / "w")
    ann = tmp_path / "w" / "Annotations" / "wider_attribute_test.json"
    data = json.loads(ann.read_text())
    data["images"][0]["targets"][0]["attribute"] = [1, 0]
    ann.write_text(json.dumps(data))
    with pytest.raises(UserError, match="14 values"):
        prepare_wider(str(tmp_path / "w"), str(tmp_path / "out"))
    with pytest.raises(UserError, match="Annotations"):
        prepare_wider(str(tmp_path / "nowhere"), str(tmp_path / "out"))


# --------------------------------------------------------------------------- custom


def make_csv_images(folder: Path, names: list[str]) -> None:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(FAKE_JPEG)


def test_custom_csv(tmp_path: Path) -> None:
    names = [f"img/{i}.jpg" for i in range(10)]
    make_csv_images(tmp_path, names)
    rows = ["image,labels"] + [f"{n},{'zebra;ant' if i % 2 else 'ant'}"
                               for i, n in enumerate(names[:8])]
    rows += [f"{names[8]},", "", "# a comment", f"{names[9]},zebra", f"{names[9]},mole"]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    prepare_custom_csv(str(tmp_path / "labels.csv"), str(tmp_path / "out"), test_ratio=0.3)
    train = load(tmp_path / "out" / "train_custom.json")
    test = load(tmp_path / "out" / "test_custom.json")
    assert (len(train), len(test)) == (7, 3)
    every = by_name(train) | by_name(test)
    assert read_class_file(tmp_path / "out" / "classes.txt") == ["ant", "mole", "zebra"]
    assert every["1.jpg"] == [1, 0, 1] and every["2.jpg"] == [1, 0, 0]
    assert every["8.jpg"] == [0, 0, 0]           # empty label cell: all negative
    assert every["9.jpg"] == [0, 1, 1]           # two rows of one image are merged
    assert all(e["img_path"].startswith(f"{tmp_path}/img/") for e in train + test)

    # same seed -> same split; another seed -> (here) another split
    prepare_custom_csv(str(tmp_path / "labels.csv"), str(tmp_path / "again"), test_ratio=0.3)
    assert load(tmp_path / "again" / "test_custom.json") == test
    assert split_indices(10, 0.3, 0) != split_indices(10, 0.3, 1)
    tr, te = split_indices(10, 0.3, 0)
    assert sorted(tr + te) == list(range(10)) and len(te) == 3
    assert split_indices(2, 0.01, 0)[1] != []    # at least one test item
    with pytest.raises(UserError, match="test_ratio"):
        split_indices(5, 1.0, 0)


def test_custom_tsv_image_root_and_classes(tmp_path: Path) -> None:
    make_csv_images(tmp_path / "pics", ["a.png", "b.png", "c.png"])
    (tmp_path / "meta").mkdir()
    tsv = tmp_path / "meta" / "list.tsv"
    tsv.write_text("a.png\tcat;dog\nb.png\tdog\nc.png\tcat\n")  # no header
    write_class_file(tmp_path / "classes.txt", ["dog", "cat", "cow"])
    prepare_custom_csv(str(tsv), str(tmp_path / "out"), image_root=str(tmp_path / "pics"),
                       classes_file=str(tmp_path / "classes.txt"), test_ratio=0.0)
    train = load(tmp_path / "out" / "train_custom.json")
    assert by_name(train) == {"a.png": [1, 1, 0], "b.png": [1, 0, 0], "c.png": [0, 1, 0]}
    assert load(tmp_path / "out" / "test_custom.json") == []

    tsv.write_text("a.png\tcat\nb.png\tdog;horse\n")
    with pytest.raises(UserError) as err:
        prepare_custom_csv(str(tsv), str(tmp_path / "o2"), image_root=str(tmp_path / "pics"),
                           classes_file=str(tmp_path / "classes.txt"))
    assert "list.tsv, line 2" in str(err.value) and "'horse'" in str(err.value)

    tsv.write_text("a.png\tcat\nzzz.png\tdog\n")
    with pytest.raises(UserError, match="line 2: image .*zzz.png"):
        prepare_custom_csv(str(tsv), str(tmp_path / "o3"), image_root=str(tmp_path / "pics"))
    prepare_custom_csv(str(tsv), str(tmp_path / "o3"), image_root=str(tmp_path / "pics"),
                       skip_missing=True, test_ratio=0.0)
    assert len(load(tmp_path / "o3" / "train_custom.json")) == 1


def test_custom_voc_folder(tmp_path: Path) -> None:
    objects = {f"im{i}": [("widget", 0), ("gadget", 1 if i % 3 == 0 else 0)]
               for i in range(5)}
    objects["im5"] = [("sprocket", 0)]
    voc = make_voc(tmp_path / "mine", objects, None, ext=".png")
    prepare_custom_voc(str(voc), str(tmp_path / "out"), test_ratio=0.4, seed=3)
    classes = read_class_file(tmp_path / "out" / "classes.txt")
    assert classes == ["gadget", "sprocket", "widget"]
    train = load(tmp_path / "out" / "train_custom.json")
    test = load(tmp_path / "out" / "test_custom.json")
    assert (len(train), len(test)) == (4, 2)
    assert {e["img_path"].rsplit("/", 2)[-2] for e in train + test} == {"JPEGImages"}
    assert all(set(e["target"]) <= {0, 1} for e in train)
    expected_test = {f"{k}.png": v for k, v in {
        "im0": [0, -1, 1], "im1": [1, -1, 1], "im2": [1, -1, 1], "im3": [0, -1, 1],
        "im4": [1, -1, 1], "im5": [-1, 1, -1]}.items()}
    for name, target in by_name(test).items():
        assert target == expected_test[name]

    # with ImageSets lists present they decide the split
    (voc / "ImageSets" / "Main" / "trainval.txt").write_text("im0\nim1\nim2\n")
    (voc / "ImageSets" / "Main" / "test.txt").write_text("im3\nim5\n")
    prepare_custom_voc(str(voc), str(tmp_path / "out2"))
    assert list(by_name(load(tmp_path / "out2" / "train_custom.json"))) == \
        ["im0.png", "im1.png", "im2.png"]
    assert by_name(load(tmp_path / "out2" / "test_custom.json")) == \
        {"im3.png": [0, -1, 1], "im5.png": [-1, 1, -1]}

    write_class_file(tmp_path / "two.txt", ["widget", "gadget"])
    with pytest.raises(UserError, match="'sprocket'"):
        prepare_custom_voc(str(voc), str(tmp_path / "out3"),
                           classes_file=str(tmp_path / "two.txt"))


# --------------------------------------------------------------------------- CLIs end to end


@pytest.mark.parametrize("script", ["prepare_voc", "prepare_coco", "prepare_wider",
                                    "prepare_custom"])
def test_cli_help(script: str) -> None:
    proc = run_script([f"datasets/{script}.py", "--help"])
    assert proc.returncode == 0 and "errors" in proc.stdout and "--out_dir" in proc.stdout


def test_cli_voc(voc07_devkit: Path, tmp_path: Path) -> None:
    rel = os.path.relpath(voc07_devkit, REPO_ROOT)
    proc = run_script(["datasets/prepare_voc.py", "--data_path", rel,
                       "--out_dir", str(tmp_path / "voc07")])
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    test = load(tmp_path / "voc07" / "test_voc07.json")
    assert len(test) == 5 and test[0]["img_path"] == f"{rel}/VOC2007/JPEGImages/000002.jpg"
    assert (tmp_path / "voc07" / "classes.txt").is_file()

    proc = run_script(["-m", "datasets.prepare.voc", "--data_path", str(tmp_path / "nope"),
                       "--out_dir", str(tmp_path / "x")])
    assert_one_line_error(proc, "nope")


def test_cli_voc_unknown_class_one_line(voc07_devkit: Path, tmp_path: Path) -> None:
    write_class_file(tmp_path / "c.txt", ["cat", "dog"])
    proc = run_script(["-m", "datasets.prepare.voc", "--data_path", str(voc07_devkit),
                       "--out_dir", str(tmp_path / "x"), "--classes", str(tmp_path / "c.txt")])
    assert_one_line_error(proc, ".xml", "--classes")


def test_cli_coco(tmp_path: Path) -> None:
    make_coco(tmp_path / "coco")
    proc = run_script(["-m", "datasets.prepare.coco", "--data_path", str(tmp_path / "coco"),
                       "--out_dir", str(tmp_path / "out"), "--absolute"])
    assert proc.returncode == 0, proc.stderr
    assert len(load(tmp_path / "out" / "train_coco2014.json")) == 2
    proc = run_script(["datasets/prepare_coco.py", "--data_path", str(tmp_path / "coco"),
                       "--out_dir", str(tmp_path / "o"), "--year", "2017"])
    assert_one_line_error(proc, "instances_train2017.json")


def test_cli_wider(tmp_path: Path) -> None:
    make_wider(tmp_path / "w")
    proc = run_script(["datasets/prepare_wider.py", "--data_path", str(tmp_path / "w"),
                       "--out_dir", str(tmp_path / "out")])
    assert proc.returncode == 0, proc.stderr
    assert len(load(tmp_path / "out" / "test_wider.json")) == 1
    (tmp_path / "w" / "Annotations" / "wider_attribute_test.json").write_text('{"images": [')
    proc = run_script(["-m", "datasets.prepare.wider", "--data_path", str(tmp_path / "w"),
                       "--out_dir", str(tmp_path / "o")])
    assert_one_line_error(proc, "wider_attribute_test.json", "line 1")


def test_cli_custom(tmp_path: Path) -> None:
    make_csv_images(tmp_path, ["a.jpg", "b.jpg", "c.jpg"])
    (tmp_path / "l.csv").write_text("a.jpg,x\nb.jpg,y\nc.jpg,x;y\n")
    proc = run_script(["datasets/prepare_custom.py", "--csv", str(tmp_path / "l.csv"),
                       "--out_dir", str(tmp_path / "out"), "--test_ratio", "0.34",
                       "--seed", "1"])
    assert proc.returncode == 0, proc.stderr
    assert len(load(tmp_path / "out" / "train_custom.json")) == 2
    assert len(load(tmp_path / "out" / "test_custom.json")) == 1
    proc = run_script(["-m", "datasets.prepare.custom", "--csv", str(tmp_path / "missing.csv"),
                       "--out_dir", str(tmp_path / "o")])
    assert_one_line_error(proc, "missing.csv")
