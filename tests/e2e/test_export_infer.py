"""export_model.py + infer.py end to end: the exported program reproduces predict.py exactly.

Real weights files are made here (resnet18 + CSRA, 5 classes, 1 and 4 heads, saved with
paddle.save beside a classes.txt and a train.py-style config.json), exported at 64 px and
run through the CLIs on a folder of generated JPEGs of different sizes. A third run has an
attention block (GE in stages 3 and 4, sized from img_size) to check that export rebuilds it
from the run's config.json alone and that infer.py needs nothing but the export folder.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ok, run_script

CLASSES = ["cat", "dog", "bird", "car", "tree"]
RUNS = {1: "demo", 4: "wider"}  # heads -> dataset (wider: mean = std = 0.5, checks the yml normalisation)


def user_error(result, *needles: str) -> str:
    """Assert a clean failure: non-zero exit, one `error: ...` line, no traceback. Returns the line."""
    assert result.returncode != 0, result.stdout[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]



@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """5 small JPEGs of different sizes (smooth patterns + noise), sorted names in reverse write order."""
    folder = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for i in range(5):
        h, w = 40 + 9 * i, 90 - 7 * i
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx * (3 + i), yy * (5 - i), (xx + yy) * 2], axis=-1) % 256
        noisy = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / f"img_{4 - i}.jpg", quality=90)
    return folder


def _threshold(scores: np.ndarray) -> float:
    """A threshold between two neighbouring scores near the median, far from both (so the
    lines hold some labels and not others, and no score sits at the threshold)."""
    s = np.sort(scores.ravel())
    mid = len(s) // 2
    k = max(range(mid - 3, mid + 4), key=lambda j: s[j] - s[j - 1])
    return round(float(s[k - 1] + s[k]) / 2, 6)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, images) -> dict:
    """{heads: {"dir", "weights", "threshold"}}: training-run folders made without training."""
    import paddle
    import paddle.nn.functional as F

    from datasets.config import DATASETS
    from datasets.image_io import load_rgb
    from datasets.transforms import preprocess
    from models import build_model

    root = tmp_path_factory.mktemp("runs")
    out = {}
    for heads, dataset in RUNS.items():
        paddle.seed(heads)
        model = build_model("resnet18", len(CLASSES), heads, 0.1)
        model.eval()
        run = root / f"h{heads}"
        run.mkdir()
        paddle.save(model.state_dict(), str(run / "best.pdparams"))
        (run / "classes.txt").write_text("\n".join(CLASSES) + "\n")
        (run / "config.json").write_text(json.dumps({"model": "resnet18", "num_heads": heads, "lam": 0.1, "attention": None,
                                                     "img_size": 64, "dataset": dataset}))
        norm = DATASETS[dataset]
        x = np.stack([preprocess(load_rgb(p), 64, norm.mean, norm.std) for p in sorted(images.iterdir())])
        with paddle.no_grad():
            scores = F.sigmoid(model(paddle.to_tensor(x))).numpy()
        out[heads] = {"dir": run, "weights": run / "best.pdparams", "threshold": _threshold(scores)}
    return out


@pytest.fixture(scope="module")
def exports(runs, tmp_path_factory) -> dict:
    """{heads: export folder}: export_model.py with only --model_path, --save_dir and --threshold."""
    root = tmp_path_factory.mktemp("exports")
    out = {}
    for heads, run in runs.items():
        save = root / f"h{heads}"
        result = run_script("export_model.py", "--model_path", str(run["weights"]), "--save_dir", str(save),
                            "--threshold", f"{run['threshold']}")
        ok(result)
        out[heads] = save
    return out


@pytest.fixture(scope="module")
def predicted(runs, images, tmp_path_factory) -> dict:
    """{heads: (stdout of predict.py, its JSON records)} at the run's threshold."""
    root = tmp_path_factory.mktemp("predict")
    out = {}
    for heads, run in runs.items():
        js = root / f"h{heads}.json"
        result = run_script("predict.py", "--load_from", str(run["weights"]), "--img_dir", str(images),
                            "--threshold", f"{run['threshold']}", "--output", str(js))
        ok(result)
        out[heads] = (result.stdout, json.loads(js.read_text()))
    return out


