"""snapcat/commands/__init__.py: configs built from argparse by their dataclass fields, and the
commands' help showing the defaults read from those dataclasses."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from snapcat.cli import build_parser
from snapcat.commands import config_from_args


@dataclasses.dataclass(frozen=True)
class Example:
    name: str
    size: int = 3
    metrics_path: str | None = None
    progress: bool = True
    internal: int = 7


def test_fields_come_from_args_by_name_rename_value_or_default():
    args = argparse.Namespace(name="x", size=5, metrics="m.json", no_progress=True, handler=None)
    config = config_from_args(
        Example,
        args,
        renames={"metrics_path": "metrics"},
        defaults=("internal",),
        progress=not args.no_progress,
    )
    assert config == Example("x", 5, "m.json", False, 7)


def test_a_field_without_a_flag_fails_loudly():
    args = argparse.Namespace(name="x", size=5, metrics_path=None, progress=True)
    with pytest.raises(TypeError, match="no argument for field.*internal"):
        config_from_args(Example, args)
    with pytest.raises(TypeError, match="has no field.*typo"):
        config_from_args(Example, args, defaults=("internal", "typo"))


def parse(argv: list[str]):
    return build_parser().parse_args(argv)


def test_the_commands_build_their_configs_from_every_flag():
    from snapcat.commands.evaluate import gate_from_args
    from snapcat.dataset.prepare import PrepareConfig
    from snapcat.evaluate.gate import GateConfig
    from snapcat.train.trainer import TrainConfig

    args = parse(["prepare", "--input", "in", "--output", "out", "--seed", "9", "--no-progress",
                  "--ignore-unknown", "--max-pixels", "1000"])  # fmt: skip
    config = config_from_args(PrepareConfig, args, progress=not args.no_progress)
    assert config == PrepareConfig(input="in", output="out", seed=9, progress=False,
                                   ignore_unknown=True, max_pixels=1000)  # fmt: skip
    args = parse(["train", "--data", "d", "--output", "o", "--epochs", "3", "--no-augment"])
    config = config_from_args(
        TrainConfig, args, defaults=("shuffle_buffer", "min_selection_photos")
    )
    assert config == TrainConfig(data="d", output="o", epochs=3, augment=False)
    args = parse(["evaluate", "--data", "d", "--model", "m", "--output", "o",
                  "--max-top1-drop", "0.5"])  # fmt: skip
    assert gate_from_args(args) == dataclasses.replace(GateConfig(), max_top1_drop=0.5)


def test_help_shows_the_dataclass_defaults_and_no_doubled_percent(capsys):
    from snapcat.dataset.prepare import PrepareConfig

    for command in ("prepare", "train", "evaluate"):
        with pytest.raises(SystemExit):
            parse([command, "--help"])
        text = capsys.readouterr().out
        assert "%%" not in text, command
        if command == "prepare":
            assert "%2F" in text
            assert f"(default: {PrepareConfig(input='', output='').image_size})" in text
        assert "(default: None)" not in text and "(default: False)" not in text
