"""A text file named .mp3 (and random bytes named .mp3): errors.csv gives the real reason, not
libsndfile's 'File does not exist or is not a regular file', and libmpg123's notes ('Illegal
Audio-MPEG-Header ... Trying to resync') stay off the terminal in preprocess, predict and
evaluate, while the project's own stderr lines still get through."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from tests.audio_fixtures import REPO, make_corpus, run_module

CHATTER = ("Illegal Audio-MPEG-Header", "resync", "libmpg123", "possibly a pipe")


def _fakes(folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notes.mp3").write_text("these are my notes, not a song\n" * 200)
    (folder / "noise.mp3").write_bytes(np.random.default_rng(3).bytes(100_000))
    return ["notes.mp3", "noise.mp3"]


def _quiet(result) -> None:
    assert not any(word in result.stderr for word in CHATTER), result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def test_preprocess_gives_the_real_reason_and_no_decoder_chatter(tmp_path):
    src = make_corpus(tmp_path / "src", per_class=3, sr=8000)
    _fakes(src / "low")
    out = tmp_path / "shards"
    result = run_module("preprocess", str(src), "--out", str(out), "--sr", "8000", "--duration", "1.0",
                        "--n-mels", "16", "--augment-copies", "0", "--jobs", "1")
    assert result.returncode == 0, result.stderr
    _quiet(result)
    errors = pd.read_csv(out / "errors.csv").set_index("path")
    assert set(errors.index) == {"low/notes.mp3", "low/noise.mp3"}
    assert set(errors["reason"]) == {"undecodable"}
    notes = errors.loc["low/notes.mp3", "detail"]
    assert "unrecognised format (not MP3 data)" in notes and "does not exist" not in notes, notes


def test_predict_and_evaluate_keep_decoder_chatter_off_the_terminal(trained, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(trained["test"], raw)
    _fakes(raw)
    result = run_module("trainer", "predict", str(trained["run"]), "--input", str(raw), "--out",
                        str(tmp_path / "p.csv"), "--allow-missing", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    _quiet(result)
    errors = pd.read_csv(tmp_path / "p.errors.csv").set_index("path")
    assert "unrecognised format" in errors.loc["notes.mp3", "detail"]

    labeled = tmp_path / "labeled"
    shutil.copytree(trained["corpus"], labeled)
    _fakes(labeled / "low")
    result = run_module("trainer", "evaluate", str(trained["run"]), "--input", str(labeled), "--device", "cpu")
    assert result.returncode == 0, result.stderr
    _quiet(result)
    assert "2 inputs could not be evaluated" in result.stderr, result.stderr


def test_lines_written_during_a_native_call_other_than_the_decoder_s_are_kept():
    code = ("import os, sys\n"
            "from shared.native_stderr import native_chatter_dropped\n"
            "print('before', file=sys.stderr)\n"
            "with native_chatter_dropped():\n"
            "    os.write(2, b'Note: Illegal Audio-MPEG-Header 0x00000000 at offset 5796.\\n')\n"
            "    os.write(2, b'[src/libmpg123/parse.c:skip_junk():1260] error: Giving up\\n')\n"
            "    os.write(2, b'warning: a line of our own\\n')\n"
            "print('after', file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == ["before", "warning: a line of our own", "after"]