def test_export_writes_program_params_and_yml(exports, runs) -> None:
    import yaml

    folder = exports[4]
    assert {p.name for p in folder.iterdir()} == {"inference.json", "inference.pdiparams", "inference.yml"}
    cfg = yaml.safe_load((folder / "inference.yml").read_text())
    assert cfg["model"] == "resnet18" and cfg["num_heads"] == 4 and cfg["lam"] == 0.1 and cfg["attention"] is None
    assert cfg["img_size"] == 64 and cfg["num_classes"] == 5 and cfg["class_names"] == CLASSES
    assert cfg["dataset"] == "wider" and cfg["mean"] == [0.5] * 3 and cfg["std"] == [0.5] * 3
    assert cfg["threshold"] == runs[4]["threshold"] and cfg["output"] == "probabilities"
    assert cfg["weights"] == str(runs[4]["weights"].resolve())


@pytest.mark.parametrize("heads,batch,workers", [(1, 1, 0), (1, 3, 1), (4, 1, 1), (4, 3, 0)])
def test_infer_prints_predict_lines(exports, predicted, images, tmp_path, heads, batch, workers) -> None:
    js = tmp_path / "infer.json"
    result = run_script("infer.py", "--model_dir", str(exports[heads]), "--input_file", str(images), "--batch_size", str(batch),
                        "--num_workers", str(workers), "--output", str(js))
    ok(result)
    expected_stdout, expected = predicted[heads]
    assert result.stdout == expected_stdout  # same lines, same order, nothing else on stdout
    labels = [line.split(" prediction: ")[1] for line in result.stdout.splitlines()]
    assert any(labels) and not all(label == "".join(f"{c}," for c in CLASSES) for label in labels)  # a real mix
    records = json.loads(js.read_text())
    assert [r["img_path"] for r in records] == [r["img_path"] for r in expected]
    assert [[x["class"] for x in r["labels"]] for r in records] == [[x["class"] for x in r["labels"]] for r in expected]
    np.testing.assert_allclose([r["scores"] for r in records], [r["scores"] for r in expected], atol=1e-4, rtol=0)


def test_benchmark_block(exports, predicted, images) -> None:
    from deploy.benchlog import parse_report

    result = run_script("infer.py", "--model_dir", str(exports[1]), "--input_file", str(images), "--batch_size", "2",
                        "--enable_benchmark", "True", "--enable_mkldnn", "true", "--cpu_threads", "2")
    ok(result)
    lines = result.stdout.splitlines()
    assert "\n".join(lines[:5]) + "\n" == predicted[1][0]  # predictions first, then the block
    block = lines[5:]
    titles = [ln.strip("- ") for ln in block if ln.startswith("---")]
    assert titles == ["Env info", "Paddle info", "Conf info", "Model info", "Data info", "Perf info"]
    fields = parse_report("\n".join(block))
    for key in ("OS_version", "CUDA_version", "CUDNN_version", "drivier_version", "paddle_version", "paddle_commit",
                "log_api_version", "runtime_device", "ir_optim", "enable_memory_optim", "enable_tensorrt", "enable_mkldnn",
                "cpu_math_library_num_threads", "model_name", "precision", "batch_size", "input_shape", "data_num",
                "cpu_rss(MB)", "gpu_rss(MB)", "gpu_util", "total time spent(s)", "preprocess_time(ms)",
                "inference_time(ms)", "postprocess_time(ms)"):
        assert key in fields, key
    assert fields["runtime_device"] == "cpu" and fields["enable_mkldnn"] == "True" and fields["enable_tensorrt"] == "False"
    assert fields["cpu_math_library_num_threads"] == "2" and fields["precision"] == "fp32"
    assert fields["batch_size"] == "2" and fields["input_shape"] == "3,64,64" and fields["data_num"] == "5"
    assert fields["model_name"] == "resnet18_csra" and fields["log_api_version"] == "1.0"
    assert float(fields["cpu_rss(MB)"]) > 100
    assert float(fields["inference_time(ms)"]) > 0 and float(fields["preprocess_time(ms)"]) > 0
    assert float(fields["postprocess_time(ms)"]) >= 0 and float(fields["total time spent(s)"]) > 0


