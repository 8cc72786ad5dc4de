"""Names the user chose, end to end through the commands: file and class folder names that are
not UTF-8 (Latin-1 bytes, as a Windows zip leaves them on Linux) and labels that look like rich
markup (`tone [/b]`, `b [v2]`). Every command exits 0 without a traceback, every CSV written is
UTF-8 with an undecodable byte shown as `\\xNN`, and every label prints exactly as given.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tests.audio_fixtures import make_corpus, run_module, write_tiny_config

pytestmark = pytest.mark.slow

FAST = ["--model", "cnn", "--width", "0.25", "--batch-size", "4", "--num-workers", "1", "--epochs", "1"]
LATIN1_FILE = b"caf\xe9.wav"
LATIN1_CLASS = b"b\xe9_class"
LATIN1_REJECTED = b"bad_caf\xe9.wav"


@pytest.fixture
def desktop_console(monkeypatch):
    """Standard output as on a desktop's UTF-8 locale: an unencodable character is an error (a
    C.UTF-8 locale would pass surrogates through as raw bytes). Wide, so no table cell wraps."""
    monkeypatch.setenv("PYTHONIOENCODING", "utf-8:strict")
    monkeypatch.setenv("COLUMNS", "400")


def ok(*args: str) -> str:
    """Run `python -m ARGS`; it must exit 0 without a traceback. Its stdout and stderr together."""
    result = run_module(*args)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    return result.stdout + result.stderr


def latin1_corpus(root: Path) -> Path:
    """Class folders a/ and b/, plus a file and a class folder whose names hold byte 0xE9, the
    file's name in UTF-8 beside it, and a zero-byte file named with 0xE9; skips where the file
    system refuses such names (e.g. macOS)."""
    make_corpus(root, per_class=4, labels=("a", "b"))
    try:
        os.mkdir(os.path.join(bytes(root), LATIN1_CLASS))
    except OSError as exc:
        pytest.skip(f"this file system refuses names that are not UTF-8 ({exc.strerror})")
    shutil.copy(bytes(root / "a" / "a_000.wav"), os.path.join(bytes(root / "a"), LATIN1_FILE))
    # the same name in UTF-8: both become the key a/caf_, told apart by a hash of the whole name
    shutil.copy(root / "a" / "a_000.wav", root / "a" / "café.wav")
    for name in sorted(os.listdir(root / "b")):
        shutil.copy(bytes(root / "b" / name), os.path.join(bytes(root), LATIN1_CLASS, name.encode()))
    open(os.path.join(bytes(root / "a"), LATIN1_REJECTED), "wb").close()
    return root


def shown_inputs(root: Path) -> set[str]:
    """Every file below `root`, relative, as the CSVs show it: a byte that is not UTF-8 as \\xNN."""
    top = bytes(root)
    return {os.path.relpath(os.path.join(folder, name), top).decode("utf-8", "backslashreplace")
            for folder, _, files in os.walk(top) for name in files}


def utf8_csv(path: Path) -> pd.DataFrame:
    """The CSV at `path`, which must decode as UTF-8 (strictly)."""
    path.read_bytes().decode("utf-8")
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def test_names_that_are_not_utf8_go_through_every_command(tmp_path, desktop_console):
    corpus = latin1_corpus(tmp_path / "corpus")
    config = write_tiny_config(tmp_path / "tiny.toml")
    shards, run, submission = tmp_path / "shards", tmp_path / "run", tmp_path / "submission.csv"

    printed = ok("preprocess", str(corpus), "--out", str(shards), "--config", str(config), "--jobs", "1")
    assert "b\\xe9_class" in printed
    manifest = json.loads((shards / "manifest.json").read_text())
    errors = utf8_csv(shards / "errors.csv")
    assert errors["path"].tolist() == ["a/bad_caf\\xe9.wav"] and errors["reason"].tolist() == ["empty_file"]
    inputs = manifest["inputs"]
    assert (inputs["total"], inputs["written"], inputs["rejected"]) == (15, 14, 1)

    assert "b\\xe9_class" in ok("preprocess", "inspect", str(shards))
    ok("trainer", "train", str(shards), "--out", str(run), *FAST)
    for source in (["--input", str(corpus)], ["--shards", str(shards), "--split", "train"]):
        assert "b\\xe9_class" in ok("trainer", "evaluate", str(run), *source)
    report = run / "report"
    assert utf8_csv(report / "per_class.csv")["class"].tolist() == ["a", "b", "b\\xe9_class"]
    assert "b\\xe9_class" in utf8_csv(report / "confusion_matrix.csv")["true"].tolist()
    assert any("\\xe9" in path for path in utf8_csv(report / "predictions.csv")["path"])  # the train split's

    ok("trainer", "predict", str(run), "--input", str(corpus), "--out", str(submission), "--allow-missing")
    predicted = utf8_csv(submission)["filename"].tolist()
    rejected = utf8_csv(tmp_path / "submission.errors.csv")["path"].tolist()
    assert {"a/caf\\xe9.wav", "a/café.wav", "b\\xe9_class/b_000.wav"} <= set(predicted)
    assert rejected == ["a/bad_caf\\xe9.wav"]
    assert sorted(predicted + rejected) == sorted(shown_inputs(corpus))  # each input: a row or an error


def markup_corpus(root: Path, route: str) -> Path:
    """Labels `tone [/b]` and `b [v2]`: from a CSV, or `b [v2]` as a class folder (a folder name
    cannot hold the slash of `[/b]`)."""
    if route == "folder":
        return make_corpus(root, per_class=5, labels=("low", "b [v2]"))
    make_corpus(root, per_class=5, labels=("low", "high"))
    labels = {"low": "tone [/b]", "high": "b [v2]"}
    with (root / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        for path in sorted(root.glob("*/*.wav")):
            writer.writerow([path.relative_to(root).as_posix(), labels[path.parent.name]])
    return root / "labels.csv"


@pytest.mark.parametrize("route", ["folder", "csv"])
def test_labels_that_look_like_markup_print_exactly(tmp_path, desktop_console, route):
    src = markup_corpus(tmp_path / "corpus", route)
    labels = ["b [v2]"] + (["tone [/b]"] if route == "csv" else [])
    config = write_tiny_config(tmp_path / "tiny.toml")
    shards, run = tmp_path / "shards", tmp_path / "run"

    outputs = [ok("preprocess", str(src), "--out", str(shards), "--config", str(config), "--jobs", "1"),
               ok("preprocess", "inspect", str(shards))]
    if route == "csv":  # both labels: on through training and both evaluate routes
        ok("trainer", "train", str(shards), "--out", str(run), *FAST)
        outputs += [ok("trainer", "evaluate", str(run), "--shards", str(shards), "--split", "train"),
                    ok("trainer", "evaluate", str(run), "--input", str(src))]
        assert "shards [train]: accuracy" in " ".join(outputs[2].split())  # the title keeps the split
        assert set(labels) <= set(utf8_csv(run / "report" / "per_class.csv")["class"])
    for output in outputs:
        for label in labels:
            assert f"│ {label} " in output, output  # the label's table cell, brackets and all
