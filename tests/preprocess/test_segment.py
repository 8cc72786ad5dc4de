"""Long recordings: `--segment` windows, their offsets and splits, bounded memory, the crop's
count without it, and prediction per file from the windows."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.audio import load_clip, windows
from shared.config import AudioConfig
from shared.decode import decode, decode_stream
from shared.shardio import iter_samples
from tests.audio_fixtures import CLASS_HZ, run_module, write_tiny_config

SR = 8000


def test_windows_cover_a_recording_at_exact_offsets(tmp_path):
    rng = np.random.default_rng(0)
    y = (0.2 * rng.standard_normal(int(23.4 * SR))).astype(np.float32)
    y[10 * SR : 15 * SR] = 0.0  # a silent stretch: its window is left out
    sf.write(tmp_path / "long.wav", y, SR, subtype="FLOAT")
    cfg = AudioConfig(sr=SR, duration_s=5.0, n_fft=256, hop_length=64, n_mels=16, segment=True)
    found = list(windows(tmp_path / "long.wav", cfg))
    assert [offset for offset, _ in found] == [0.0, 5.0, 15.0, 20.0]
    for offset, window in found:
        start = int(offset * SR)
        np.testing.assert_array_equal(window, y[start : start + 5 * SR])
    assert found[-1][1].size == int(3.4 * SR)  # the last window, padded later

    overlapping = AudioConfig(sr=SR, duration_s=5.0, n_fft=256, hop_length=64, n_mels=16, segment=True,
                              segment_hop_s=2.5, min_segment_s=4.0)
    offsets = [offset for offset, _ in windows(tmp_path / "long.wav", overlapping)]
    # 0 .. 17.5 are whole windows except those inside the silence (10.0); the 3.4 s tail from 20.0
    # is shorter than min_segment_s and dropped, as is one adding nothing new.
    assert offsets == [0.0, 2.5, 5.0, 7.5, 12.5, 15.0, 17.5]


def test_a_short_recording_is_one_trimmed_clip(tmp_path):
    y = np.concatenate([np.zeros(SR // 2), 0.5 * np.sin(2 * np.pi * 440 * np.arange(SR) / SR), np.zeros(SR // 2)])
    sf.write(tmp_path / "short.wav", y.astype(np.float32), SR, subtype="FLOAT")
    cfg = AudioConfig(sr=SR, duration_s=5.0, n_fft=256, hop_length=64, n_mels=16, segment=True, top_db=20)
    [(offset, clip)] = list(windows(tmp_path / "short.wav", cfg))
    assert offset == 0.0 and clip.size < y.size  # the silence around it trimmed, as without --segment
    np.testing.assert_array_equal(clip, load_clip(tmp_path / "short.wav", cfg))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rate=st.sampled_from([8000, 11025, 16000, 22050, 44100, 48000]), target=st.sampled_from([8000, 22050]),
       samples=st.one_of(st.integers(1, 4000), st.integers(40_000, 200_000)), fmt=st.sampled_from(["wav", "flac"]))
def test_the_stream_decodes_what_decode_does_at_any_rate_and_length(tmp_path, rate, target, samples, fmt):
    """The streamed recording (--segment) against the whole-file decoder, from one sample to a few
    seconds: a short file that soxr holds back entirely until its last chunk included."""
    y = (0.3 * np.sin(np.arange(samples) * 0.05)).astype(np.float32)
    path = tmp_path / f"clip.{fmt}"
    sf.write(path, y, rate, subtype="PCM_24")
    whole = decode(path, target)
    streamed = np.concatenate(list(decode_stream(path, target)) or [np.zeros(0, np.float32)])
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, atol=1e-6)


def test_a_50_ms_clip_that_needs_upsampling_is_one_clip(tmp_path):
    y = (0.5 * np.sin(2 * np.pi * 440 * np.arange(800) / 16000)).astype(np.float32)
    sf.write(tmp_path / "short.wav", y, 16000, subtype="PCM_16")
    cfg = AudioConfig(segment=True)  # 22,050 Hz: soxr returns nothing until the stream's end
    [(offset, clip)] = list(windows(tmp_path / "short.wav", cfg))
    assert offset == 0.0
    np.testing.assert_allclose(clip, load_clip(tmp_path / "short.wav", cfg), atol=1e-6)


def test_a_20_minute_recording_is_windowed_in_bounded_memory(tmp_path):
    rate, minutes = 44100, 20
    path = tmp_path / "field.wav"
    with sf.SoundFile(path, "w", rate, 1, "PCM_16") as handle:
        t = np.arange(60 * rate) / rate
        for minute in range(minutes):
            handle.write((0.3 * np.sin(2 * np.pi * (200 + 50 * minute) * t)).astype(np.float32))
    cfg = AudioConfig(sr=16000, duration_s=5.0, segment=True)
    tracemalloc.start()
    try:
        count = last = 0
        for offset, window in windows(path, cfg):
            count, last = count + 1, offset
            assert window.size == cfg.n_samples
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == minutes * 12 and last == minutes * 60 - 5
    whole = minutes * 60 * 16000 * 4  # the decoded recording as float32: 77 MB
    assert peak < 48 * 2**20 < whole, f"peak {peak / 2**20:.1f} MiB"


# --- end to end: only the middle of each recording says what it is -------------------------

LABELS = ("low", "mid", "high")
TRAIN = ["--model", "cnn", "--width", "0.25", "--batch-size", "16", "--num-workers", "1", "--epochs", "4",
         "--lr", "3e-3", "--mixup-p", "0", "--seed", "3"]


def _recording(label: str, rng: np.random.Generator) -> np.ndarray:
    """12 s of noise, the class's tone from 5 to 7 s: the first seconds say nothing."""
    y = 0.1 * rng.standard_normal(12 * SR)
    t = np.arange(2 * SR) / SR
    y[5 * SR : 7 * SR] += 0.3 * np.sin(2 * np.pi * CLASS_HZ[label] * rng.uniform(0.97, 1.03) * t)
    return y.astype(np.float32)