def test_missing_model_dir(images, tmp_path) -> None:
    missing = tmp_path / "no_such_export"
    result = run_script("infer.py", "--model_dir", str(missing), "--input_file", str(images))
    user_error(result, str(missing), "export_model.py")


def test_params_from_another_export(exports, images, tmp_path) -> None:
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name in ("inference.json", "inference.yml"):
        shutil.copy(exports[1] / name, mixed / name)
    shutil.copy(exports[4] / "inference.pdiparams", mixed / "inference.pdiparams")
    result = run_script("infer.py", "--model_dir", str(mixed), "--input_file", str(images))
    user_error(result, "do not belong together", "export_model.py")
    assert result.stdout == ""


def test_undecodable_image_is_reported_and_skipped(exports, predicted, images, tmp_path) -> None:
    folder = tmp_path / "mixed_imgs"
    folder.mkdir()
    good = sorted(images.iterdir())
    shutil.copy(good[0], folder / "a.jpg")
    (folder / "b.jpg").write_bytes(b"this is not a jpeg")
    shutil.copy(good[1], folder / "c.jpg")
    result = run_script("infer.py", "--model_dir", str(exports[4]), "--input_file", str(folder), "--batch_size", "2")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert f"skipped {folder / 'b.jpg'}: cannot read image" in result.stderr
    expected = predicted[4][0].splitlines()
    assert result.stdout.splitlines() == [
        f"{folder / 'a.jpg'} prediction: {expected[0].split(' prediction: ')[1]}",
        f"{folder / 'c.jpg'} prediction: {expected[1].split(' prediction: ')[1]}",
    ]


def test_export_needs_weights_unless_random_init(tmp_path) -> None:
    save = tmp_path / "random"
    flags = ["--model", "resnet18", "--num_cls", "5", "--dataset", "voc07", "--img_size", "64", "--save_dir", str(save)]
    refused = run_script("export_model.py", *flags[:2], "--save_dir", str(save))
    user_error(refused, "--model_path", "--random_init")
    assert not save.exists()
    result = run_script("export_model.py", *flags[:2], "--img_size", "64", "--save_dir", str(save), "--random_init")
    ok(result)
    import yaml

    cfg = yaml.safe_load((save / "inference.yml").read_text())
    assert cfg["weights"] == "random_init" and cfg["num_classes"] == 20 and cfg["img_size"] == 64  # voc07 by default
    assert "--num_cls" in user_error(run_script("export_model.py", *flags, "--random_init"), "--num_cls")


def test_export_refuses_weights_without_classifier(runs, tmp_path) -> None:
    """A backbone-only checkpoint (e.g. ImageNet weights) cannot be exported: the classifier would be random."""
    import paddle

    state = paddle.load(str(runs[1]["weights"]))
    backbone = tmp_path / "backbone.pdparams"
    paddle.save({k: v for k, v in state.items() if not k.startswith("classifier.")}, str(backbone))
    result = run_script("export_model.py", "--model_path", str(backbone), "--model", "resnet18", "--num_cls", "5",
                        "--classes", str(runs[1]["dir"] / "classes.txt"), "--img_size", "64", "--save_dir", str(tmp_path / "out"))
    user_error(result, str(backbone), "classifier.multi_head.0.head.weight")
    assert not (tmp_path / "out" / "inference.yml").exists()


