"""The model flags: parsed stages and heads reach build_model, and unset flags come from the run's config.json."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from cli.args import add_model_args, model_fields, read_run_config


def test_cli_attention_stages_reach_build_model(tmp_path: Path) -> None:
    from models import build_model

    parser = argparse.ArgumentParser()
    add_model_args(parser, num_cls_default=5)
    args = parser.parse_args(["--model", "resnet50", "--attention", "at", "--attention_stages", "3,4"])
    fields = model_fields(vars(args))
    assert fields["attention_stages"] == [3, 4]
    model = build_model(fields["model"], args.num_cls, fields["num_heads"], fields["lam"], attention=fields["attention"],
                        attention_stages=fields["attention_stages"], img_size=fields["img_size"])
    (tmp_path / "config.json").write_text(json.dumps({**model.config, "img_size": 64}))
    later = parser.parse_args([])  # e.g. val.py: everything from the run's config.json
    inherited = model_fields(vars(later), read_run_config(str(tmp_path / "best.pdparams")))
    assert inherited["attention"] == "at" and inherited["attention_stages"] == [3, 4] and inherited["img_size"] == 64
    assert later.attention is None  # nothing mutates the parsed flags
    with pytest.raises(SystemExit):
        parser.parse_args(["--attention_stages", "0,5"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--num_heads", "3"])
