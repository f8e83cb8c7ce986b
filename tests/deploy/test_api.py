"""The Python API: ``deploy.api.Predictor`` (from_model, from_export) and ``cli.api.Predictor.from_checkpoint``.

* from_model on a random resnet18 + CSRA (4 classes, 64 px): paths, PIL images and uint8
  arrays give the same predictions; every label at or above its class's threshold, best first;
  class maps [N, C, 2, 2] whose probabilities are the scores; bad inputs are UserErrors;
* from_checkpoint on the 2-epoch demo run reproduces predict.py's --output scores;
* from_export on an ``export_model.py --with_heatmaps`` export gives the checkpoint's scores
  and maps; an export without class maps refuses ``class_maps`` naming --with_heatmaps.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ok, run_script

NAMES = ["cat", "dog", "bird", "car"]


@pytest.fixture(scope="module")
def pngs(tmp_path_factory) -> list[Path]:
    """4 lossless RGB images of different sizes (so a path, its PIL image and its array hold the same pixels)."""
    folder = tmp_path_factory.mktemp("api_imgs")
    rng = np.random.default_rng(5)
    paths = []
    for i, (w, h) in enumerate([(64, 64), (80, 48), (40, 90), (70, 70)]):
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx * (4 + i), yy * (7 - i), (xx * yy) % 97 * 2], axis=-1) % 256
        arr = np.clip(base + rng.normal(0, 30, base.shape), 0, 255).astype(np.uint8)
        path = folder / f"im{i}.png"
        Image.fromarray(arr).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def model():
    import paddle

    from models import build_model

    paddle.seed(11)
    net = build_model("resnet18", num_classes=len(NAMES), img_size=64)
    net.eval()
    return net


def make_predictor(model, thresholds=0.5, batch_size: int = 3):
    from deploy.api import Predictor

    return Predictor.from_model(model, NAMES, 64, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), thresholds=thresholds, batch_size=batch_size)


def test_paths_pil_images_and_arrays_give_the_same_predictions(model, pngs) -> None:
    predictor = make_predictor(model, thresholds=0.0)
    by_path = predictor.predict(pngs)
    by_str = predictor.predict([str(p) for p in pngs])
    by_pil = predictor.predict([Image.open(p) for p in pngs])
    by_array = predictor.predict([np.asarray(Image.open(p).convert("RGB")) for p in pngs])
    assert len(by_path) == len(pngs)
    assert by_path == by_str == by_pil == by_array
    # a single image (not in a list) gives a list of one dict
    assert predictor.predict(pngs[1]) == [by_path[1]]
    assert predictor.predict(np.asarray(Image.open(pngs[2]).convert("RGB"))) == [by_path[2]]
    # batch size does not change the scores
    np.testing.assert_allclose(make_predictor(model, batch_size=1).scores(pngs), predictor.scores(pngs), atol=1e-5, rtol=0)


def test_labels_are_those_at_or_above_their_threshold_best_first(model, pngs) -> None:
    from deploy.prediction import DecisionThresholds

    scores = make_predictor(model).scores(pngs)
    assert scores.shape == (4, 4) and scores.dtype == np.float32
    # per class: the median of the class's scores, so each class is chosen for some images and not others
    limits = tuple(float(v) for v in np.median(scores, axis=0))
    predictor = make_predictor(model, thresholds=DecisionThresholds(limits, "test thresholds"))
    assert predictor.thresholds.source == "test thresholds"
    got = predictor.predict(pngs)
    for row, labels in zip(scores, got):
        expected = sorted((c for c in range(4) if row[c] >= limits[c]), key=lambda c: -row[c])
        assert list(labels) == [NAMES[c] for c in expected]  # exactly these, best first
        assert list(labels.values()) == pytest.approx([float(row[c]) for c in expected])
        assert list(labels.values()) == sorted(labels.values(), reverse=True)
    assert sum(len(d) for d in got) == sum(int((scores[:, c] >= limits[c]).sum()) for c in range(4))
    # multi-label, not the arg-max: threshold 0 returns every label, best first
    for row, labels in zip(scores, make_predictor(model, thresholds=0.0).predict(pngs)):
        assert list(labels) == [NAMES[c] for c in np.argsort(-row, kind="stable")]
    # nothing reaches 1.0: empty dicts; topk keeps the best ones
    assert make_predictor(model, thresholds=1.0).predict(pngs) == [{}] * 4
    for row, labels in zip(scores, make_predictor(model, thresholds=0.0).predict(pngs, topk=2)):
        assert list(labels) == [NAMES[c] for c in np.argsort(-row, kind="stable")[:2]]


def test_class_maps_shapes_and_probabilities(model, pngs) -> None:
    predictor = make_predictor(model, batch_size=3)
    probs, maps = predictor.class_maps(pngs)
    assert probs.shape == (4, 4) and maps.shape == (4, 4, 2, 2)  # 64 px / stride 32
    np.testing.assert_allclose(probs, predictor.scores(pngs), atol=1e-5, rtol=0)
    # the maps explain the logits: sigmoid(sum over positions) = the probabilities
    np.testing.assert_allclose(1 / (1 + np.exp(-maps.sum(axis=(2, 3)))), probs, atol=1e-5, rtol=0)


def test_write_heatmaps(model, pngs, tmp_path: Path) -> None:
    predictor = make_predictor(model, thresholds=0.0)
    written = predictor.write_heatmaps(pngs[:2], tmp_path / "hm", topk=1)
    names = sorted(p.name for p in written)
    best = [NAMES[int(np.argmax(row))] for row in predictor.scores(pngs[:2])]
    assert names == sorted([f"im0__{best[0]}.png", "im0__sheet.png", f"im1__{best[1]}.png", "im1__sheet.png"])
    assert Image.open(tmp_path / "hm" / f"im1__{best[1]}.png").size == (80, 48)


def test_bad_inputs_are_user_errors(model, pngs, tmp_path: Path) -> None:
    from deploy.api import Predictor
    from deploy.prediction import DecisionThresholds
    from utils.errors import UserError

    predictor = make_predictor(model)
    with pytest.raises(UserError, match="uint8"):
        predictor.predict(np.zeros((32, 32, 3), np.float32))
    with pytest.raises(UserError, match="uint8"):
        predictor.predict([np.zeros((32, 32, 3), np.float64)])
    missing = tmp_path / "missing.jpg"
    with pytest.raises(UserError) as exc:
        predictor.predict([pngs[0], missing])
    assert str(missing) in str(exc.value)
    for empty in ([], ()):
        with pytest.raises(UserError, match="no images given"):
            predictor.predict(empty)
        with pytest.raises(UserError, match="no images given"):
            predictor.class_maps(empty)
    with pytest.raises(UserError, match="image 0"):
        predictor.predict([42])
    with pytest.raises(UserError, match="3 thresholds for 4 classes"):
        Predictor.from_model(model, NAMES, 64, (0, 0, 0), (1, 1, 1), thresholds=DecisionThresholds((0.1, 0.2, 0.3), "x"))


# --------------------------------------------------------------------------- from a training run's checkpoint
def _test_images(tiny_demo: dict, n: int = 3) -> list[str]:
    return [json.loads(Path(tiny_demo["test"]).read_text())[i]["img_path"] for i in range(n)]


def test_from_checkpoint_matches_predict_script(two_epochs, tiny_demo, tmp_path: Path) -> None:
    from cli.api import Predictor
    from utils.errors import UserError

    weights = two_epochs[0] / "last.pdparams"
    images = _test_images(tiny_demo)
    out = tmp_path / "preds.json"
    ok(run_script("predict.py", "--load_from", str(weights), *images, "--output", str(out)))
    records = {r["img_path"]: r for r in json.loads(out.read_text())}
    predictor = Predictor.from_checkpoint(str(weights))
    assert predictor.class_names == tuple(tiny_demo["classes"].read_text().split())
    assert not predictor.thresholds.per_class and predictor.thresholds.values == 0.5  # no thresholds.json in that run
    scores = predictor.scores(images)
    np.testing.assert_allclose(scores, [records[p]["scores"] for p in images], atol=1e-5, rtol=0)
    for path, labels in zip(images, predictor.predict(images)):
        assert set(labels) == {x["class"] for x in records[path]["labels"]}
    # predict.py's flags by name
    every = Predictor.from_checkpoint(str(weights), threshold=0.0, batch_size=2)
    assert every.thresholds.source == "global 0 (--threshold)" and every.batch_size == 2
    assert every.predict(images[:1])[0].keys() == set(predictor.class_names)
    with pytest.raises(UserError, match=r"unknown option\(s\) colour, topkk"):
        Predictor.from_checkpoint(str(weights), topkk=3, colour="red")
    with pytest.raises(UserError, match="not found"):
        Predictor.from_checkpoint(str(tmp_path / "none.pdparams"))


def test_from_export_with_heatmaps_matches_the_checkpoint(two_epochs, tiny_demo, tmp_path: Path) -> None:
    from cli.api import Predictor as CheckpointPredictor
    from deploy.api import Predictor
    from deploy.inference_config import DeployConfig
    from utils.errors import UserError

    weights = two_epochs[0] / "last.pdparams"
    export = tmp_path / "export"
    ok(run_script("export_model.py", "--model_path", str(weights), "--save_dir", str(export), "--with_heatmaps"))
    images = _test_images(tiny_demo)
    exported = Predictor.from_export(export)
    dygraph = CheckpointPredictor.from_checkpoint(str(weights))
    assert exported.class_names == dygraph.class_names and exported.img_size == 64
    assert exported.thresholds.values == 0.5 and "inference.yml" in exported.thresholds.source
    np.testing.assert_allclose(exported.scores(images), dygraph.scores(images), atol=1e-4, rtol=0)
    probs, maps = exported.class_maps(images)
    ref_probs, ref_maps = dygraph.class_maps(images)
    assert maps.shape == ref_maps.shape == (3, len(dygraph.class_names), 2, 2)
    np.testing.assert_allclose(probs, ref_probs, atol=1e-4, rtol=0)
    np.testing.assert_allclose(maps, ref_maps, atol=1e-4, rtol=0)
    # the export's thresholds can be overridden like infer.py's
    assert Predictor.from_export(export, threshold=0.0).predict(images[:1])[0].keys() == set(dygraph.class_names)

    # an export without class maps (its inference.yml says heatmaps: false, as export_model.py writes it without
    # --with_heatmaps: see tests/e2e/test_heatmaps_thresholds_cli.py) refuses class_maps and says how to fix it
    plain = tmp_path / "plain"
    plain.mkdir()
    for name in ("inference.json", "inference.pdiparams"):
        shutil.copy(export / name, plain / name)
    cfg = DeployConfig.load(export / "inference.yml")
    cfg.heatmaps = False
    cfg.save(plain / "inference.yml")
    no_maps = Predictor.from_export(plain)
    with pytest.raises(UserError, match="--with_heatmaps") as exc:
        no_maps.class_maps(images)
    assert str(plain) in str(exc.value)
    with pytest.raises(UserError, match="--with_heatmaps"):
        no_maps.write_heatmaps(images, tmp_path / "hm")
    assert not (tmp_path / "hm").exists() or not any((tmp_path / "hm").iterdir())