def test_predictor_guards_the_input_shape(exports) -> None:
    from deploy.inference_config import DeployConfig, find_model_files
    from utils.errors import UserError
    from deploy.predictor import Predictor, RuntimeOptions

    files = find_model_files(str(exports[1]))
    deploy = DeployConfig.load(files.config_file)
    predictor = Predictor(files, RuntimeOptions(enable_mkldnn=False, cpu_threads=1), deploy)
    probs = predictor(np.zeros((2, 3, 64, 64), np.float32))
    assert probs.shape == (2, 5) and np.all((probs >= 0) & (probs <= 1))
    with pytest.raises(UserError, match=r"\[2, 3, 96, 96\].*\[N, 3, 64, 64\].*inference\.yml"):
        predictor(np.zeros((2, 3, 96, 96), np.float32))
    rng = np.random.default_rng(0)
    a, b = rng.random((3, 64, 64), dtype=np.float32), rng.random((3, 64, 64), dtype=np.float32)
    np.testing.assert_allclose(predictor([a, b]), predictor(np.stack([a, b])), atol=1e-6, rtol=0)  # a list of images works
    with pytest.raises(UserError, match=r"different sizes \(\[3, 64, 64\], \[3, 80, 80\]\).*\[3, 64, 64\]"):
        predictor([a, np.zeros((3, 80, 80), np.float32), b])
    for empty in ([], np.zeros((0, 3, 64, 64), np.float32)):
        with pytest.raises(UserError, match="empty batch"):
            predictor(empty)


@pytest.mark.parametrize("flag", ["--use_gpu", "--use_tensorrt"])
def test_gpu_options_refused_on_cpu_build(exports, images, flag) -> None:
    import paddle

    result = run_script("infer.py", "--model_dir", str(exports[1]), "--input_file", str(images), flag, "True")
    if paddle.is_compiled_with_cuda():  # a GPU machine: the flag is honoured or refused with a message
        assert "Traceback" not in result.stderr
        return
    user_error(result, f"{flag} True", "CUDA")
    assert result.stdout == ""


def test_onnx_export(exports, runs, predicted, tmp_path) -> None:
    """With paddle2onnx installed: model.onnx is written (and matches predict.py under onnxruntime);
    without it: a clear error naming requirements-onnx.txt."""
    save = tmp_path / "with_onnx"
    result = run_script("export_model.py", "--model_path", str(runs[1]["weights"]), "--save_dir", str(save), "--onnx")
    if importlib.util.find_spec("paddle2onnx") is None or importlib.util.find_spec("onnx") is None:
        user_error(result, "--onnx", "paddle2onnx", "pip install -r requirements-onnx.txt")
        assert not (save / "inference.json").exists() and not (save / "inference.yml").exists()  # refused before exporting
        return
    ok(result)
    assert (save / "model.onnx").stat().st_size > 1000
    if importlib.util.find_spec("onnxruntime") is None:
        return
    import onnxruntime as ort

    from datasets.image_io import load_rgb
    from datasets.transforms import preprocess

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(save / "model.onnx"), options, providers=["CPUExecutionProvider"])
    records = predicted[1][1]
    x = np.stack([preprocess(load_rgb(r["img_path"]), 64, (0, 0, 0), (1, 1, 1)) for r in records])
    probs = session.run(None, {"x": x})[0]
    np.testing.assert_allclose(probs, [r["scores"] for r in records], atol=1e-4, rtol=0)


def test_onnx_export_without_paddle2onnx(runs, tmp_path) -> None:
    """export_model.py --onnx where paddle2onnx cannot be imported (hidden by a sitecustomize
    when it is installed): one clear error naming the extra, before anything is written."""
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['paddle2onnx'] = None  # find_spec -> None, import fails\n")
    save = tmp_path / "no_onnx"
    result = run_script("export_model.py", "--model_path", str(runs[1]["weights"]), "--save_dir", str(save), "--onnx",
                        env={"PYTHONPATH": str(hide)})
    user_error(result, "--onnx needs paddle2onnx", "not installed", "pip install -r requirements-onnx.txt", "without --onnx")
    assert result.returncode == 2 and result.stdout == ""
    assert not save.exists() or not any(save.iterdir())


