"""val.py and predict.py end to end: output formats, score files, bad inputs."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import run_script

LINE = re.compile(r"^(?P<path>\S+) prediction: (?P<labels>(?:[A-Za-z_]+,)*)$")


def test_val_prints_reference_lines_and_table(two_epochs, tiny_demo, tmp_path: Path) -> None:
    save, train_run = two_epochs
    scores = tmp_path / "scores.json"
    result = run_script("val.py", "--load_from", str(save / "last.pdparams"), "--dataset", "demo",
                        "--test_json", str(tiny_demo["test"]), "--save_scores", str(scores), "--json_out", str(tmp_path / "m.json"))
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"mAP: \d\.\d{6}", lines[0])
    assert re.fullmatch(r"CP: \d\.\d{6}, CR: \d\.\d{6}, CF1 :\d\.\d{6}", lines[1])
    assert re.fullmatch(r"OP: \d\.\d{6}, OR: \d\.\d{6}, OF1 \d\.\d{6}", lines[2])
    for name in tiny_demo["classes"].read_text().split():
        # index, class, positives, AP (%), best-F1 threshold, its F1 (%)
        assert re.search(rf"^\d+\s+{name}\s+\d+\s+\d+\.\d\d\s+\d\.\d{{4}}\s+\d+\.\d\d$", result.stdout, re.M), name
    # Same weights as the training run's last evaluation -> the same mAP line.
    last_map = re.findall(r"^mAP: \d\.\d{6}$", train_run.stdout, re.M)[-1]
    assert lines[0] == last_map
    # The score file feeds the evaluator and reproduces the numbers.
    evaluated = run_script("-m", "evaluation.evaluate", "--pred", str(scores), "--ann", str(tiny_demo["test"]), "--dataset", "voc07")
    assert evaluated.returncode == 0, evaluated.stderr
    assert evaluated.stdout.splitlines()[:3] == lines[:3]
    assert json.loads((tmp_path / "m.json").read_text())["mAP"] == pytest.approx(float(lines[0].split()[1]), abs=1e-6)


def test_val_refuses_a_checkpoint_with_another_class_count(two_epochs, tiny_demo, tmp_path: Path) -> None:
    classes = tmp_path / "classes.txt"
    classes.write_text("a\nb\nc\n")
    result = run_script("val.py", "--load_from", str(two_epochs[0] / "last.pdparams"), "--test_json", str(tiny_demo["test"]),
                        "--classes", str(classes))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "classifier.multi_head.0.head.weight" in result.stderr or "classes" in result.stderr


def test_predict_lines_are_sorted_and_in_reference_form(two_epochs, tiny_demo, tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for img in sorted(tiny_demo["images"].iterdir())[:5][::-1]:
        shutil.copy(img, folder / img.name)
    out = tmp_path / "preds.json"
    result = run_script("predict.py", "--load_from", str(two_epochs[0] / "last.pdparams"), "--img_dir", str(folder),
                        "--threshold", "0.3", "--output", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert len(lines) == 5
    paths = [LINE.match(line).group("path") for line in lines]
    assert paths == sorted(paths) and all(p.startswith(f"{folder}/") for p in paths)
    records = json.loads(out.read_text())
    names = tiny_demo["classes"].read_text().split()
    for line, rec in zip(lines, records):
        assert len(rec["scores"]) == len(names)
        chosen = [names[i] for i, s in enumerate(rec["scores"]) if s >= 0.3]
        assert line == f"{rec['img_path']} prediction: " + "".join(f"{c}," for c in chosen)


def test_predict_topk_limits_labels(two_epochs, tiny_demo) -> None:
    image = sorted(tiny_demo["images"].iterdir())[0]
    result = run_script("predict.py", "--load_from", str(two_epochs[0] / "last.pdparams"), str(image), "--threshold", "0", "--topk", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    labels = LINE.match(result.stdout.strip()).group("labels")
    assert labels.count(",") == 2


def test_predict_reports_unreadable_files_and_fails(two_epochs, tiny_demo, tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = sorted(tiny_demo["images"].iterdir())[0]
    shutil.copy(good, folder / "a.jpg")
    (folder / "b.jpg").write_bytes(b"not a jpeg at all")
    result = run_script("predict.py", "--load_from", str(two_epochs[0] / "last.pdparams"), "--img_dir", str(folder))
    assert result.returncode == 1
    assert result.stdout.startswith(f"{folder}/a.jpg prediction: ")
    assert "b.jpg" in result.stderr and "Traceback" not in result.stderr


def test_predict_empty_folder_is_a_clear_error(two_epochs, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = run_script("predict.py", "--load_from", str(two_epochs[0] / "last.pdparams"), "--img_dir", str(tmp_path / "empty"))
    assert result.returncode == 2 and "no images in" in result.stderr and "Traceback" not in result.stderr


def test_predict_missing_weights_is_a_clear_error(tiny_demo, tmp_path: Path) -> None:
    result = run_script("predict.py", "--load_from", str(tmp_path / "none.pdparams"), "--img_dir", str(tiny_demo["images"]))
    assert result.returncode == 2 and "not found" in result.stderr and "Traceback" not in result.stderr


def test_backbone_only_weights_are_refused_for_prediction(two_epochs, tiny_demo, tmp_path: Path) -> None:
    import paddle

    state = paddle.load(str(two_epochs[0] / "last.pdparams"))
    paddle.save({k: v for k, v in state.items() if not k.startswith("classifier.")}, str(tmp_path / "backbone.pdparams"))
    shutil.copy(two_epochs[0] / "config.json", tmp_path / "config.json")
    shutil.copy(two_epochs[0] / "classes.txt", tmp_path / "classes.txt")
    result = run_script("predict.py", "--load_from", str(tmp_path / "backbone.pdparams"), "--img_dir", str(tiny_demo["images"]))
    assert result.returncode == 2 and "classifier.multi_head.0.head.weight" in result.stderr


# --------------------------------------------------------------------------- bad inputs refused before any work


def one_error_line(result, *needles: str) -> str:
    """Assert a clean refusal: exit 2, exactly one `error: ...` line on stderr, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-2000:]
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def test_predict_output_folder_is_refused_before_predicting(two_epochs, tiny_demo, tmp_path: Path) -> None:
    out = tmp_path / "preds"
    out.mkdir()
    result = run_script("predict.py", "--load_from", str(two_epochs[0] / "last.pdparams"), "--img_dir", str(tiny_demo["images"]),
                        "--output", str(out))
    one_error_line(result, "--output", str(out), "is a folder")
    assert "prediction:" not in result.stdout and list(out.iterdir()) == []


