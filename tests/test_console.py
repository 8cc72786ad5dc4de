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