def test_onnx_missing_tools_message(monkeypatch) -> None:
    from utils.errors import UserError
    from deploy.export import require_onnx_tools

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "paddle2onnx" else real(name, *a))
    with pytest.raises(UserError, match=r"paddle2onnx.*pip install -r requirements-onnx\.txt"):
        require_onnx_tools()


def test_str2bool() -> None:
    from deploy.inference_config import str2bool

    for text in ("True", "true", "TRUE", "1", "yes", "Yes", " y ", "on"):
        assert str2bool(text) is True
    for text in ("False", "false", "0", "no", "NO", "n", "off"):
        assert str2bool(text) is False
    assert str2bool(True) is True and str2bool(False) is False
    for text in ("", "maybe", "2", "none", "truee"):
        with pytest.raises(argparse.ArgumentTypeError):
            str2bool(text)
    parser = argparse.ArgumentParser()
    parser.add_argument("--flag", type=str2bool, default=False)
    assert parser.parse_args(["--flag", "True"]).flag is True
    with pytest.raises(SystemExit):
        parser.parse_args(["--flag", "maybe"])


def test_prefetcher_matches_iter_batches(images, tmp_path) -> None:
    """Worker processes or not, the batches equal deploy.prediction.iter_batches' (ragged end, failures skipped)."""
    from deploy.benchlog import StageTimer
    from deploy.predictor import BatchPrefetcher
    from deploy.prediction import iter_batches

    paths = [str(p) for p in sorted(images.iterdir())]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\x00" * 10)
    paths.insert(2, str(bad))
    ref_failures: list = []
    reference = list(iter_batches(paths, 32, (0.5,) * 3, (0.5,) * 3, 2, ref_failures))
    for workers in (0, 2):
        failures: list = []
        timer = StageTimer()
        with BatchPrefetcher(paths, 32, (0.5,) * 3, (0.5,) * 3, 2, failures, workers=workers, timer=timer) as batches:
            got = list(batches)
        assert [b.paths for b in got] == [b.paths for b in reference]
        for a, b in zip(got, reference):
            np.testing.assert_array_equal(a.images, b.images)
        assert failures == ref_failures and len(failures) == 1
        assert timer.calls["preprocess"] == len(reference) and timer.seconds["preprocess"] > 0


def test_deploy_config_rejects_a_broken_yml(tmp_path) -> None:
    from deploy.inference_config import DeployConfig
    from utils.errors import UserError

    path = tmp_path / "inference.yml"
    path.write_text("model: resnet18\nnum_heads: 1\nlam: 0.1\nnum_classes: 3\nimg_size: 64\n"
                    "mean: [0, 0, 0]\nstd: [1, 1, 1]\nclass_names: [a, b]\n")
    with pytest.raises(UserError, match=r"inference\.yml.*class_names.*re-export"):
        DeployConfig.load(path)
    path.write_text("model: [unclosed\n")
    with pytest.raises(UserError, match="YAML"):
        DeployConfig.load(path)


# --------------------------------------------------------------------------- inputs, model files, precision
def test_single_image_input(exports, predicted, images) -> None:
    """--input_file with one image prints that image's predict.py line (the path as given)."""
    image = sorted(images.iterdir())[2]
    result = run_script("infer.py", "--model_dir", str(exports[1]), "--input_file", str(image), "--num_workers", "0")
    ok(result)
    assert result.stdout.splitlines() == [line for line in predicted[1][0].splitlines() if line.startswith(f"{image} ")]


