"""The bad-input gauntlet: every kind of odd or broken input becomes either a sample or a row of
errors.csv with a specific reason, and `written + rejected == total` in every case."""

from __future__ import annotations

import ctypes
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from preprocess.pipeline import RunOptions, run
from shared import decode as decoding
from shared.config import AudioConfig, AugmentConfig, PreprocessConfig
from shared.shardio import iter_samples
from tests.audio_fixtures import REPO, tone, write_truncated_wav

CFG = PreprocessConfig(audio=AudioConfig(sr=8000, duration_s=1.0, n_fft=256, hop_length=64, n_mels=32),
                       augment=AugmentConfig(copies=0))


def _tone(seconds: float, sr: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    y = tone("low", np.random.default_rng(seed), sr, seconds=seconds)[: int(seconds * sr)]
    return np.repeat(y[:, None], channels, axis=1) if channels > 1 else y


def _overlong_header(path: Path) -> None:
    """A complete WAV whose data chunk claims twice the bytes it has."""
    sf.write(path, _tone(0.5, 8000), 8000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    at = data.index(b"data") + 4
    size = struct.unpack("<I", data[at : at + 4])[0]
    data[at : at + 4] = struct.pack("<I", size * 2)
    path.write_bytes(bytes(data))


# file name (under the class folder "low") -> how to make it, and what it must become:
# "sample" or the reason in errors.csv.
def gauntlet(folder: Path) -> dict[str, str]:
    low = folder / "low"
    low.mkdir(parents=True)
    expected = {}

    def case(name: str, outcome: str, make) -> None:
        make(low / name)
        expected[f"low/{name}"] = outcome

    case("truncated.wav", "truncated", write_truncated_wav)
    case("overlong_header.wav", "truncated", _overlong_header)
    case("zero_bytes.wav", "empty_file", lambda p: p.write_bytes(b""))
    case("random_bytes.wav", "undecodable", lambda p: p.write_bytes(np.random.default_rng(1).bytes(5000)))
    case("text.flac", "undecodable", lambda p: p.write_text("not audio at all\n" * 50))
    case("nan_inf.wav", "non_finite",
         lambda p: sf.write(p, np.array([0.1, np.nan, np.inf] * 3000, np.float32), 8000, subtype="FLOAT"))
    case("all_zero.wav", "silent", lambda p: sf.write(p, np.zeros(8000, np.float32), 8000))
    case("ten_ms.wav", "sample", lambda p: sf.write(p, _tone(0.01, 8000) + 0.2, 8000))
    case("ten_minutes.wav", "sample", lambda p: sf.write(p, np.tile(_tone(1.0, 8000), 600), 8000))
    case("six_channels.wav", "sample", lambda p: sf.write(p, _tone(0.8, 16000, channels=6), 16000))
    case("rate_96k.wav", "sample", lambda p: sf.write(p, _tone(0.8, 96000), 96000))
    case("rate_8k.wav", "sample", lambda p: sf.write(p, _tone(0.8, 8000), 8000))
    case("pcm_24.wav", "sample", lambda p: sf.write(p, _tone(0.8, 16000), 16000, subtype="PCM_24"))
    case("float_32.wav", "sample", lambda p: sf.write(p, _tone(0.8, 16000), 16000, subtype="FLOAT"))
    case("ünï cødé 音 with spaces.wav", "sample", lambda p: sf.write(p, _tone(0.8, 16000), 16000))
    case("dots.in.name.wav", "sample", lambda p: sf.write(p, _tone(0.8, 16000), 16000))
    case("phone.m4a", "undecodable", lambda p: p.write_bytes(b"\0\0\0\x18ftypM4A " + bytes(200)))
    (low / "loop").symlink_to("..", target_is_directory=True)  # a symlink loop: listed once, no hang
    for label in ("mid", "high"):  # enough ordinary clips for a split
        (folder / label).mkdir()
        for i in range(4):
            sf.write(folder / label / f"{label}_{i}.wav", tone(label, np.random.default_rng(i), 8000), 8000)
            expected[f"{label}/{label}_{i}.wav"] = "sample"
    sf.write(folder / "no_class.wav", _tone(0.8, 8000), 8000)
    expected["no_class.wav"] = "no_class_folder"
    return expected


def outcomes(out: Path, result) -> dict[str, str]:
    """path -> 'sample' (found in a shard) or its errors.csv reason."""
    found = {r[0]: r[2] for r in result.errors}
    for shard in out.glob("*.tar"):
        for sample in iter_samples(shard):
            path = json.loads(sample["json"])["path"]
            assert path not in found, f"{path} is both a sample and an error"
            found[path] = "sample"
    return found


def test_every_odd_or_broken_input_becomes_a_sample_or_a_specific_error(tmp_path, monkeypatch):
    monkeypatch.setattr(decoding, "ffmpeg_path", lambda: None)  # as on a machine without ffmpeg
    expected = gauntlet(tmp_path / "src")
    result = run(RunOptions(tmp_path / "src", tmp_path / "out", jobs=1), CFG)
    assert outcomes(tmp_path / "out", result) == expected
    inputs = result.manifest.to_dict()["inputs"]
    assert inputs["written"] + inputs["rejected"] == inputs["total"] == len(expected)
    keys = [s["__key__"] for shard in (tmp_path / "out").glob("*.tar") for s in iter_samples(shard)]
    assert len(keys) == len(set(keys)) and not any("." in key for key in keys)


def test_csv_inputs_missing_blank_unseen_duplicate_and_bad_rows(tmp_path):
    src = tmp_path / "src"
    (src / "clips").mkdir(parents=True)
    for i, label in enumerate(["low", "mid", "low", "mid", "low", "mid", "low"]):
        sf.write(src / "clips" / f"c{i}.wav", tone(label, np.random.default_rng(i), 8000), 8000)
    rows = ["path,label,split",
            "clips/c0.wav,low,train", "clips/c1.wav,mid,train", "clips/c2.wav,low,train", "clips/c3.wav,mid,train",
            "clips/c4.wav,low,val", "clips/c5.wav,mid,val",
            "clips/c0.wav,low,train",  # duplicate path
            "clips/gone.wav,low,train",  # missing file
            "clips/c1.wav,,train",  # blank label (and a duplicate of a path)
            ",low,train",  # blank path
            "clips/c2.wav,low,holdout",  # unknown split
            "clips/c6.wav,ghost,test"]  # a label no training clip has: a test clip is kept, unlabeled
    (src / "list.csv").write_text("\n".join(rows) + "\n")
    result = run(RunOptions(src / "list.csv", tmp_path / "out", jobs=1), CFG)
    reasons = sorted(r[2] for r in result.errors)
    assert reasons == sorted(["duplicate_path", "missing_file", "blank_label", "blank_path", "bad_split"])
    inputs = result.manifest.to_dict()["inputs"]
    assert {k: inputs[k] for k in ("total", "written", "rejected")} == {"total": 12, "written": 7, "rejected": 5}
    test = result.manifest.to_dict()["splits"]["test"]
    assert test["samples"] == 1 and test["per_class"] == {}


def _without_file_override() -> None:
    """In the child, before exec: drop root's power to read any file (CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH leave the bounding set), so file permissions apply to it too."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def test_an_unreadable_file_is_an_error_row_not_a_crash(tmp_path):
    src = tmp_path / "src"
    for label in ("low", "mid"):
        (src / label).mkdir(parents=True)
        for i in range(3):
            sf.write(src / label / f"{i}.wav", tone(label, np.random.default_rng(i), 8000), 8000)
    locked = src / "low" / "locked.wav"
    sf.write(locked, _tone(0.8, 8000), 8000)
    os.chmod(locked, 0o000)
    out = tmp_path / "out"
    try:
        result = subprocess.run([sys.executable, "-m", "preprocess", str(src), "--out", str(out), "--jobs", "1"],
                                cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True,
                                text=True, timeout=300,
                                preexec_fn=_without_file_override if os.geteuid() == 0 else None)
    except subprocess.SubprocessError as exc:
        pytest.skip(f"cannot drop the file-override capability here: {exc}")
    assert result.returncode == 0, result.stderr
    errors = (out / "errors.csv").read_text()
    assert "low/locked.wav,decode,unreadable,Permission denied" in errors
    manifest = json.loads((out / "manifest.json").read_text())
    assert {k: manifest["inputs"][k] for k in ("total", "written", "rejected")} == {"total": 7, "written": 6,
                                                                                   "rejected": 1}


MEASURE = """
import resource, sys
from shared.audio import file_to_mel
from shared.config import AudioConfig
file_to_mel(sys.argv[1], AudioConfig(sr=8000, duration_s=1.0, n_fft=256, hop_length=64, n_mels=32))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_a_ten_minute_clip_is_read_in_bounded_memory(tmp_path):
    short, long = tmp_path / "short.wav", tmp_path / "long.wav"
    sf.write(short, _tone(1.0, 48000), 48000, subtype="FLOAT")
    with sf.SoundFile(long, "w", 48000, 1, subtype="FLOAT") as handle:  # 10 min at 48 kHz: 115 MB
        for _ in range(600):
            handle.write(_tone(1.0, 48000))
    peaks = []
    for path in (short, long):
        out = subprocess.run([sys.executable, "-c", MEASURE, str(path)], cwd=REPO, capture_output=True, text=True,
                             env=dict(os.environ, PYTHONPATH=str(REPO)), check=True).stdout
        peaks.append(int(out.split()[-1]) * 1024)  # ru_maxrss is in KiB on Linux
    assert peaks[1] - peaks[0] < 40 * 2**20, f"peak grew by {(peaks[1] - peaks[0]) / 2**20:.0f} MiB"
