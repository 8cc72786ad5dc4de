"""`predict --windows` on a run whose shards were not segmented: each clip is one window at
offset 0.0, and one line says why."""

from __future__ import annotations

import pandas as pd

from tests.audio_fixtures import run_module


def test_windows_of_an_unsegmented_run_are_whole_clips_at_offset_0(trained, tmp_path):
    for source in (trained["test"], trained["shards"]):
        out = tmp_path / "submission.csv"
        result = run_module("trainer", "predict", str(trained["run"]), "--input", str(source), "--out", str(out),
                            "--windows", "--jobs", "1")
        assert result.returncode == 0, result.stderr
        windows = pd.read_csv(out.with_name("submission.windows.csv"))
        submission = pd.read_csv(out)
        assert list(windows.columns) == ["filename", "offset_s", "label"]
        assert windows["offset_s"].tolist() == [0.0] * len(submission)  # no empty cells
        assert windows["filename"].tolist() == submission["filename"].tolist()
        assert windows["label"].tolist() == submission["label"].tolist()
        notes = [line for line in result.stdout.splitlines() if line.startswith("note:")]
        assert notes == [f"note: {trained['run']} was not trained on segmented shards (--segment), so each window "
                         f"in {out.with_name('submission.windows.csv')} is a whole clip, at offset_s 0.0"]
