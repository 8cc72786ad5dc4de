"""Hidden files in a corpus folder (an editor's `.take1.wav`, a `.backup/` folder, macOS `._name.wav`
resource forks) are inputs that are never read: each is a `hidden` row of errors.csv, counted in
the manifest, announced in one line, and left out of the `--max-rejected` share."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import soundfile as sf

from shared.shardio import iter_samples
from tests.audio_fixtures import make_corpus, run_module, tone, write_tiny_config

APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00" + b"Mac OS X        " + bytes(64)  # what Finder writes


def _corpus(root: Path) -> Path:
    src = make_corpus(root, per_class=4, labels=("dog", "cat"))
    rng = np.random.default_rng(5)
    sf.write(src / "dog" / ".take1.wav", tone("dog", rng, 16000), 16000)  # real audio, hidden
    (src / "dog" / ".backup").mkdir()
    sf.write(src / "dog" / ".backup" / "real.wav", tone("dog", rng, 16000), 16000)
    (src / "dog" / ".backup" / "notes.txt").write_text("not audio")
    for name in ("dog_000.wav", "dog_001.wav"):
        (src / "dog" / f"._{name}").write_bytes(APPLEDOUBLE)
    (src / "cat" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")  # not audio: not an input
    (src / "cat" / "README.txt").write_text("recorded in 2024")
    (src / ".Trash").mkdir()
    sf.write(src / ".Trash" / "old.wav", tone("cat", rng, 16000), 16000)
    (src / "cat" / ".to_dog").symlink_to("../dog")  # a hidden link to a listed folder: its files are listed already
    return src


def _errors(out: Path) -> dict[str, list[str]]:
    rows = list(csv.reader(io.StringIO((out / "errors.csv").read_text())))
    return {row[0]: row[1:] for row in rows[1:]}


HIDDEN = {"dog/.take1.wav", "dog/.backup/real.wav", "dog/._dog_000.wav", "dog/._dog_001.wav", ".Trash/old.wav"}


def test_hidden_audio_files_are_rows_of_errors_csv_never_decoded_and_a_rerun_resumes(tmp_path):
    src = _corpus(tmp_path / "src")
    out = tmp_path / "out"
    config = write_tiny_config(tmp_path / "tiny.toml")
    command = ["preprocess", str(src), "--out", str(out), "--config", str(config), "--jobs", "1"]
    result = run_module(*command)
    assert result.returncode == 0, result.stderr
    errors = _errors(out)
    assert set(errors) == HIDDEN  # .DS_Store, README.txt and notes.txt are not inputs
    assert all(stage == "list" and reason == "hidden" for stage, reason, _ in errors.values())
    assert "resource fork" in errors["dog/._dog_000.wav"][2]
    assert "'.backup'" in errors["dog/.backup/real.wav"][2] and "'.Trash'" in errors[".Trash/old.wav"][2]
    assert "starts with '.'" in errors["dog/.take1.wav"][2]

    manifest = json.loads((out / "manifest.json").read_text())
    inputs = manifest["inputs"]
    assert (inputs["total"], inputs["written"], inputs["rejected"], inputs["hidden"]) == (13, 8, 5, 5)
    assert manifest["labels"] == ["cat", "dog"]  # '.Trash' is no class
    paths = {json.loads(s["json"])["path"] for shard in out.glob("*.tar") for s in iter_samples(shard)}
    assert len(paths) == 8 and not any("/." in p or p.startswith(".") for p in paths)
    notes = [line for line in result.stderr.splitlines() if "hidden" in line]
    assert len(notes) == 1 and notes[0].startswith("note: 5 hidden file(s)"), result.stderr

    again = run_module(*command)  # the same command on the same --out resumes: the plan is the same
    assert again.returncode == 0, again.stderr
    assert "resumed: " in again.stdout and "another preprocessing run" not in again.stderr
    assert json.loads((out / "manifest.json").read_text()) == manifest


def test_hidden_files_do_not_count_toward_max_rejected(tmp_path):
    src = make_corpus(tmp_path / "src", per_class=2, labels=("dog", "cat"))
    for label in ("dog", "cat"):  # a corpus copied to a FAT/exFAT drive by a Mac: a fork beside every file
        for i in range(2):
            (src / label / f"._{label}_{i:03d}.wav").write_bytes(APPLEDOUBLE)
    (src / "cat" / "broken.wav").write_bytes(b"RIFF\x00\x00")
    out = tmp_path / "out"
    result = run_module("preprocess", str(src), "--out", str(out), "--config",
                        str(write_tiny_config(tmp_path / "tiny.toml")), "--jobs", "1")
    assert result.returncode == 0, result.stderr  # 1 of 5 readable inputs rejected, not 5 of 9
    inputs = json.loads((out / "manifest.json").read_text())["inputs"]
    assert (inputs["total"], inputs["written"], inputs["rejected"], inputs["hidden"]) == (9, 4, 5, 4)
    strict = run_module("preprocess", str(src), "--out", str(tmp_path / "strict"), "--config",
                        str(write_tiny_config(tmp_path / "tiny.toml")), "--jobs", "1", "--max-rejected", "0.1")
    assert strict.returncode == 1 and "20% of inputs were rejected" in strict.stderr