def test_empty_or_missing_input(exports, tmp_path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    user_error(run_script("infer.py", "--model_dir", str(exports[1]), "--input_file", str(empty)), f"no images in {empty}")
    missing = tmp_path / "nowhere.jpg"
    user_error(run_script("infer.py", "--model_dir", str(exports[1]), "--input_file", str(missing)), str(missing), "not found")


def test_model_file_and_params_file(exports, predicted, images, tmp_path) -> None:
    """--model_file/--params_file instead of --model_dir: any file names, inference.yml beside the program."""
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    shutil.copy(exports[4] / "inference.json", renamed / "csra.json")
    shutil.copy(exports[4] / "inference.pdiparams", renamed / "csra.pdiparams")
    shutil.copy(exports[4] / "inference.yml", renamed / "inference.yml")
    result = run_script("infer.py", "--model_file", str(renamed / "csra.json"), "--params_file", str(renamed / "csra.pdiparams"),
                        "--input_file", str(images), "--batch_size", "3", "--num_workers", "0")
    ok(result)
    assert result.stdout == predicted[4][0]


def test_model_file_errors(exports, images, tmp_path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("inference.json", "inference.pdiparams"):
        shutil.copy(exports[1] / name, bare / name)
    flags = ["--input_file", str(images)]
    user_error(run_script("infer.py", "--model_dir", str(bare), *flags), "no inference.yml", "export_model.py")
    user_error(run_script("infer.py", "--model_file", str(bare / "inference.json"), *flags), "--model_dir", "--params_file")
    missing = tmp_path / "gone.pdiparams"
    user_error(run_script("infer.py", "--model_file", str(bare / "inference.json"), "--params_file", str(missing), *flags),
               f"model weights file {missing} not found")


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_reduced_precision_refused_on_cpu(exports, images, precision) -> None:
    """fp16/int8 are GPU (TensorRT) modes: on CPU they are refused, never silently run as fp32."""
    result = run_script("infer.py", "--model_dir", str(exports[1]), "--input_file", str(images), "--precision", precision)
    user_error(result, f"--precision {precision}", "only fp32", "--use_gpu True")
    assert result.stdout == ""


def test_runtime_option_checks() -> None:
    """The in-process rules behind the CLI refusals (CPU build of Paddle)."""
    import paddle

    from utils.errors import UserError
    from deploy.predictor import RuntimeOptions, check_runtime_options

    check_runtime_options(RuntimeOptions())  # fp32 on CPU
    if paddle.is_compiled_with_cuda():
        pytest.skip("the refusals below are for a CPU-only Paddle")
    for opts, pattern in ((RuntimeOptions(precision="fp16"), "only fp32"), (RuntimeOptions(precision="int8"), "only fp32"),
                          (RuntimeOptions(use_gpu=True), "no CUDA"), (RuntimeOptions(use_tensorrt=True, use_gpu=True), "TensorRT"),
                          (RuntimeOptions(precision="bf16"), "choose one of fp32, fp16, int8")):
        with pytest.raises(UserError, match=pattern):
            check_runtime_options(opts)


# --------------------------------------------------------------------------- attention blocks
ATTENTION_RUN = {"attention": "ge", "attention_stages": [3, 4]}


@pytest.fixture(scope="module")
def attention_run(tmp_path_factory, images) -> dict:
    """A training-run folder for resnet18 + GE in stages 3,4 at 64 px, and its dygraph scores on ``images``."""
    import paddle
    import paddle.nn.functional as F

    from datasets.config import DATASETS
    from datasets.image_io import load_rgb
    from datasets.transforms import preprocess
    from models import build_model

    paddle.seed(7)
    model = build_model("resnet18", len(CLASSES), 2, 0.2, img_size=64, **ATTENTION_RUN)
    model.eval()
    run = tmp_path_factory.mktemp("att_run")
    paddle.save(model.state_dict(), str(run / "best.pdparams"))
    (run / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    (run / "config.json").write_text(json.dumps({"model": "resnet18", "num_heads": 2, "lam": 0.2, "img_size": 64,
                                                 "dataset": "demo", **ATTENTION_RUN}))
    paths = sorted(images.iterdir())
    norm = DATASETS["demo"]
    with paddle.no_grad():
        scores = F.sigmoid(model(paddle.to_tensor(np.stack([preprocess(load_rgb(p), 64, norm.mean, norm.std) for p in paths]))))
    return {"weights": run / "best.pdparams", "paths": [str(p) for p in paths], "scores": scores.numpy()}


def test_attention_export_round_trip(attention_run, tmp_path) -> None:
    """Export rebuilds the attention model from config.json alone; the yml records the block and
    its stages; infer.py reproduces the dygraph scores from the export folder alone."""
    import yaml

    save = tmp_path / "att_export"
    result = run_script("export_model.py", "--model_path", str(attention_run["weights"]), "--save_dir", str(save))
    ok(result)
    assert "attention ge in stage(s) 3,4" in result.stdout
    cfg = yaml.safe_load((save / "inference.yml").read_text())
    assert cfg["attention"] == "ge" and cfg["attention_stages"] == [3, 4]
    assert cfg["num_heads"] == 2 and cfg["lam"] == 0.2 and cfg["img_size"] == 64
    js = tmp_path / "att.json"
    result = run_script("infer.py", "--model_dir", str(save), "--input_file", str(Path(attention_run["paths"][0]).parent),
                        "--batch_size", "3", "--num_workers", "0", "--output", str(js))
    ok(result)
    records = json.loads(js.read_text())
    assert [r["img_path"] for r in records] == attention_run["paths"]
    np.testing.assert_allclose([r["scores"] for r in records], attention_run["scores"], atol=1e-4, rtol=0)


def test_attention_stages_inherited_only_with_the_runs_attention() -> None:
    from cli.args import model_fields

    run = {"model": "resnet50", "num_heads": 4, "img_size": 224, **ATTENTION_RUN}

    def filled(**given) -> argparse.Namespace:
        args = argparse.Namespace(model=None, num_heads=None, lam=None, attention=None, attention_stages=None, img_size=None)
        vars(args).update(given)
        before = dict(vars(args))
        fields = model_fields(vars(args), dict(run))
        assert vars(args) == before  # resolved into a new dict, the parsed flags stay as given
        return argparse.Namespace(**fields)

    args = filled()
    assert (args.model, args.num_heads, args.lam, args.img_size) == ("resnet50", 4, 0.1, 224)
    assert (args.attention, args.attention_stages) == ("ge", [3, 4])
    assert filled(attention="GE").attention_stages == [3, 4]  # the same block, spelled otherwise
    assert filled(attention="se").attention_stages is None  # another block: its own default stages
    assert filled(attention="none").attention_stages is None  # no block: no stages
    assert filled(attention="se", attention_stages=[2]).attention_stages == [2]  # explicit stages always win
    assert filled(attention_stages=[4]).attention_stages == [4]


NOISE = ("No ccache found", "OMP_NUM_THREADS", "not support input out tensor", "ReduceMeanCheckIfOneDNNSupport",
         "Skip loading for", "UserWarning")


def test_export_and_infer_print_no_known_paddle_noise(runs, images, tmp_path) -> None:
    """Paddle's start-up notices, the PIR glog line of jit.save and the oneDNN diagnostic are silenced (utils.quiet)."""
    save = tmp_path / "quiet"
    exported = run_script("export_model.py", "--model_path", str(runs[1]["weights"]), "--save_dir", str(save),
                          env={"OMP_NUM_THREADS": "2"})
    ok(exported)
    inferred = run_script("infer.py", "--model_dir", str(save), "--input_file", str(images), "--num_workers", "0",
                          "--enable_mkldnn", "True", env={"OMP_NUM_THREADS": "2"})
    ok(inferred)
    for result in (exported, inferred):
        for noise in NOISE:
            assert noise not in result.stderr and noise not in result.stdout, (noise, result.stderr[-2000:])
    assert all(" prediction: " in line for line in inferred.stdout.splitlines())
