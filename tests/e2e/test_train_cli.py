"""train.py end to end on tiny demo data: files, resume equality and settings, SIGINT/SIGTERM, NaN stop, launch."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest

from tests.conftest import REPO_ROOT, run_script, train_flags


def batch_line(epoch: int, done: int | str, total: int = 24, samples: float = 8.0, lr: str = r"\d\.\d{5}") -> re.Pattern[str]:
    """The per-batch line (``--print_freq`` and heartbeat) of ``epoch`` at ``done`` images, with every field."""
    return re.compile(
        rf"^Epoch {epoch}\[{done}/{total}\]: loss:\d+\.\d{{5}}, lr:{lr}, time:\d+\.\d{{4}}, "
        r"avg_reader_cost: \d+\.\d{5} sec, avg_batch_cost: \d+\.\d{5} sec, "
        rf"avg_samples: {samples:.1f}, avg_ips: \d+\.\d{{2}} images/sec, eta: \d+:\d\d:\d\d$", re.M)


def weights(path: Path) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in paddle.load(str(path), return_numpy=True).items()}


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        np.testing.assert_array_equal(wa[key], wb[key], err_msg=key)


def test_training_writes_checkpoints_metrics_and_logs(two_epochs) -> None:
    save, result = two_epochs
    for name in ("last.pdparams", "last.pdopt", "last.pdstates", "last.manifest.json", "best.pdparams", "best.json",
                 "metrics.jsonl", "classes.txt", "config.json"):
        assert (save / name).is_file(), name
    # no temporaries, no leftover previous set; the only hidden file is the (released) run lock
    assert not list(save.glob("*.tmp")) and not list(save.glob("*-prev.*"))
    assert [p.name for p in save.glob(".*")] == [".lock"]
    assert (save / ".lock").read_text() == ""  # emptied on release
    rows = [json.loads(line) for line in (save / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all({"loss", "lr", "map", "cf1", "of1"} <= r.keys() for r in rows)
    best = json.loads((save / "best.json").read_text())
    assert best["map"] == max(r["map"] for r in rows)
    assert batch_line(1, 8, lr=r"0\.00000").search(result.stdout)
    assert len(batch_line(2, r"\d+").findall(result.stdout)) == 3  # --print_freq 1: every batch
    assert re.search(r"^mAP: \d\.\d{6}$", result.stdout, re.M)
    assert "Epoch 2 training ends" in result.stderr
    # train.log in the run folder: the console's lines, stdout ones as printed
    log = (save / "train.log").read_text()
    assert batch_line(1, 8, lr=r"0\.00000").search(log) and batch_line(2, 24).search(log)
    assert re.search(r"^\[[-\d: ]+\] INFO csra\.train: Epoch 2 training ends: loss \d", log, re.M)
    assert set(result.stdout.splitlines()) <= set(log.splitlines())
    config = json.loads((save / "config.json").read_text())
    assert config["model"] == "resnet18" and config["num_cls"] == 8 and config["img_size"] == 64


def test_resume_after_one_epoch_equals_two_epochs(two_epochs, tiny_demo, tmp_path: Path) -> None:
    save = tmp_path / "resumed"
    assert run_script(*train_flags(tiny_demo, save, 1)).returncode == 0
    first_log = (save / "train.log").read_text()
    assert "Epoch 1 training ends" in first_log and "Epoch 2" not in first_log
    result = run_script(*train_flags(tiny_demo, save, 2), "--resume", str(save))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resumed from" in result.stderr
    log = (save / "train.log").read_text()
    assert log.startswith(first_log) and log.count("Epoch 1 training ends") == 1  # appended to
    resumed = log[len(first_log):]
    assert "resumed from" in resumed and batch_line(2, 16).search(resumed) and "Epoch 2 training ends" in resumed
    assert_same_weights(save / "last.pdparams", two_epochs[0] / "last.pdparams")
    assert len((save / "metrics.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_a_checkpoint_that_resumes_exactly(two_epochs, tiny_demo, tmp_path: Path, sig, status) -> None:
    """Ctrl-C (SIGINT) and a scheduler's stop (SIGTERM) save interrupted.* after the step; exit 128 + signal."""
    save = tmp_path / "sig"
    proc = subprocess.Popen([sys.executable, *train_flags(tiny_demo, save, 2)], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if batch_line(1, 8).match(line):
            proc.send_signal(sig)
    assert proc.wait(timeout=300) == status, "".join(lines)[-2000:]
    assert (save / "interrupted.manifest.json").is_file(), "".join(lines)[-2000:]
    assert f"interrupted by {sig.name}" in "".join(lines)
    assert "Traceback" not in "".join(lines)
    result = run_script(*train_flags(tiny_demo, save, 2), "--resume", str(save))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resumed from" in result.stderr and "interrupted" in result.stderr
    assert not list(save.glob("interrupted*"))
    assert_same_weights(save / "last.pdparams", two_epochs[0] / "last.pdparams")


# Run train.py with a patch applied first (argv: train.py's flags).
_WRAPPER = """
import runpy, sys
sys.argv = ["train.py", *sys.argv[1:]]
{patch}
runpy.run_path("train.py", run_name="__main__")
"""

# The loss of the second step of this process becomes NaN (a divergence in the resumed epoch).
_NAN_AT_SECOND_STEP = """
import paddle.nn.functional as F
real_bce, calls = F.binary_cross_entropy_with_logits, []
def bce(*args, **kwargs):
    calls.append(1)
    loss = real_bce(*args, **kwargs)
    return loss * float("nan") if len(calls) == 2 else loss
F.binary_cross_entropy_with_logits = bce
"""


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_demo, tmp_path: Path) -> None:
    save = tmp_path / "nan"
    assert run_script(*train_flags(tiny_demo, save, 1)).returncode == 0
    result = run_script("-c", _WRAPPER.format(patch=_NAN_AT_SECOND_STEP), "--resume", str(save), "--total_epoch", "6")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    match = re.search(r"error: (loss became (nan|inf)|weights became NaN/Inf) (at|during) epoch (\d+)", result.stderr)
    assert match, result.stderr[-2000:]
    bad_epoch = int(match.group(4))
    assert f"the last good checkpoint stays in {save}" in result.stderr
    states = paddle.load(str(save / "last.pdstates"), return_numpy=True)
    assert states["epoch"] == bad_epoch - 1  # the checkpoint of the last finished epoch stays
    assert not (save / "interrupted.pdstates").exists()
    assert all(np.isfinite(v).all() for v in weights(save / "last.pdparams").values())
    rows = (save / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == bad_epoch - 1


def test_fresh_run_that_diverges_says_no_checkpoint_was_written(tiny_demo, tmp_path: Path) -> None:
    save = tmp_path / "nan0"
    result = run_script(*train_flags(tiny_demo, save, 1, "--lr", "1e12"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "no checkpoint was written yet" in result.stderr, result.stderr[-2000:]
    assert "last good checkpoint" not in result.stderr
    assert not list(save.glob("last*"))


# Heartbeat lines after every batch instead of every 30 s.
_FAST_HEARTBEAT = """
import engine.progress
engine.progress.HEARTBEAT_SECONDS = 0.0
"""


def test_heartbeat_lines_when_output_is_redirected_into_the_runs_train_log(tiny_demo, tmp_path: Path) -> None:
    """Off a terminal a line comes at least every HEARTBEAT_SECONDS (0 here: after every batch)
    even with --print_freq 0; with stdout and stderr appended to the run's own train.log (as the
    TIPC chain does) every line is written once."""
    save = tmp_path / "beat"
    save.mkdir()
    log = save / "train.log"
    log.write_text("+ the command\n")
    flags = train_flags(tiny_demo, save, 1, "--print_freq", "0")[1:]
    with open(log, "a") as out:
        proc = subprocess.run([sys.executable, "-c", _WRAPPER.format(patch=_FAST_HEARTBEAT), *flags], cwd=REPO_ROOT,
                              stdout=out, stderr=subprocess.STDOUT, timeout=600)
    text = log.read_text()
    assert proc.returncode == 0, text[-2000:]
    assert text.startswith("+ the command\n")
    assert [len(batch_line(1, done).findall(text)) for done in (8, 16, 24)] == [1, 1, 1]
    assert text.count("Epoch 1 training ends") == 1 and text.count("Test on Epoch 1") == 1


def test_two_process_launch_matches_one_process(tiny_demo, tmp_path: Path) -> None:
    # Both runs see the same global batches and average the same gradients. BatchNorm batch
    # statistics would be per process (4 images instead of 8), so BN is frozen here to make
    # the two runs comparable to float rounding.
    flags = ("--freeze_bn", "--eval_interval", "1")
    single = run_script(*train_flags(tiny_demo, tmp_path / "one", 1, *flags))
    assert single.returncode == 0, single.stderr[-2000:]
    save = tmp_path / "dp"
    result = run_script("-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", str(tmp_path / "log"),
                        *train_flags(tiny_demo, save, 1, *flags))
    assert result.returncode == 0, (tmp_path / "log" / "workerlog.1").read_text()[-3000:]
    rank0 = (tmp_path / "log" / "workerlog.0").read_text()
    rank1 = (tmp_path / "log" / "workerlog.1").read_text()
    assert "Test on Epoch 1" in rank0 and "Test on Epoch" not in rank1  # only rank 0 evaluates and logs
    assert batch_line(1, 8, samples=8.0).search(rank0) and "Epoch 1[" not in rank1  # avg_samples: both processes' images
    dp_row = json.loads((save / "metrics.jsonl").read_text().splitlines()[0])
    one_row = json.loads((tmp_path / "one" / "metrics.jsonl").read_text().splitlines()[0])
    assert dp_row["loss"] == pytest.approx(one_row["loss"], rel=1e-3)
    assert dp_row["map"] == pytest.approx(one_row["map"], abs=1e-3)
    one_w, dp_w = weights(tmp_path / "one" / "last.pdparams"), weights(save / "last.pdparams")
    for key in one_w:
        scale = np.abs(one_w[key]).max() + 1e-8
        assert np.abs(dp_w[key] - one_w[key]).max() < 1e-3 * scale, key


def test_missing_json_is_a_clear_error(tiny_demo, tmp_path: Path) -> None:
    flags = train_flags(tiny_demo, tmp_path / "x", 1)
    flags[flags.index("--train_json") + 1] = str(tmp_path / "nope.json")
    result = run_script(*flags)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "nope.json not found" in result.stderr


def test_test_split_as_training_data_is_refused(tiny_demo, tmp_path: Path) -> None:
    flags = train_flags(tiny_demo, tmp_path / "x", 1)
    flags[flags.index("--train_json") + 1] = str(tiny_demo["test"])
    result = run_script(*flags)
    assert result.returncode != 0 and "must be 0/1" in result.stderr and "Traceback" not in result.stderr


def test_attention_run_trains_and_predicts_from_its_config(tiny_demo, tmp_path: Path) -> None:
    """--attention reaches the model through every script; GE is sized by --img_size."""
    save = tmp_path / "ge"
    result = run_script(*train_flags(tiny_demo, save, 1, "--attention", "ge", "--attention_stages", "3,4"))
    assert result.returncode == 0, result.stderr[-2000:]
    config = json.loads((save / "config.json").read_text())
    assert config["attention"] == "ge" and config["attention_stages"] == [3, 4] and config["img_size"] == 64
    image = sorted(tiny_demo["images"].iterdir())[0]
    predicted = run_script("predict.py", "--load_from", str(save / "last.pdparams"), str(image))
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    assert predicted.stdout.startswith(f"{image} prediction: ")


@pytest.mark.parametrize("extra, step", [((), 4), (("--lr_step", "1"), 1)])
def test_lr_step_flag_sets_the_decay_interval(tiny_demo, tmp_path, extra, step) -> None:
    """--lr_step overrides the dataset's decay interval (demo: 4 epochs)."""
    import train
    from cli.settings import resolve_train
    from engine.trainer import Trainer

    config = resolve_train(train.build_parser().parse_args(train_flags(tiny_demo, tmp_path / "run", 2, *extra)[1:]))
    assert config.lr_step == step
    trainer = Trainer.from_config(config)
    try:
        assert trainer.scheduler.step_epochs == step
        second_epoch = trainer.scheduler.iters_per_epoch
        assert trainer.scheduler.lr_at(second_epoch) == pytest.approx(0.01 * (0.1 if step == 1 else 1.0))
    finally:
        trainer.close()


RECIPE = ("--batch_size", "4", "--lr", "0.02", "--lr_step", "1")  # not train_flags' --batch_size 8 nor the defaults


@pytest.fixture(scope="module")
def recipe_runs(tiny_demo, tmp_path_factory) -> dict:
    """An uninterrupted 2-epoch run with ``RECIPE``, and a 1-epoch run with it resumed by ``--resume DIR --total_epoch 2`` alone."""
    root = tmp_path_factory.mktemp("recipe")
    whole = run_script(*train_flags(tiny_demo, root / "whole", 2, *RECIPE))
    assert whole.returncode == 0, whole.stderr[-2000:]
    first = run_script(*train_flags(tiny_demo, root / "resumed", 1, *RECIPE))
    assert first.returncode == 0, first.stderr[-2000:]
    resumed = run_script("train.py", "--resume", str(root / "resumed"), "--total_epoch", "2")
    return {"whole": root / "whole", "resumed_dir": root / "resumed", "resumed": resumed}


def test_resume_restores_every_setting_of_the_run(recipe_runs) -> None:
    """The user's report: --resume DIR --total_epoch 4 trained at batch 16, the default LR and into output/train."""
    result, save = recipe_runs["resumed"], recipe_runs["resumed_dir"]
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_weights(save / "last.pdparams", recipe_runs["whole"] / "last.pdparams")
    restored = re.search(r"resuming \S+ with the settings of config.json: (.*)$", result.stderr, re.M)
    assert restored, result.stderr[-2000:]
    for item in ("batch_size 4", "lr 0.02", "lr_step 1", "model resnet18", "img_size 64", "warmup_epoch 1.0", "dataset demo"):
        assert item in restored.group(1), restored.group(1)
    assert "changed on resume: total_epoch 1 -> 2" in result.stderr
    assert batch_line(2, 4, samples=4.0).search(result.stdout)  # batches of 4 again, 6 per epoch
    config = json.loads((save / "config.json").read_text())
    assert (config["batch_size"], config["lr"], config["lr_step"], config["total_epoch"]) == (4, 0.02, 1, 2)
    assert Path(config["save_dir"]) == save
    rows = [json.loads(line) for line in (save / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and rows[1]["lr"] == pytest.approx(0.002)  # 0.02 decayed once (lr_step 1)


@pytest.mark.parametrize("flags, needles", [
    (("--batch_size", "16"), ("--batch_size 16 was given but the run has --batch_size 4", "optimizer state")),
    (("--lr", "1e12", "--lr_step", "4"), ("--lr 1000000000000.0 was given but the run has --lr 0.02",
                                           "--lr_step 4 was given but the run has --lr_step 1")),
    (("--model", "resnet34"), ("--model resnet34 was given but the run has --model resnet18", "weights belong to that model")),
    (("--save_dir", "elsewhere"), ("--save_dir elsewhere with --resume", "continues in its own folder")),
    (("--gemm_conv_side", "0"), ("--gemm_conv_side 0 was given but the run has --gemm_conv_side 8", "bit for bit")),
])
def test_resume_refuses_changed_settings(recipe_runs, flags, needles) -> None:
    save = recipe_runs["resumed_dir"]
    before = (save / "last.manifest.json").read_text()
    result = run_script("train.py", "--resume", str(save), "--total_epoch", "3", *flags)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-2000:]
    for needle in needles:
        assert needle in errors[0], errors[0]
    assert (save / "last.manifest.json").read_text() == before  # nothing trained or written


def test_resume_takes_explicit_flags_equal_to_the_run_and_safe_overrides(recipe_runs, tmp_path: Path) -> None:
    """Giving the run's own values again is fine; --print_freq/--eval_interval may change; the run ends at once."""
    save = recipe_runs["resumed_dir"]
    result = run_script("train.py", "--resume", str(save / "last.pdparams"), "--batch_size", "4", "--lr", "0.02",
                        "--model", "ResNet18", "--print_freq", "0", "--eval_interval", "2", "--total_epoch", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "already trained 2 of 2 epochs: nothing to do" in result.stderr
    assert "print_freq 1 -> 0" in result.stderr and "eval_interval 1 -> 2" in result.stderr


def test_training_learns(tmp_path: Path) -> None:
    """A short run on an easy variant of the demo data: the loss falls and the test mAP rises
    clearly above chance (a constant score gives about the positive rate, 1/8 here)."""
    import json

    from datasets.make_demo import Style, generate_demo
    from datasets.prepare.voc import prepare_voc

    easy = Style(num_objects_p=(1.0, 0.0, 0.0, 0.0), small_prob=0.0, home_colour_p=1.0)
    summary = generate_demo(tmp_path / "easy", num_images=560, seed=1, img_size=32, style=easy, test_images=80)
    prepare_voc(str(tmp_path / "easy" / "VOCdevkit"), str(tmp_path / "easy"), classes_file=str(summary["classes_file"]))
    demo = {"train": tmp_path / "easy" / "trainval_voc07.json", "test": tmp_path / "easy" / "test_voc07.json"}
    flags = train_flags(demo, tmp_path / "run", 2, "--lr", "0.02", "--warmup_epoch", "0.5", "--print_freq", "0")
    flags[flags.index("--img_size") + 1] = "32"
    flags[flags.index("--batch_size") + 1] = "16"
    result = run_script(*flags)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["loss"] < 0.8 * rows[0]["loss"], rows
    assert rows[-1]["map"] > 0.35, [(r["loss"], r["map"]) for r in rows]  # 0.34 -> 0.73 at the last check
