"""TIPC: the parsing helpers of test_tipc/common_func.sh, the configs, and the chain itself.

The lite_train_lite_infer chain of CSRA_ResNet101 runs here for real (demo data, 64 px,
1 epoch, then eval, export and the 8-run CPU inference grid), so `make test` fails when the
chain does; to keep the suite short its training and whole_infer export lines build a
ResNet-18 (every other line is the shipped config's, whose lines
test_every_config_is_valid_and_every_attention_block_has_one checks). Its data and outputs go to temporary folders (TIPC_DATA_ROOT, TIPC_OUTPUT), so
the test leaves the checkout alone and can run beside another run of the suite.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

TIPC = REPO_ROOT / "test_tipc"
CONFIGS = TIPC / "configs"
R101 = CONFIGS / "CSRA_ResNet101" / "train_infer_python.txt"
SUCCESS = re.compile(r"^Run successfully with command - (\S+) - (.+)!$")
INFER_GRID = 8  # oneDNN on/off x threads 1/2 x batch 1/2
TRAIN_LINE, EXPORT_LINE = 16, 27  # norm_train, infer_export (1-based)


def smaller_backbone(config: Path) -> dict[int, str]:
    """Edits for ``config_copy``: the training and whole_infer export lines with resnet18 for resnet101."""
    lines = config.read_text().splitlines()
    assert "--model resnet101" in lines[TRAIN_LINE - 1] and "--model resnet101" in lines[EXPORT_LINE - 1]
    return {n: lines[n - 1].replace("--model resnet101", "--model resnet18") for n in (TRAIN_LINE, EXPORT_LINE)}


def bash(script: str, **env: str) -> subprocess.CompletedProcess:
    """Run a bash snippet from the repository root with common_func.sh sourced."""
    return subprocess.run(
        ["bash", "-c", f"source test_tipc/common_func.sh\n{script}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, env={**os.environ, **env},
    )


def tipc(*args: str, timeout: float = 900, **env: str) -> subprocess.CompletedProcess:
    """Run test_tipc/<args[0]> with bash; the venv's Python and 2 threads."""
    full_env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(os.cpu_count() or 2)), **env}
    return subprocess.run(
        ["bash", str(TIPC / args[0]), *args[1:]], cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=timeout, env=full_env,
    )


def config_copy(tmp_path: Path, name: str, edits: dict[int, str] | None = None, src: Path = R101) -> Path:
    """A copy of a config with some lines replaced (1-based line number -> new line)."""
    lines = src.read_text().splitlines()
    for number, line in (edits or {}).items():
        lines[number - 1] = line
    out = tmp_path / name
    out.write_text("\n".join(lines) + "\n")
    return out


# ------------------------------------------------------------------ parsing helpers

@pytest.mark.parametrize("mode, expected", [
    ("lite_train_lite_infer", "1"),
    ("whole_train_whole_infer", "30"),
    ("whole_infer", "null"),  # a mode the line does not list: not used
])
def test_parser_params_mode_dependent(mode, expected):
    r = bash(f'func_parser_params "--total_epoch:lite_train_lite_infer=1|whole_train_whole_infer=30" {mode}')
    assert r.returncode == 0, r.stderr
    assert r.stdout == expected + "\n"


