"""Per-class thresholds and heatmaps end to end: val.py / predict.py / export_model.py / infer.py / train.py.

The tuning chain (val.py --tune_thresholds -> predict.py --heatmap_dir -> export_model.py
--with_heatmaps -> infer.py --heatmap_dir) is one test: its steps feed each other, and one
test keeps pytest-xdist from running the chain once per worker. The runs are copies of the
shared 2-epoch demo run (its folder must never get a thresholds.json).
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ok, run_script, train_flags

LINE = re.compile(r"^(?P<path>\S+) prediction: (?P<labels>(?:[A-Za-z_]+,)*)$")
CLOSE = 1e-5  # scores this close to a threshold may fall either side between dygraph and Paddle Inference


def copy_run(two_epochs, dest: Path) -> Path:
    """A private copy of the 2-epoch run (weights, config.json, classes.txt); returns its last.pdparams."""
    dest.mkdir(parents=True)
    for name in ("last.pdparams", "config.json", "classes.txt"):
        shutil.copy(two_epochs[0] / name, dest / name)
    return dest / "last.pdparams"


def failed_cleanly(result, *needles: str) -> str:
    """A refusal: exit != 0, no traceback, the needles on stderr. Returns stderr."""
    assert result.returncode != 0, result.stdout[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr[-2000:])
    return result.stderr


def labels_of(line: str) -> list[str]:
    match = LINE.match(line)
    assert match, line
    return [x for x in match.group("labels").split(",") if x]


def expected_labels(scores, limits, names) -> list[str]:
    return [names[c] for c, s in enumerate(scores) if s >= limits[c]]


def same_labels_up_to_ties(a: list[str], b: list[str], scores, limits, names) -> None:
    """``a`` and ``b`` agree except for classes whose score is within CLOSE of its threshold."""
    differ = set(a) ^ set(b)
    assert all(abs(scores[names.index(c)] - limits[names.index(c)]) < CLOSE for c in differ), (a, b)


@pytest.fixture(scope="module")
def images(tiny_demo, tmp_path_factory) -> Path:
    """3 test-split images (so their scores are not the tuned thresholds themselves), one resized to 50 x 90."""
    folder = tmp_path_factory.mktemp("hm_imgs")
    test = [e["img_path"] for e in json.loads(Path(tiny_demo["test"]).read_text())]
    for src in test[:2]:
        shutil.copy(src, folder / Path(src).name)
    Image.open(test[2]).convert("RGB").resize((50, 90)).save(folder / "zz_resized.jpg", quality=95)
    return folder


def heatmap_names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


# --------------------------------------------------------------------------- the tuning chain
def test_tune_predict_export_infer(two_epochs, tiny_demo, images, tmp_path: Path) -> None:
    weights = copy_run(two_epochs, tmp_path / "run")
    run = weights.parent
    names = tiny_demo["classes"].read_text().split()
    val_json = tiny_demo["root"] / "val_voc07.json"

    # 1. val.py --tune_thresholds: thresholds.json beside the weights, both tables, the plots
    plots = tmp_path / "plots"
    tuned = run_script("val.py", "--load_from", str(weights), "--test_json", str(tiny_demo["test"]), "--tune_thresholds",
                       "--val_json", str(val_json), "--plots", str(plots))
    ok(tuned)
    file = run / "thresholds.json"
    saved = json.loads(file.read_text())
    assert saved["classes"] == names and saved["split"] == str(val_json) and len(saved["thresholds"]) == len(names)
    assert all(0 <= t <= 1 for t in saved["thresholds"]) and len(set(saved["thresholds"])) > 1  # really per class
    limits = saved["thresholds"]
    out = tuned.stdout
    assert f"per-class thresholds tuned on {val_json}" in out and "F1 tuned (%)" in out and f"wrote {file}" in out
    for i, (name, t) in enumerate(zip(names, limits)):
        assert re.search(rf"^{i}\s+{name}\s+\d+\s+{t:.4f}[ *]", out, re.M), (name, out)
    assert f"global threshold vs tuned per class: {file}" in out  # the side-by-side table
    assert re.search(r"^metric\s+threshold 0\.5\s+tuned thresholds$", out, re.M)
    for metric in ("CP", "CR", "CF1", "OP", "OR", "OF1"):
        assert re.search(rf"^{metric}\s+\d+\.\d\d\s+\d+\.\d\d$", out, re.M), metric
    for png in ("pr_curves.png", "ap_per_class.png"):
        assert (plots / png).stat().st_size > 1000 and Image.open(plots / png).format == "PNG"

    # 2. predict.py: the thresholds.json is used and named; labels follow it; heatmaps for every image
    preds, maps_dir = tmp_path / "predict.json", tmp_path / "hm_predict"
    predicted = run_script("predict.py", "--load_from", str(weights), "--img_dir", str(images), "--batch_size", "2",
                           "--heatmap_dir", str(maps_dir), "--output", str(preds))
    ok(predicted)
    assert f"thresholds: tuned per class: {file} (tuned on {val_json})" in predicted.stderr
    records = json.loads(preds.read_text())
    lines = predicted.stdout.splitlines()
    assert len(lines) == len(records) == 3
    for line, rec in zip(lines, records):
        assert labels_of(line) == expected_labels(rec["scores"], limits, names)
        assert [x["class"] for x in rec["labels"]] == labels_of(line)
        assert [x["threshold"] for x in rec["labels"]] == pytest.approx([limits[names.index(c)] for c in labels_of(line)])
        assert str(file) in rec["thresholds"]
    want = set()
    for line, rec in zip(lines, records):
        image = Path(rec["img_path"])
        size = Image.open(image).size
        stem = image.stem
        want |= {f"{stem}__sheet.png", *(f"{stem}__{c}.png" for c in labels_of(line))}
        for c in labels_of(line):
            assert Image.open(maps_dir / f"{stem}__{c}.png").size == size
        sheet = Image.open(maps_dir / f"{stem}__sheet.png")
        assert sheet.width >= size[0] and sheet.height >= min(size[1], 256)
    assert heatmap_names(maps_dir) == want
    assert Image.open(images / "zz_resized.jpg").size == (50, 90)
    assert any(labels_of(line) for line in lines)  # some heatmap of a class was drawn, not only sheets

    # 3. export_model.py --with_heatmaps: the tuned thresholds and the class maps go into the export
    export = tmp_path / "export"
    exported = run_script("export_model.py", "--model_path", str(weights), "--save_dir", str(export), "--with_heatmaps")
    ok(exported)
    import yaml

    cfg = yaml.safe_load((export / "inference.yml").read_text())
    assert cfg["heatmaps"] is True and cfg["thresholds"] == pytest.approx(limits) and str(file) in cfg["thresholds_source"]
    assert "class maps: yes" in exported.stdout

    # 4. infer.py --heatmap_dir: predict.py's lines and heatmap files
    infer_maps = tmp_path / "hm_infer"
    inferred = run_script("infer.py", "--model_dir", str(export), "--input_file", str(images), "--batch_size", "2",
                          "--num_workers", "0", "--heatmap_dir", str(infer_maps))
    ok(inferred)
    infer_lines = inferred.stdout.splitlines()
    assert [LINE.match(x).group("path") for x in infer_lines] == [LINE.match(x).group("path") for x in lines]
    exact = True
    for a, b, rec in zip(lines, infer_lines, records):
        same_labels_up_to_ties(labels_of(a), labels_of(b), rec["scores"], limits, names)
        exact &= a == b
    if exact:  # (always, unless a score sits within 1e-5 of its threshold)
        assert heatmap_names(infer_maps) == want

    # 5. the maps behind both: checkpoint API == export API
    from cli.api import Predictor as CheckpointPredictor
    from deploy.api import Predictor

    paths = sorted(str(p) for p in images.iterdir())
    dygraph = CheckpointPredictor.from_checkpoint(str(weights))
    static = Predictor.from_export(export)
    assert dygraph.thresholds.values == pytest.approx(tuple(limits)) and str(file) in dygraph.thresholds.source
    assert static.thresholds.values == pytest.approx(tuple(limits))
    p1, m1 = dygraph.class_maps(paths)
    p2, m2 = static.class_maps(paths)
    assert m1.shape == m2.shape == (3, len(names), 2, 2)
    np.testing.assert_allclose(m2, m1, atol=1e-4, rtol=0)
    np.testing.assert_allclose(p2, p1, atol=1e-4, rtol=0)
    np.testing.assert_allclose(p1, [r["scores"] for r in records], atol=1e-5, rtol=0)
    assert not (two_epochs[0] / "thresholds.json").exists()  # the shared run was left alone


# --------------------------------------------------------------------------- val.py refusals
@pytest.mark.parametrize("case", ["custom_without_val_json", "val_json_is_the_test_split"])
def test_val_tuning_needs_a_validation_split(case: str, two_epochs, tiny_demo, tmp_path: Path) -> None:
    weights = copy_run(two_epochs, tmp_path / "run")
    flags = ["val.py", "--load_from", str(weights), "--test_json", str(tiny_demo["test"]), "--tune_thresholds"]
    if case == "custom_without_val_json":
        stderr = failed_cleanly(run_script(*flags, "--dataset", "custom"), "--val_json", "--dataset custom")
    else:
        stderr = failed_cleanly(run_script(*flags, "--val_json", str(tiny_demo["test"])), str(tiny_demo["test"]),
                                "test split", "--tune_on_test")
    assert "error: " in stderr
    assert not (weights.parent / "thresholds.json").exists()


def test_val_tuning_on_the_test_split_when_asked(two_epochs, tiny_demo, tmp_path: Path) -> None:
    weights = copy_run(two_epochs, tmp_path / "run")
    result = run_script("val.py", "--load_from", str(weights), "--test_json", str(tiny_demo["test"]), "--tune_thresholds",
                        "--val_json", str(tiny_demo["test"]), "--tune_on_test")
    ok(result)
    saved = json.loads((weights.parent / "thresholds.json").read_text())
    assert saved["split"] == str(tiny_demo["test"]) and saved["classes"] == tiny_demo["classes"].read_text().split()
    assert f"per-class thresholds tuned on {tiny_demo['test']}" in result.stdout


# --------------------------------------------------------------------------- predict.py: --threshold, --thresholds
def _hand_tuned_run(two_epochs, tiny_demo, dest: Path) -> Path:
    """A copied run with a thresholds.json of 0.0 for every class (every class would be reported)."""
    from evaluation.thresholds import ClassThresholds

    weights = copy_run(two_epochs, dest)
    names = tiny_demo["classes"].read_text().split()
    ClassThresholds(tuple(names), (0.0,) * len(names), split="hand.json", global_threshold=0.5).save(dest / "thresholds.json")
    return weights


def test_predict_threshold_overrides_the_tuned_file(two_epochs, tiny_demo, images, tmp_path: Path) -> None:
    weights = _hand_tuned_run(two_epochs, tiny_demo, tmp_path / "run")
    names = tiny_demo["classes"].read_text().split()
    out = tmp_path / "p.json"
    result = run_script("predict.py", "--load_from", str(weights), "--img_dir", str(images), "--threshold", "0.5",
                        "--output", str(out))
    ok(result)
    assert "thresholds: global 0.5 (--threshold)" in result.stderr and "thresholds.json" not in result.stderr
    records = json.loads(out.read_text())
    for line, rec in zip(result.stdout.splitlines(), records):
        assert labels_of(line) == expected_labels(rec["scores"], [0.5] * len(names), names)
        assert rec["thresholds"] == "global 0.5 (--threshold)"
    # the file's 0.0 would have reported every class on every line
    assert any(len(labels_of(line)) < len(names) for line in result.stdout.splitlines())


def test_predict_corrupt_thresholds_file_is_named(two_epochs, tiny_demo, images, tmp_path: Path) -> None:
    weights = copy_run(two_epochs, tmp_path / "run")
    bad = tmp_path / "bad_thresholds.json"
    bad.write_text('{"classes": ["circle"], "thresholds": [0.5,')
    result = run_script("predict.py", "--load_from", str(weights), "--img_dir", str(images), "--thresholds", str(bad))
    failed_cleanly(result, str(bad))
    assert "prediction:" not in result.stdout


# --------------------------------------------------------------------------- export / infer without maps
def test_infer_heatmaps_need_an_export_with_maps(two_epochs, tiny_demo, images, tmp_path: Path) -> None:
    import yaml

    weights = _hand_tuned_run(two_epochs, tiny_demo, tmp_path / "run")
    export = tmp_path / "plain"
    ok(run_script("export_model.py", "--model_path", str(weights), "--save_dir", str(export), "--threshold", "0.5"))
    cfg = yaml.safe_load((export / "inference.yml").read_text())
    assert cfg["heatmaps"] is False
    assert cfg["thresholds"] is None and cfg["threshold"] == 0.5  # --threshold beats the thresholds.json beside the weights
    maps = tmp_path / "hm"
    result = run_script("infer.py", "--model_dir", str(export), "--input_file", str(images), "--heatmap_dir", str(maps))
    failed_cleanly(result, "--heatmap_dir", "--with_heatmaps", str(export / "inference.yml"))
    assert "prediction:" not in result.stdout and not maps.exists()
    # the Python API refuses the same way
    from deploy.api import Predictor
    from utils.errors import UserError

    with pytest.raises(UserError, match="--with_heatmaps"):
        Predictor.from_export(export).class_maps(sorted(images.iterdir())[:1])


# --------------------------------------------------------------------------- train.py --tune_thresholds
def test_train_tunes_thresholds_after_training(tiny_demo, tmp_path: Path) -> None:
    save = tmp_path / "run"
    val = tiny_demo["root"] / "val_voc07.json"
    result = run_script(*train_flags(tiny_demo, save, 1, "--tune_thresholds", "--val_json", str(val)))
    ok(result)
    saved = json.loads((save / "thresholds.json").read_text())
    assert saved["classes"] == tiny_demo["classes"].read_text().split()
    assert saved["split"] == str(val) and saved["checkpoint"] == str(save / "best.pdparams")
    curves = sorted(save.glob("*.png"))
    assert curves and all(p.stat().st_size > 1000 for p in curves)
    assert f"training curves: {curves[0]}" in result.stdout
    assert f"wrote {save / 'thresholds.json'}" in result.stdout and "F1 tuned (%)" in result.stdout


def test_train_tuning_without_a_validation_split_fails_before_training(tiny_demo, tmp_path: Path) -> None:
    save = tmp_path / "run"
    flags = train_flags(tiny_demo, save, 1, "--tune_thresholds")
    flags[flags.index("--dataset") + 1] = "custom"
    result = run_script(*flags)
    failed_cleanly(result, "--val_json", "--dataset custom")
    assert "Epoch 1" not in result.stdout
    assert not save.exists() or not list(save.glob("*.pdparams"))  # refused before any checkpoint