def test_infer_output_folder_is_refused_before_loading_the_model(tiny_demo, tmp_path: Path) -> None:
    export = tmp_path / "export"  # unloadable files: reaching them would fail with another message
    export.mkdir()
    for name in ("inference.json", "inference.pdiparams", "inference.yml"):
        (export / name).write_text("not a model\n")
    out = tmp_path / "preds"
    out.mkdir()
    result = run_script("infer.py", "--model_dir", str(export), "--input_file", str(tiny_demo["images"]), "--output", str(out))
    one_error_line(result, "--output", str(out), "is a folder")
    assert result.stdout == ""


def test_output_in_an_unwritable_folder_is_refused() -> None:
    from utils.errors import UserError
    from deploy.prediction import check_output_path

    if not Path("/proc").is_dir():
        pytest.skip("needs /proc (a folder nobody can create files in)")
    with pytest.raises(UserError, match=r"--output /proc/preds.json: cannot write in the folder /proc"):
        check_output_path("/proc/preds.json")
    with pytest.raises(UserError, match="is not a regular file"):
        check_output_path("/dev/null")  # would be replaced by the atomic rename


@pytest.mark.parametrize("script,flag", [("val.py", "--load_from"), ("predict.py", "--load_from"), ("export_model.py", "--model_path")])
def test_weights_folder_lists_its_checkpoints(script: str, flag: str, tiny_demo, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for name in ("best.pdparams", "last.pdparams", "last.pdopt", "metrics.jsonl"):
        (run / name).write_bytes(b"")
    extra = {"val.py": ["--test_json", str(tiny_demo["test"])], "predict.py": ["--img_dir", str(tiny_demo["images"])],
             "export_model.py": ["--save_dir", str(tmp_path / "export")]}[script]
    result = run_script(script, flag, str(run), *extra)
    line = one_error_line(result, flag, "is a folder", f"{run / 'best.pdparams'}, {run / 'last.pdparams'}")
    assert "last.pdopt" not in line and "metrics.jsonl" not in line
    assert not (tmp_path / "export").exists()


@pytest.mark.parametrize("script", ["val.py", "predict.py"])
def test_corrupt_config_json_is_named(script: str, tiny_demo, tmp_path: Path) -> None:
    (tmp_path / "last.pdparams").write_bytes(b"")  # never read: the config is checked first
    (tmp_path / "config.json").write_text('{"model": "resnet18", "num_heads": 1,')  # cut short
    extra = ["--test_json", str(tiny_demo["test"])] if script == "val.py" else ["--img_dir", str(tiny_demo["images"])]
    result = run_script(script, "--load_from", str(tmp_path / "last.pdparams"), *extra)
    one_error_line(result, str(tmp_path / "config.json"), "not valid JSON", "delete it", "--model")


def test_read_run_config(tmp_path: Path) -> None:
    from cli.args import read_run_config
    from utils.errors import UserError

    weights = str(tmp_path / "best.pdparams")
    assert read_run_config(weights) == {} and read_run_config(None) == {}  # no config.json: fine
    (tmp_path / "config.json").write_text(json.dumps({"model": "resnet18", "img_size": 64, "lam": 0.5}))
    assert read_run_config(weights)["img_size"] == 64
    for text, needle in [("[1, 2]", "JSON list"), ('{"num_heads": "4"}', '"num_heads" must be'), ("", "not valid JSON")]:
        (tmp_path / "config.json").write_text(text)
        with pytest.raises(UserError, match=needle) as exc:
            read_run_config(weights)
        assert str(tmp_path / "config.json") in str(exc.value)


@pytest.mark.parametrize("flag", ["--json_out", "--save_scores"])
def test_val_output_folder_is_refused_before_evaluating(flag: str, two_epochs, tiny_demo, tmp_path: Path) -> None:
    result = run_script("val.py", "--load_from", str(two_epochs[0] / "last.pdparams"), "--test_json", str(tiny_demo["test"]),
                        flag, str(tmp_path))
    one_error_line(result, flag, str(tmp_path), "is a folder")
    assert "mAP" not in result.stdout
