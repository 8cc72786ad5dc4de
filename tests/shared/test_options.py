"""Command-line flags come from the config fields: every option is declared once, in its config
dataclass, and the flags, their choices, defaults and help follow."""

from __future__ import annotations

import argparse

import pytest

from shared import config
from shared.config import AudioConfig, AugmentConfig, PreprocessConfig, TrainConfig
from shared.options import add_options, help_text, option_fields

TRAIN_FLAGS = ["--model", "--width", "--epochs", "--batch-size", "--lr", "--schedule", "--amp", "--mixup-p",
               "--ema-decay", "--patience", "--early-stop-metric", "--class-weights", "--device", "--seed",
               "--num-workers", "--checkpoint-every", "--channels-last", "--compile"]
PREPROCESS_FLAGS = ["--augment-copies", "--segment", "--balance-classes", "--balance-cap", "--val-fraction", "--seed",
                    "--shard-size", "--max-rejected", "--sr", "--duration", "--n-mels"]


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {flag: action for action in parser._actions for flag in action.option_strings}


def _train_parser() -> argparse.ArgumentParser:
    from melshard.cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices["train"]


def test_every_train_flag_is_a_train_config_field_with_its_choices_and_default():
    parser = _train_parser()
    actions = _actions(parser)
    assert set(TRAIN_FLAGS) <= set(actions)  # no flag was lost
    text = parser.format_help()
    for f in option_fields(TrainConfig):
        action = actions["--" + f.name.replace("_", "-")]
        assert action.dest == f.name and action.default is None  # a flag left out leaves TOML and default alone
        if f.metadata["choices"]:
            assert tuple(action.choices) == f.metadata["choices"]
        assert help_text(f)[:20] in " ".join(text.split())  # listed in --help
    assert tuple(actions["--model"].choices) == config.MODELS
    assert "(default 80)" in help_text(next(f for f in option_fields(TrainConfig) if f.name == "epochs"))


def test_the_model_registry_builds_exactly_the_configs_models():
    from trainer.models import MODELS

    assert tuple(MODELS) == config.MODELS


def test_train_flags_override_the_toml_file(tmp_path):
    from melshard.cli import build_parser
    from melshard.commands import train_config

    toml = tmp_path / "t.toml"
    toml.write_text('epochs = 5\nmodel = "resnet9"\nfreq_masks = 2\n')
    args = build_parser().parse_args(["train", "S", "--out", "R", "--config", str(toml), "--epochs", "7",
                                      "--compile", "--class-weights", "balanced"])
    cfg, explicit = train_config(args)
    assert (cfg.epochs, cfg.model, cfg.freq_masks, cfg.compile, cfg.class_weights) == (7, "resnet9", 2, True,
                                                                                         "balanced")
    assert explicit == {"epochs", "model", "freq_masks", "compile", "class_weights"}


def test_preprocess_flags_come_from_the_three_configs():
    from melshard.cli import command_parser
    from melshard.commands import preprocess_options as resolve

    parser = command_parser("preprocess")
    assert set(PREPROCESS_FLAGS) <= set(_actions(parser))
    args = parser.parse_args(["SRC", "--duration", "2", "--sr", "16000", "--augment-copies", "3", "--segment",
                              "--balance-classes", "--balance-cap", "4", "--val-fraction", "0.1", "--seed", "7"])
    _, cfg = resolve(args)
    assert (cfg.audio.duration_s, cfg.audio.sr, cfg.audio.segment) == (2.0, 16000, True)
    assert (cfg.augment.copies, cfg.augment.balance_classes, cfg.augment.balance_cap) == (3, True, 4)
    assert (cfg.val_fraction, cfg.seed, cfg.shard_size) == (0.1, 7, PreprocessConfig().shard_size)
    assert "(default 5.0)" in " ".join(parser.format_help().split())


@pytest.mark.parametrize("cls", [AudioConfig, AugmentConfig, PreprocessConfig, TrainConfig])
def test_an_option_field_is_a_flag_and_the_others_are_not(cls):
    parser = argparse.ArgumentParser()
    names = add_options(parser, cls)
    assert names == [f.name for f in option_fields(cls)]
    assert "weight_decay" not in names and "n_fft" not in names  # TOML only