def test_parser_params_plain_values_and_keys():
    r = bash(
        'func_parser_params "--batch_size:1|2" whole_infer\n'
        'func_parser_params "--opt:a=b|c" lite_train_lite_infer\n'   # '=' but not modes: unchanged
        'func_parser_key "--url:http://host:8080/x"\n'
        'func_parser_value "--url:http://host:8080/x"\n'
        'func_parser_value "--model_dir:"\n'
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n") == ["1|2", "a=b|c", "--url", "http://host:8080/x", "", ""]


def test_set_params_null_and_empty():
    r = bash(
        'echo "[$(func_set_params --pretrained null)]"\n'
        'echo "[$(func_set_params --pretrained "")]"\n'
        'echo "[$(func_set_params null 3)]"\n'
        'echo "[$(func_set_params --total_epoch 3)]"\n'
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["[ ]", "[ ]", "[ ]", "[--total_epoch=3]"]


def test_data_path_prefix_override():
    r = bash('func_data_path ./test_tipc/data/lite/a.json; func_data_path /abs/b.json', TIPC_DATA_ROOT="/tmp/x/")
    assert r.stdout.splitlines() == ["/tmp/x/lite/a.json", "/abs/b.json"]
    r = bash('func_data_path ./test_tipc/data/lite/a.json', TIPC_DATA_ROOT="")
    assert r.stdout.splitlines() == ["./test_tipc/data/lite/a.json"]


def test_status_check_lines_and_failure_count(tmp_path):
    log = tmp_path / "results_python.log"
    r = bash(f'status_check 0 "python a.py" {log} M\nstatus_check 3 "python b.py" {log} M\necho "failures=$TIPC_FAILURES"')
    assert r.returncode == 0, r.stderr
    assert log.read_text().splitlines() == [
        "Run successfully with command - M - python a.py!",
        "Run failed with command - M - python b.py!",
    ]
    assert "failures=1" in r.stdout


def test_blank_line_rejected(tmp_path):
    lines = R101.read_text().splitlines()
    bad = tmp_path / "blank.txt"
    bad.write_text("\n".join(lines[:11] + [""] + lines[11:]) + "\n")
    r = bash(f"func_read_config {bad}")
    assert r.returncode == 1
    assert f"{bad} line 12 is blank" in r.stderr and "read by line number" in r.stderr
    # the chain refuses it before running anything
    r = tipc("test_train_inference_python.sh", str(bad), "lite_train_lite_infer", TIPC_OUTPUT=str(tmp_path / "out"))
    assert r.returncode == 2
    assert f"{bad} line 12 is blank" in r.stderr
    assert not (tmp_path / "out").exists()


def test_shifted_line_rejected(tmp_path):
    lines = R101.read_text().splitlines()
    bad = tmp_path / "shifted.txt"
    bad.write_text("\n".join(lines[:11] + lines[12:] + ["--extra:1"]) + "\n")  # line 12 removed
    r = bash(f"func_read_config {bad}")
    assert r.returncode == 1
    assert f"{bad} line 15 should hold 'trainer:...'" in r.stderr


def test_unknown_mode_and_missing_data(tmp_path):
    r = tipc("test_train_inference_python.sh", str(R101), "lite", TIPC_OUTPUT=str(tmp_path))
    assert r.returncode == 2 and "unknown MODE 'lite'" in r.stderr
    cfg = config_copy(tmp_path, "c.txt", {12: f"--train_json:{tmp_path}/nowhere/trainval_voc07.json"})
    r = tipc("test_train_inference_python.sh", str(cfg), "lite_train_lite_infer", TIPC_OUTPUT=str(tmp_path))
    assert r.returncode == 2
    assert "training split" in r.stderr and "prepare.sh" in r.stderr


# ------------------------------------------------------------------ configs and prepare.sh

def test_every_config_is_valid_and_every_attention_block_has_one():
    from models.attention import ATTENTIONS

    seen = set()
    for cfg in sorted(CONFIGS.glob("*/train_infer_python.txt")):
        r = bash(f'func_read_config {cfg} && func_parser_value "$(func_line 2)" && func_parser_value "$(func_line 16)" '
                 f'&& func_parser_value "$(func_line 27)"')
        assert r.returncode == 0, r.stderr
        name, train, export = r.stdout.splitlines()
        assert name == cfg.parent.name
        att = re.search(r"--attention (\S+)", train)
        att_export = re.search(r"--attention (\S+)", export)
        assert (att and att.group(1)) == (att_export and att_export.group(1)), cfg
        if att:
            assert ATTENTIONS.canonical(att.group(1)) == att.group(1)
            seen.add(att.group(1))
    assert (CONFIGS / "CSRA_ResNet101" / "train_infer_python.txt").is_file()
    assert seen == set(ATTENTIONS.names())


def test_prepare_whole_train_without_voc_explains_download(tmp_path):
    r = tipc("prepare.sh", str(R101), "whole_train_whole_infer", VOC_ROOT="")
    assert r.returncode == 1
    for needle in ("VOC_ROOT is not set", "http://host.robots.ox.ac.uk/pascal/VOC/voc2007/VOCtrainval_06-Nov-2007.tar",
                   "http://host.robots.ox.ac.uk/pascal/VOC/voc2007/VOCtest_06-Nov-2007.tar", "VOC_ROOT="):
        assert needle in r.stderr


def test_prepare_whole_infer_without_weights_explains(tmp_path):
    r = tipc("prepare.sh", str(R101), "whole_infer", TIPC_WEIGHTS=str(tmp_path / "none.pdparams"))
    assert r.returncode == 1
    assert "weights file is missing" in r.stderr and "TIPC_WEIGHTS" in r.stderr


def make_voc2007(devkit: Path, n_trainval: int = 28, n_test: int = 5) -> Path:
    """A small VOC 2007 folder in the dataset's layout: VOC class names (two objects per image,
    the second difficult in every third image), decodable JPEGs, train/val/trainval/test lists."""
    from PIL import Image

    from datasets.classes import VOC_CLASSES

    voc = devkit / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True)
    ids = [f"{i:06d}" for i in range(1, n_trainval + n_test + 1)]
    for n, image_id in enumerate(ids):
        objects = "".join(
            f"<object><name>{VOC_CLASSES[(n + k) % 20]}</name><difficult>{int(k == 1 and n % 3 == 0)}</difficult>"
            "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>20</xmax><ymax>15</ymax></bndbox></object>"
            for k in range(2))
        (voc / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><filename>{image_id}.jpg</filename>{objects}</annotation>\n")
        Image.new("RGB", (48, 32), (7 * n % 256, 90, 200)).save(voc / "JPEGImages" / f"{image_id}.jpg")
    half = n_trainval // 2
    lists = {"train": ids[:half], "val": ids[half:n_trainval], "trainval": ids[:n_trainval],
             "test": ids[n_trainval:]}
    for name, members in lists.items():
        (voc / "ImageSets" / "Main" / f"{name}.txt").write_text("".join(f"{i}\n" for i in members))
    return devkit


def test_prepare_voc_small(tmp_path):
    """TIPC_DATA=voc_small with VOC_ROOT: VOC JSONs with absolute paths into VOC_ROOT, nothing
    copied, at most 24 training and 8 test images (here 28 and 5 exist)."""
    import json

    devkit = make_voc2007(tmp_path / "VOCdevkit")
    data = tmp_path / "data"
    cfg = config_copy(tmp_path, "c.txt", {
        12: f"--train_json:lite_train_lite_infer={data}/trainval_voc07.json",
        37: f"--input_file:lite_train_lite_infer={data}/infer_images",
    })
    r = tipc("prepare.sh", str(cfg), "lite_train_lite_infer", TIPC_DATA="voc_small", VOC_ROOT=str(devkit))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    train = json.loads((data / "trainval_voc07.json").read_text())
    test = json.loads((data / "test_voc07.json").read_text())
    assert len(train) == 24 and len(test) == 5 and len(train[0]["target"]) == 20
    assert all(Path(e["img_path"]).is_absolute() and Path(e["img_path"]).is_file() for e in train + test)
    assert all(Path(e["img_path"]).resolve().is_relative_to(devkit.resolve()) for e in train + test)
    assert any(0 in e["target"] for e in test)  # a class with only difficult objects
    images = sorted((data / "infer_images").glob("*.jpg"))
    assert len(images) == 4 and all(p.is_symlink() for p in images)
    assert [p.name for p in images] == ["000029.jpg", "000030.jpg", "000031.jpg", "000032.jpg"]
    assert (data / "classes.txt").read_text().split()[0] == "aeroplane"
    r = tipc("prepare.sh", str(cfg), "lite_train_lite_infer", TIPC_DATA="nope")
    assert r.returncode == 1 and "TIPC_DATA must be demo or voc_small" in r.stderr
    r = tipc("prepare.sh", str(cfg), "lite_train_lite_infer", TIPC_DATA="voc_small",
             VOC_ROOT=str(tmp_path / "nowhere"))
    assert r.returncode == 1 and "TIPC_DATA=voc_small needs real VOC 2007 images" in r.stderr


# ------------------------------------------------------------------ the chain

@pytest.fixture(scope="module")
def lite_chain(tmp_path_factory):
    """prepare.sh + the lite_train_lite_infer chain of CSRA_ResNet101 (its backbone made a ResNet-18):
    (output dir, result, data root)."""
    data = tmp_path_factory.mktemp("tipc_data")
    r = tipc("prepare.sh", str(R101), "lite_train_lite_infer", TIPC_DATA_ROOT=str(data))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = tmp_path_factory.mktemp("tipc_out")
    cfg = config_copy(tmp_path_factory.mktemp("tipc_cfg"), "r18.txt", smaller_backbone(R101))
    start = time.monotonic()
    result = tipc("test_train_inference_python.sh", str(cfg), "lite_train_lite_infer", TIPC_OUTPUT=str(out),
                  TIPC_DATA_ROOT=str(data))
    print(f"lite_train_lite_infer chain: {time.monotonic() - start:.0f} s")
    return out / "CSRA_ResNet101" / "lite_train_lite_infer", result, data


def test_lite_chain_succeeds(lite_chain):
    log_path, r, data = lite_chain
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    lines = (log_path / "results_python.log").read_text().splitlines()
    assert len(lines) == 3 + INFER_GRID
    parsed = [SUCCESS.match(line) for line in lines]
    assert all(parsed), lines
    assert {m.group(1) for m in parsed} == {"CSRA_ResNet101"}
    scripts = [m.group(2).split()[1] for m in parsed]
    assert scripts == ["train.py", "val.py", "export_model.py"] + ["infer.py"] * INFER_GRID
    # the lite recipe reached train.py; null --pretrained left out
    assert "--img_size=64" in lines[0] and "--total_epoch=1" in lines[0] and "--batch_size=2" in lines[0]
    assert "--pretrained" not in lines[0]
    run = log_path / "norm_train_cpu"
    for step in ("train.log", "eval.log", "export.log"):
        assert (run / step).is_file()
    assert "mAP" in (run / "eval.log").read_text()
    images = sorted(p.name for p in (data / "lite_train_lite_infer/infer_images").glob("*.jpg"))
    assert len(images) == 4
    logs = sorted(run.glob("python_infer_cpu_usemkldnn_*_threads_*_batchsize_*.log"))
    assert len(logs) == INFER_GRID
    for log in logs:
        text = log.read_text()
        predicted = sorted(Path(m).name for m in re.findall(r"^(\S+) prediction: ", text, re.M))
        assert predicted == images, log.name
        mkldnn, threads, batch = re.search(r"usemkldnn_(\w+)_threads_(\d+)_batchsize_(\d+)", log.name).groups()
        for needle in ("Env info", "Paddle info", "Conf info", "Model info", "Data info", "Perf info",
                       f"enable_mkldnn: {mkldnn}", f"cpu_math_library_num_threads: {threads}",
                       f"batch_size: {batch}", "input_shape: 3,64,64", "inference_time(ms):"):
            assert needle in text, (log.name, needle)
    # CPU-only Paddle: one clear line for the GPU grid, one for the GPU training entry
    assert "skipped: GPU inference grid" in r.stdout
    assert "skipped: training on GPU 0" in r.stdout
    assert "all 11 steps succeeded" in r.stdout


def test_failing_step_makes_the_chain_fail(lite_chain, tmp_path):
    data = lite_chain[2]
    cfg = config_copy(tmp_path, "bogus.txt", {2: "model_name:TIPC_bogus", 16: "norm_train:no_such_train.py --model resnet101"})
    r = tipc("test_train_inference_python.sh", str(cfg), "lite_train_lite_infer", TIPC_OUTPUT=str(tmp_path / "out"),
             TIPC_DATA_ROOT=str(data))
    assert r.returncode == 1, r.stdout[-3000:]
    lines = (tmp_path / "out/TIPC_bogus/lite_train_lite_infer/results_python.log").read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Run failed with command - TIPC_bogus - ")
    assert "no_such_train.py" in lines[0] and lines[0].endswith("!")
    assert "1 of 1 steps FAILED" in r.stdout
    assert "skipped: eval, export and inference of norm_train_cpu: training failed" in r.stdout


def test_whole_infer_and_unchecked_inference_output(lite_chain, tmp_path):
    """whole_infer exports a given weights file (TIPC_WEIGHTS) at the size of the config's export
    line (448 in the config, 96 here to keep the test cheap) and runs inference; an inference step
    that exits 0 but prints no predictions fails the chain."""
    log_path, r, _ = lite_chain
    assert r.returncode == 0
    weights = log_path / "norm_train_cpu" / "best.pdparams"
    export_line = smaller_backbone(R101)[EXPORT_LINE]  # the lite chain trained a ResNet-18
    assert export_line.startswith("infer_export:") and "--img_size 448" in export_line
    one_run = {2: "model_name:TIPC_whole_infer", 30: "--use_gpu:False", 31: "--enable_mkldnn:True",
               32: "--cpu_threads:2", 33: "--batch_size:2", 27: export_line.replace("--img_size 448", "--img_size 96")}
    cfg = config_copy(tmp_path, "wi.txt", one_run)
    env = {"TIPC_WEIGHTS": str(weights), "TIPC_OUTPUT": str(tmp_path / "out"), "TIPC_DATA_ROOT": str(tmp_path / "data")}
    r = tipc("prepare.sh", str(cfg), "whole_infer", **env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    r = tipc("test_train_inference_python.sh", str(cfg), "whole_infer", **env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    out = tmp_path / "out/TIPC_whole_infer/whole_infer"
    lines = (out / "results_python.log").read_text().splitlines()
    assert [SUCCESS.match(line).group(2).split()[1] for line in lines] == ["export_model.py", "infer.py"]
    log = (out / "python_infer_cpu_usemkldnn_True_threads_2_batchsize_2.log").read_text()
    assert "input_shape: 3,96,96" in log and " prediction: " in log

    silent = config_copy(tmp_path, "silent.txt", {**one_run, 2: "model_name:TIPC_silent", 29: "inference:-c pass"})
    r = tipc("test_train_inference_python.sh", str(silent), "whole_infer", **env)
    assert r.returncode == 1
    lines = (tmp_path / "out/TIPC_silent/whole_infer/results_python.log").read_text().splitlines()
    assert lines[0].startswith("Run successfully") and lines[1].startswith("Run failed")
    assert "TIPC check failed: 0 prediction lines" in r.stdout
