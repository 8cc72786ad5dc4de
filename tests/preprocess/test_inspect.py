"""`python -m preprocess inspect`: the features table shows how samples were made (segmentation,
balanced copies per class), and the exit status says whether every shard is sound."""

from __future__ import annotations

import json

from tests.audio_fixtures import make_corpus, run_module, write_tiny_config


def _rows(stdout: str) -> dict[str, str]:
    """The two-column rows of the features table, `key -> value` (a wrapped value joined up)."""
    rows: dict[str, str] = {}
    key = None
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if len(cells) != 2:
            key = None
            continue
        if cells[0]:
            key = cells[0]
            rows[key] = cells[1]
        elif key:
            rows[key] += " " + cells[1]
    return rows


def test_inspect_shows_segment_settings_and_exits_0_on_sound_shards(tmp_path):
    corpus = make_corpus(tmp_path / "src", per_class=3)
    config = write_tiny_config(tmp_path / "seg.toml", head="segment = true\nsegment_hop_s = 0.25\n"
                                                           "min_segment_s = 0.5\nsilence_dbfs = -60.0")
    out = tmp_path / "out"
    made = run_module("preprocess", str(corpus), "--out", str(out), "--config", str(config), "--jobs", "1")
    assert made.returncode == 0, made.stderr
    result = run_module("preprocess", "inspect", str(out))
    assert result.returncode == 0, result.stderr
    rows = _rows(result.stdout)
    assert rows["duration_s"] == "1.0"
    assert rows["segment"].startswith("on: recordings longer than 1.0 s become windows of 1.0 s")
    assert rows["segment_hop_s"].startswith("0.25")
    assert rows["min_segment_s"].startswith("0.5")
    assert rows["silence_dbfs"].startswith("-60.0")

    plain = tmp_path / "plain"
    made = run_module("preprocess", str(corpus), "--out", str(plain), "--config",
                      str(write_tiny_config(tmp_path / "plain.toml")), "--jobs", "1")
    assert made.returncode == 0, made.stderr
    rows = _rows(run_module("preprocess", "inspect", str(plain)).stdout)
    assert rows["segment"].startswith("off") and "segment_hop_s" not in rows and rows["silence_dbfs"].startswith("-80")


def test_inspect_shows_each_class_s_copies_when_classes_are_balanced(tmp_path):
    make_corpus(tmp_path / "src", {"low": 12, "high": 2}, sr=8000)
    out = tmp_path / "balanced"
    made = run_module("preprocess", str(tmp_path / "src"), "--out", str(out), "--sr", "8000", "--duration", "0.5",
                      "--n-mels", "16", "--augment-copies", "1", "--val-fraction", "0", "--jobs", "1",
                      "--balance-classes", "--balance-cap", "5")
    assert made.returncode == 0, made.stderr
    train = json.loads((out / "manifest.json").read_text())["splits"]["train"]
    assert train["copies_per_class"] == {"high": 10, "low": 12}  # 2 x 5 (the cap), 12 x 1
    result = run_module("preprocess", "inspect", str(out))
    assert result.returncode == 0, result.stderr
    rows = _rows(result.stdout)
    assert rows["augment copies"].startswith("1 per clip, more for smaller train classes up to 5 per clip")
    assert any("train copies" in line for line in result.stdout.splitlines())  # the column
    lines = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
             for line in result.stdout.splitlines() if line.count("│") >= 3}
    assert lines["high"] == ["12", "10"] and lines["low"] == ["24", "12"] and lines["total"] == ["36", "22"]
