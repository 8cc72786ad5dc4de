"""`evaluate RUN --input DIR` with a class folder the model never saw is refused before any file
is decoded: a named pipe posing as a WAV, which blocks whoever opens it for reading, shows that
nothing was opened."""

from __future__ import annotations

import os
import shutil

from tests.audio_fixtures import run_module


def test_unseen_labels_are_refused_before_decoding(trained, tmp_path):
    labeled = tmp_path / "labeled"
    shutil.copytree(trained["corpus"], labeled)
    shutil.copytree(labeled / "low", labeled / "dog")
    pipe = labeled / "low" / "waits_for_a_writer.wav"
    os.mkfifo(pipe)
    try:
        result = run_module("trainer", "evaluate", str(trained["run"]), "--input", str(labeled), "--device", "cpu",
                            "--jobs", "1", timeout=60)
    finally:  # on a run that did open the pipe, let its reader go
        try:
            os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:  # no reader: nothing was opened
            pass
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "labels the model never saw: ['dog']" in lines[0], result.stderr
    assert "evaluate on those classes only" in lines[0]
