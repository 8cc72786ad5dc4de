"""The end-of-run summary reads right at small figures: a crop of a few ms is not '0.0 s', and one
input or one cropped clip is singular."""

from __future__ import annotations

import numpy as np
import soundfile as sf

from preprocess.report import duration
from tests.audio_fixtures import run_module, write_tiny_config

SR = 8000


def _tone(seconds: float, hz: float) -> np.ndarray:
    """A steady tone with no silence around it: nothing for the trim to remove."""
    return (0.3 * np.sin(2 * np.pi * hz * np.arange(int(round(seconds * SR))) / SR)).astype(np.float32)


def test_a_24_ms_crop_is_reported_in_ms_and_one_clip_in_the_singular(tmp_path):
    for label, hz in (("low", 220.0), ("high", 1760.0)):
        (tmp_path / "src" / label).mkdir(parents=True)
        for i in range(2):
            sf.write(tmp_path / "src" / label / f"{i}.wav", _tone(0.5, hz), SR, subtype="FLOAT")
    sf.write(tmp_path / "src" / "low" / "long.wav", _tone(1.024, 220.0), SR, subtype="FLOAT")
    result = run_module("preprocess", str(tmp_path / "src"), "--out", str(tmp_path / "out"), "--config",
                        str(write_tiny_config(tmp_path / "tiny.toml")), "--augment-copies", "0", "--jobs", "1")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    cropped = [line for line in lines if line.startswith("cropped:")]
    assert cropped == ["cropped: 1 clip was longer than 1.0 s and lost 24 ms of audio to the crop; pass "
                       "--segment to use whole recordings as consecutive windows"], result.stdout
    assert any(line.startswith("5 inputs: 5 written, 0 rejected; 5 samples in ") for line in lines), result.stdout


def test_durations_keep_their_figure_at_every_scale():
    assert [duration(s) for s in (0.0, 0.0003, 0.0049, 0.024, 0.5, 1.0, 12.34)] == \
        ["0.0 s", "0.3 ms", "4.9 ms", "24 ms", "500 ms", "1.0 s", "12.3 s"]
