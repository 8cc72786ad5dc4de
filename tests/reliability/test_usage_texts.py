"""What the command lines say about themselves and about a wrong input: `melshard SUB --help`
names `melshard SUB`, preprocess's --help names its default --out and `inspect`, every option of
predict and evaluate has help text, predict's missing --input asks for audio (no labels), and a
CSV without the needed columns names the columns it has."""

from __future__ import annotations

import argparse

import pytest

from melshard.cli import COMMANDS
from tests.audio_fixtures import make_corpus, run_module


@pytest.mark.parametrize("sub", sorted(COMMANDS))
def test_melshard_sub_help_names_melshard_sub(sub):
    result = run_module("melshard", sub, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: melshard {sub} "), result.stdout.splitlines()[0]
    assert "python -m" not in result.stdout


def test_preprocess_help_names_the_default_out_and_inspect():
    text = " ".join(run_module("preprocess", "--help").stdout.split())
    assert "(default shards/NAME, NAME being SRC's name without its extension)" in text
    assert "`python -m preprocess inspect DIR` summarises a shard folder" in text
    text = " ".join(run_module("melshard", "preprocess", "--help").stdout.split())
    assert "`melshard inspect DIR`" in text


def test_preprocess_without_out_writes_shards_named_after_src(tmp_path):
    make_corpus(tmp_path / "birds", per_class=2, sr=8000)
    result = run_module("preprocess", "birds", "--sr", "8000", "--duration", "0.5", "--n-mels", "16",
                        "--augment-copies", "0", "--jobs", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "shards" / "birds" / "manifest.json").exists()


def test_every_predict_and_evaluate_option_has_help():
    from melshard.cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("predict", "evaluate"):
        bare = [a.option_strings or [a.dest] for a in commands.choices[name]._actions if not a.help]
        assert not bare, f"{name}: {bare}"


def test_predict_of_a_missing_input_asks_for_audio_not_labels(trained, tmp_path):
    result = run_module("trainer", "predict", str(trained["run"]), "--input", str(tmp_path / "nosuch"),
                        "--out", str(tmp_path / "p.csv"), "--device", "cpu")
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip()
    assert "pass a folder of audio files or a CSV with a path column" in line and "label" not in line, line


def test_a_csv_without_the_needed_columns_names_the_ones_it_has(tmp_path):
    (tmp_path / "labels.csv").write_text("file;klass\na.wav;low\n")
    result = run_module("preprocess", str(tmp_path / "labels.csv"), "--out", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "its columns are 'file', 'klass'" in lines[0], lines
