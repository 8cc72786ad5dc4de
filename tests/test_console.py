"""`melshard COMMAND`: one console command over both halves; a corpus may be named like a subcommand."""

from __future__ import annotations

import json

from tests.audio_fixtures import make_corpus, run_module, write_tiny_config


def test_the_console_command_lists_every_subcommand():
    result = run_module("melshard", "--help")
    assert result.returncode == 0
    for command in ("preprocess", "inspect", "train", "predict", "evaluate", "demo"):
        assert command in result.stdout
    unknown = run_module("melshard", "prepro")
    assert unknown.returncode == 2 and "invalid choice" in unknown.stderr


def test_a_corpus_folder_named_demo_or_inspect_is_preprocessed(tmp_path):
    config = write_tiny_config(tmp_path / "small.toml")
    # `melshard preprocess NAME` never guesses; `python -m preprocess NAME` takes an existing path.
    for module, args, name in (("melshard", ["preprocess", "demo"], "demo"), ("preprocess", ["inspect"], "inspect")):
        make_corpus(tmp_path / name, per_class=4)
        out = tmp_path / f"{module}-{name}"
        result = run_module(module, *args, "--out", str(out), "--config", str(config), "--jobs", "1", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert json.loads((out / "manifest.json").read_text())["inputs"]["written"] == 12
    result = run_module("melshard", "inspect", str(tmp_path / "melshard-demo"), cwd=tmp_path)
    assert result.returncode == 0 and "every sample read" in " ".join(result.stdout.split())


def _options(text: str) -> str:
    """A help text from its option list on, its whitespace collapsed (usage lines wrap by name length)."""
    return " ".join(text.split("options:", 1)[1].split())


def test_the_aliases_print_the_trees_help_under_their_own_names():
    from melshard.cli import COMMANDS, build_parser, command_parser

    for alias, default in (("python -m trainer", None), ("python -m preprocess", "preprocess")):
        commands = next(a for a in build_parser(alias, default)._actions if hasattr(a, "choices") and a.choices)
        for name in COMMANDS:
            parser = commands.choices[name]
            assert parser.prog == (alias if name == default else f"{alias} {name}")
            same = command_parser(name).format_help().replace("`melshard ", f"`{alias} ")  # the epilog's siblings
            assert _options(parser.format_help()) == _options(same)
    for module, words, usage in (("trainer", ["--help"], "usage: python -m trainer [-h] COMMAND"),
                                 ("trainer", ["train", "--help"], "usage: python -m trainer train "),
                                 ("preprocess", ["--help"], "usage: python -m preprocess [-h]"),
                                 ("preprocess", ["inspect", "--help"], "usage: python -m preprocess inspect ")):
        result = run_module(module, *words)
        assert result.returncode == 0 and result.stdout.startswith(usage), result.stdout[:200]


def test_demo_has_one_meaning_under_every_name():
    for module in ("melshard", "preprocess", "trainer"):
        result = run_module(module, "demo", "--help")
        assert result.returncode == 0, result.stderr
        assert "--quick" in result.stdout and "generate a corpus, preprocess, train, evaluate, predict" in \
            " ".join(result.stdout.split()).lower()
