"""Which keys a preprocess TOML takes where: the long-recording `[audio]` keys (segment,
segment_hop_s, min_segment_s, silence_dbfs) also at the top level, every other `[audio]` or
`[augment]` key only in its table, and a silence floor above full scale refused up front."""

from __future__ import annotations

import json

import pytest

from shared.config import AudioConfig, ConfigError, PreprocessConfig, from_dict
from tests.audio_fixtures import make_corpus, run_module

TINY = "sr = 8000\nduration_s = 1.0\nn_fft = 256\nhop_length = 64\nn_mels = 32\n"


def _one_line_usage_error(result, *words: str) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("level", [10.0, 0.5])
def test_a_silence_floor_above_full_scale_is_refused_naming_the_key(tmp_path, level):
    with pytest.raises(ConfigError, match="audio.silence_dbfs must be <= 0"):
        from_dict(PreprocessConfig, {"audio": {"silence_dbfs": level}})
    corpus = make_corpus(tmp_path / "src", per_class=2)
    config = tmp_path / "loud.toml"
    config.write_text(f"[audio]\n{TINY}silence_dbfs = {level}\n")
    result = run_module("preprocess", str(corpus), "--out", str(tmp_path / "out"), "--config", str(config))
    _one_line_usage_error(result, "audio.silence_dbfs", "<= 0")
    assert not (tmp_path / "out" / "manifest.json").exists()
    assert AudioConfig(silence_dbfs=0.0).silence_dbfs == 0.0  # full scale itself is a valid floor


def test_every_long_recording_key_is_taken_at_the_top_level(tmp_path):
    corpus = make_corpus(tmp_path / "src", per_class=3)
    config = tmp_path / "top.toml"
    config.write_text("segment = true\nsegment_hop_s = 0.5\nmin_segment_s = 0.25\nsilence_dbfs = -50.0\n"
                      f"[audio]\n{TINY}")
    out = tmp_path / "out"
    result = run_module("preprocess", str(corpus), "--out", str(out), "--config", str(config), "--jobs", "1")
    assert result.returncode == 0, result.stderr
    audio = json.loads((out / "manifest.json").read_text())["audio"]
    assert (audio["segment"], audio["segment_hop_s"], audio["min_segment_s"], audio["silence_dbfs"]) == \
        (True, 0.5, 0.25, -50.0)


@pytest.mark.parametrize("toml,words", [
    ("sr = 8000\n[audio]\nn_mels = 32\n", ("sr belongs under [audio]", "silence_dbfs")),
    ("transforms = ['noise']\n", ("transforms belongs under [augment]",)),
    ("silence_dbfs = -50.0\n[audio]\nsilence_dbfs = -60.0\n", ("silence_dbfs", "both", "keep one")),
])
def test_a_key_outside_its_table_is_refused_naming_where_it_belongs(tmp_path, toml, words):
    corpus = make_corpus(tmp_path / "src", per_class=2)
    config = tmp_path / "misplaced.toml"
    config.write_text(toml)
    result = run_module("preprocess", str(corpus), "--out", str(tmp_path / "out"), "--config", str(config))
    _one_line_usage_error(result, *words)