@pytest.fixture(scope="module")
def middles(tmp_path_factory):
    root = tmp_path_factory.mktemp("middles")
    rng = np.random.default_rng(11)
    for label in LABELS:
        (root / "corpus" / label).mkdir(parents=True)
        for i in range(10):
            sf.write(root / "corpus" / label / f"{label}{i}.wav", _recording(label, rng), SR, subtype="PCM_16")
    write_tiny_config(root / "audio.toml")
    found = {}
    for name, extra in (("cropped", []), ("segmented", ["--segment"])):
        shards, run = root / f"shards-{name}", root / f"run-{name}"
        result = run_module("preprocess", str(root / "corpus"), "--out", str(shards), "--config",
                            str(root / "audio.toml"), "--augment-copies", "0", "--jobs", "1", *extra)
        assert result.returncode == 0, result.stderr
        found[name] = {"shards": shards, "run": run, "preprocess": result}
        result = run_module("trainer", "train", str(shards), "--out", str(run), *TRAIN)
        assert result.returncode == 0, result.stderr
        result = run_module("trainer", "evaluate", str(run), "--shards", str(shards), "--split", "val")
        assert result.returncode == 0, result.stderr
        found[name]["metrics"] = json.loads((run / "report" / "metrics.json").read_text())
    found["root"] = root
    return found


def test_without_segment_the_crop_is_counted_and_scores_chance(middles):
    cropped = middles["cropped"]
    inputs = json.loads((cropped["shards"] / "manifest.json").read_text())["inputs"]
    assert inputs["cropped"] == 30 and inputs["cropped_s"] == pytest.approx(30 * 11.0, rel=0.02)
    assert "pass --segment" in " ".join((cropped["preprocess"].stdout + cropped["preprocess"].stderr).split())
    assert cropped["metrics"]["accuracy"] <= 0.67  # 6 validation files of 3 classes: near chance


def test_segment_uses_the_whole_recording_and_scores_per_file(middles):
    segmented = middles["segmented"]
    where: dict[str, set[str]] = {}
    offsets: dict[str, list[float]] = {}
    for tar in segmented["shards"].glob("*.tar"):
        for sample in iter_samples(tar):
            meta = json.loads(sample["json"])
            where.setdefault(meta["path"], set()).add(tar.name.split("-")[0])
            offsets.setdefault(meta["path"], []).append(meta["offset_s"])
            assert meta["segment"] == int(meta["offset_s"])  # 1 s windows, 1 s apart
    assert len(where) == 30 and all(len(splits) == 1 for splits in where.values())  # no file on two sides
    assert all(sorted(o) == [float(s) for s in range(12)] for o in offsets.values())
    metrics = segmented["metrics"]
    assert metrics["samples"] == 6 and metrics["windows"]["samples"] == 72  # per file, and per window beside
    assert metrics["accuracy"] >= 0.99


def test_predict_gives_one_row_per_recording_and_windows_on_request(middles, tmp_path):
    run, corpus = middles["segmented"]["run"], middles["root"] / "corpus"
    out = tmp_path / "submission.csv"
    result = run_module("trainer", "predict", str(run), "--input", str(corpus / "mid"), "--out", str(out),
                        "--windows", "--aggregate", "max", "--jobs", "1")
    assert result.returncode == 0, result.stderr
    rows = pd.read_csv(out)
    assert len(rows) == 10 and rows["filename"].is_unique
    per_window = pd.read_csv(out.with_name("submission.windows.csv"))
    assert len(per_window) == 120 and sorted(per_window["offset_s"].unique()) == [float(s) for s in range(12)]
    assert (rows["label"] == "mid").mean() >= 0.9


def test_shard_size_counts_a_recordings_windows(tmp_path):
    """Six 12 s recordings of twelve 1 s windows each, --shard-size 30: two recordings a shard
    (a recording's windows share one), where counting each recording as one sample made a single
    72-sample shard."""
    rng = np.random.default_rng(2)
    for i in range(6):
        label = LABELS[i % 2]
        (tmp_path / "corpus" / label).mkdir(parents=True, exist_ok=True)
        sf.write(tmp_path / "corpus" / label / f"r{i}.wav", _recording(label, rng), SR, subtype="PCM_16")
    config = write_tiny_config(tmp_path / "audio.toml")
    shards = tmp_path / "shards"
    result = run_module("preprocess", str(tmp_path / "corpus"), "--out", str(shards), "--config", str(config),
                        "--segment", "--shard-size", "30", "--augment-copies", "0", "--val-fraction", "0",
                        "--jobs", "1")
    assert result.returncode == 0, result.stderr
    train = json.loads((shards / "manifest.json").read_text())["splits"]["train"]
    assert train["samples"] == 72
    assert [shard["samples"] for shard in train["shards"]] == [24, 24, 24]
