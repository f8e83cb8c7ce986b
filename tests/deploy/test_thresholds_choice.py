"""Per-class decision thresholds on the prediction side (no model, no subprocess).

* ``deploy.prediction.choose_thresholds``: --threshold > --thresholds FILE > thresholds.json
  beside the weights > inference.yml's per-class thresholds > the default, with real files
  written by ``evaluation.thresholds.ClassThresholds.save``;
* ``selected_classes`` / ``prediction_line`` / ``prediction_record`` with per-class thresholds;
* ``DeployConfig``'s new fields (thresholds, thresholds_source, heatmaps): round trip and refusals;
* ``datasets.prepare.voc.prepare_voc`` writing the train / val halves of trainval.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from deploy.prediction import (DecisionThresholds, choose_thresholds, deploy_thresholds, global_thresholds, prediction_line,
                               prediction_record, selected_classes)
from evaluation.thresholds import THRESHOLDS_FILENAME, ClassThresholds
from utils.errors import UserError

NAMES = ("cat", "dog", "bird")


def write_thresholds(path: Path, values, classes=NAMES, split: str = "val_voc07.json") -> Path:
    ClassThresholds(classes=tuple(classes), thresholds=tuple(values), split=split, global_threshold=0.5).save(path)
    return path


@pytest.fixture
def files(tmp_path: Path) -> dict:
    """A run folder with thresholds.json beside its weights, and another thresholds file elsewhere."""
    run = tmp_path / "run"
    run.mkdir()
    beside = write_thresholds(run / THRESHOLDS_FILENAME, (0.1, 0.2, 0.3), split="beside_split.json")
    other = write_thresholds(tmp_path / "other.json", (0.7, 0.6, 0.5), split="other_split.json")
    return {"run": run, "weights": str(run / "best.pdparams"), "beside": beside, "other": other}


# --------------------------------------------------------------------------- choose_thresholds precedence
def test_default_when_nothing_else(tmp_path: Path) -> None:
    chosen = choose_thresholds(NAMES, weights=str(tmp_path / "best.pdparams"))  # no thresholds.json there
    assert chosen == DecisionThresholds(0.5, "global 0.5 (default)")
    assert not chosen.per_class
    np.testing.assert_array_equal(chosen.as_array(3), [0.5, 0.5, 0.5])
    assert choose_thresholds(NAMES, default=0.3, default_source="inference.yml").source == "global 0.3 (inference.yml)"


def test_stored_beats_default() -> None:
    chosen = choose_thresholds(NAMES, stored=[0.25, 0.35, 0.45], stored_source="from the yml", default=0.9)
    assert chosen.per_class and chosen.values == (0.25, 0.35, 0.45) and chosen.source == "from the yml"
    np.testing.assert_array_equal(chosen.as_array(3), [0.25, 0.35, 0.45])


def test_file_beside_the_weights_beats_stored(files: dict) -> None:
    chosen = choose_thresholds(NAMES, weights=files["weights"], stored=[0.9, 0.9, 0.9], stored_source="yml")
    assert chosen.values == pytest.approx((0.1, 0.2, 0.3))
    assert chosen.source == f"tuned per class: {files['beside']} (tuned on beside_split.json)"


def test_thresholds_file_beats_the_file_beside_the_weights(files: dict) -> None:
    chosen = choose_thresholds(NAMES, thresholds_file=str(files["other"]), weights=files["weights"], stored=[0.9] * 3)
    assert chosen.values == pytest.approx((0.7, 0.6, 0.5))
    assert str(files["other"]) in chosen.source and "other_split.json" in chosen.source


def test_override_beats_everything(files: dict) -> None:
    chosen = choose_thresholds(NAMES, override=0.42, weights=files["weights"], stored=[0.9] * 3, default=0.1)
    assert not chosen.per_class and chosen.values == 0.42
    assert chosen.source == "global 0.42 (--threshold)"
    assert choose_thresholds(NAMES, override=0.0, weights=files["weights"]).values == 0.0  # 0 is a value, not "unset"


def test_override_and_file_together_are_refused(files: dict) -> None:
    with pytest.raises(UserError, match=r"--threshold 0\.3 and --thresholds .*other\.json exclude each other") as exc:
        choose_thresholds(NAMES, override=0.3, thresholds_file=str(files["other"]))
    assert "give only one" in str(exc.value)


def test_file_for_other_classes_is_refused_with_its_name(files: dict, tmp_path: Path) -> None:
    wrong = write_thresholds(tmp_path / "wrong.json", (0.1, 0.2, 0.3), classes=("cat", "dog", "horse"))
    with pytest.raises(UserError) as exc:
        choose_thresholds(NAMES, thresholds_file=str(wrong))
    assert str(wrong) in str(exc.value) and "horse" in str(exc.value)
    # the same check applies to the file found beside the weights
    write_thresholds(files["beside"], (0.1, 0.2), classes=("cat", "dog"))
    with pytest.raises(UserError) as exc:
        choose_thresholds(NAMES, weights=files["weights"])
    assert str(files["beside"]) in str(exc.value) and "bird" in str(exc.value)


def test_corrupt_thresholds_file_is_refused_with_its_name(tmp_path: Path) -> None:
    bad = tmp_path / "thresholds.json"
    bad.write_text('{"classes": ["cat", "dog", "bird"], "thresholds": [0.1, 0.2')
    with pytest.raises(UserError) as exc:
        choose_thresholds(NAMES, thresholds_file=str(bad))
    assert str(bad) in str(exc.value)


def test_deploy_thresholds_of_an_export(tmp_path: Path) -> None:
    from deploy.inference_config import DeployConfig

    cfg = DeployConfig(model="resnet18", num_heads=1, lam=0.1, num_classes=3, img_size=64, mean=[0, 0, 0], std=[1, 1, 1],
                       class_names=list(NAMES), threshold=0.4, thresholds=[0.2, 0.3, 0.6], thresholds_source="tuned: x.json")
    assert deploy_thresholds(cfg, None, None) == DecisionThresholds((0.2, 0.3, 0.6), "tuned: x.json")
    assert deploy_thresholds(cfg, 0.8, None) == global_thresholds(0.8, "--threshold")
    other = write_thresholds(tmp_path / "t.json", (0.05, 0.06, 0.07))
    assert deploy_thresholds(cfg, None, str(other)).values == pytest.approx((0.05, 0.06, 0.07))
    cfg.thresholds = None
    assert deploy_thresholds(cfg, None, None) == DecisionThresholds(0.4, "global 0.4 (inference.yml)")


# --------------------------------------------------------------------------- selection with per-class thresholds
def test_selected_classes_per_class() -> None:
    scores = np.array([0.30, 0.30, 0.90, 0.05], dtype=np.float32)
    limits = np.array([0.20, 0.50, 0.95, 0.0])
    # class 0 and class 1 have the same score: above class 0's low threshold, below class 1's
    assert selected_classes(scores, limits, None) == [0, 3]
    assert selected_classes(scores, DecisionThresholds(tuple(limits), "t"), None) == [0, 3]
    assert selected_classes(scores, 0.25, None) == [0, 1, 2]  # one global threshold: both
    assert selected_classes(scores, limits, 1) == [0]  # topk: best first
    assert selected_classes(scores, DecisionThresholds(0.0, "t"), None) == [0, 1, 2, 3]
    assert selected_classes(scores, np.array([0.3, 0.31, 1.0, 1.0]), None) == [0]  # score == threshold counts


def test_prediction_line_and_record_carry_the_thresholds() -> None:
    names = ["cat", "dog", "bird", "car"]
    scores = np.array([0.30, 0.30, 0.90, 0.05], dtype=np.float32)
    chosen = DecisionThresholds((0.2, 0.5, 0.95, 0.0), "tuned per class: run/thresholds.json")
    assert prediction_line("a.jpg", scores, names, chosen, None) == "a.jpg prediction: cat,car,"
    record = prediction_record("a.jpg", scores, names, chosen, None)
    assert record["img_path"] == "a.jpg" and record["scores"] == pytest.approx(scores.tolist())
    assert record["thresholds"] == "tuned per class: run/thresholds.json"
    assert [(x["class"], x["threshold"]) for x in record["labels"]] == [("cat", 0.2), ("car", 0.0)]
    assert [x["score"] for x in record["labels"]] == pytest.approx([0.3, 0.05])
    json.dumps(record)  # JSON-serialisable
    plain = prediction_record("a.jpg", scores, names, 0.25, None)
    assert plain["thresholds"] == "given"
    assert [(x["class"], x["threshold"]) for x in plain["labels"]] == [("cat", 0.25), ("dog", 0.25), ("bird", 0.25)]
    arr = prediction_record("a.jpg", scores, names, np.array([0.5, 0.2, 0.5, 0.5]), None)
    assert [(x["class"], x["threshold"]) for x in arr["labels"]] == [("dog", 0.2), ("bird", 0.5)]


def test_decision_thresholds_to_dict() -> None:
    assert DecisionThresholds((0.1, 0.2), "s").to_dict() == {"kind": "per_class", "values": [0.1, 0.2], "source": "s"}
    assert global_thresholds(0.5, "default").to_dict() == {"kind": "global", "values": 0.5, "source": "global 0.5 (default)"}


# --------------------------------------------------------------------------- inference.yml fields
def _deploy_config(**kw):
    from deploy.inference_config import DeployConfig

    fields = dict(model="resnet18", num_heads=1, lam=0.1, num_classes=3, img_size=64, mean=[0.0, 0.0, 0.0],
                  std=[1.0, 1.0, 1.0], class_names=list(NAMES))
    return DeployConfig(**{**fields, **kw})


def test_deploy_config_round_trip_with_thresholds_and_heatmaps(tmp_path: Path) -> None:
    import yaml

    from deploy.inference_config import DeployConfig

    cfg = _deploy_config(thresholds=[0.125, 0.5, 0.875], thresholds_source="tuned per class: run/thresholds.json",
                         heatmaps=True)
    path = cfg.save(tmp_path / "inference.yml")
    raw = yaml.safe_load(path.read_text())
    assert raw["thresholds"] == [0.125, 0.5, 0.875] and raw["heatmaps"] is True
    loaded = DeployConfig.load(path)
    assert loaded == cfg
    assert loaded.thresholds == [0.125, 0.5, 0.875] and loaded.heatmaps is True
    assert loaded.thresholds_source == "tuned per class: run/thresholds.json"
    # without them: the defaults come back
    plain = DeployConfig.load(_deploy_config().save(tmp_path / "plain.yml"))
    assert plain.thresholds is None and plain.heatmaps is False and plain.thresholds_source == ""


@pytest.mark.parametrize("key,value,needle", [
    ("thresholds", [0.1, 0.2], "thresholds must list num_classes=3"),
    ("thresholds", [0.1, 0.2, 1.5], "thresholds must list num_classes=3"),
    ("thresholds", [0.1, True, 0.3], "thresholds must list num_classes=3"),
    ("thresholds", "0.5", "thresholds must list num_classes=3"),
    ("heatmaps", 1, "heatmaps must be true or false"),
    ("heatmaps", "yes", "heatmaps must be true or false"),
    ("thresholds_source", 3, "thresholds_source must be text"),
])
def test_deploy_config_load_refuses_bad_new_fields(tmp_path: Path, key: str, value, needle: str) -> None:
    import yaml

    from deploy.inference_config import DeployConfig

    path = _deploy_config().save(tmp_path / "inference.yml")
    data = yaml.safe_load(path.read_text())
    data[key] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(UserError) as exc:
        DeployConfig.load(path)
    message = str(exc.value)
    assert needle in message and str(path) in message and "re-export" in message


# --------------------------------------------------------------------------- prepare_voc: train / val halves
def test_prepare_voc_writes_train_and_val_halves(tmp_path: Path) -> None:
    from datasets.make_demo import generate_demo
    from datasets.prepare.voc import prepare_voc

    summary = generate_demo(tmp_path / "demo", num_images=10, seed=1, img_size=32)
    written = prepare_voc(str(tmp_path / "demo" / "VOCdevkit"), str(tmp_path / "out"), classes_file=str(summary["classes_file"]))
    assert written["train"] == tmp_path / "out" / "train_voc07.json" and written["val"] == tmp_path / "out" / "val_voc07.json"

    def entries(name: str) -> dict:
        return {Path(e["img_path"]).stem: e["target"] for e in json.loads((tmp_path / "out" / name).read_text())}

    trainval, train, val = entries("trainval_voc07.json"), entries("train_voc07.json"), entries("val_voc07.json")
    assert train and val and not set(train) & set(val)
    assert {**train, **val} == trainval  # the union, with the same labels
    lists = Path(summary["voc_root"]) / "ImageSets" / "Main"
    assert set(val) == set(lists.joinpath("val.txt").read_text().split())
    assert set(train) == set(lists.joinpath("train.txt").read_text().split())
    assert not set(trainval) & set(entries("test_voc07.json"))


def test_prepare_voc_without_train_and_val_lists_writes_no_halves(tmp_path: Path) -> None:
    from datasets.make_demo import generate_demo
    from datasets.prepare.voc import prepare_voc

    summary = generate_demo(tmp_path / "demo", num_images=6, seed=2, img_size=32)
    lists = Path(summary["voc_root"]) / "ImageSets" / "Main"
    (lists / "train.txt").unlink()
    (lists / "val.txt").unlink()
    written = prepare_voc(str(tmp_path / "demo" / "VOCdevkit"), str(tmp_path / "out"), classes_file=str(summary["classes_file"]))
    assert "train" not in written and "val" not in written
    assert not (tmp_path / "out" / "val_voc07.json").exists() and (tmp_path / "out" / "trainval_voc07.json").is_file()
