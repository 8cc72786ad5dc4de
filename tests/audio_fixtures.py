"""Generated audio for tests: small corpora of distinct synthetic classes, and broken files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
FSDD = REPO.parent / "shared" / "data" / "fsdd" / "recordings"
CLASS_HZ = {"low": 220.0, "mid": 660.0, "high": 1760.0, "chirp": 0.0}


def tone(label: str, rng: np.random.Generator, sr: int = 16000, seconds: float | None = None) -> np.ndarray:
    """A clip of class `label`: a tone (or a chirp) with random pitch, length, level and noise."""
    seconds = seconds if seconds is not None else rng.uniform(0.4, 1.5)
    t = np.arange(int(sr * seconds)) / sr
    if CLASS_HZ.get(label, 1.0) == 0.0:
        phase = 2 * np.pi * (300 * t + 1200 * t**2)
    else:
        phase = 2 * np.pi * CLASS_HZ.get(label, 440.0) * rng.uniform(0.95, 1.05) * t
    envelope = np.minimum(1.0, np.minimum(t, t[::-1]) * 40)
    y = rng.uniform(0.1, 0.5) * np.sin(phase) * envelope + 0.005 * rng.standard_normal(t.size)
    silence = np.zeros(int(sr * rng.uniform(0.05, 0.3)))
    return np.concatenate([silence, y, silence]).astype(np.float32)


def make_corpus(root: Path, per_class: int | dict[str, int] = 6, labels=("low", "mid", "high"), sr: int = 16000,
                seed: int = 0) -> Path:
    """A folder of class subfolders with `per_class` WAV clips each (a dict: each class's count,
    its keys the labels, e.g. a skewed corpus)."""
    rng = np.random.default_rng(seed)
    counts = per_class if isinstance(per_class, dict) else dict.fromkeys(labels, per_class)
    for label, count in counts.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            sf.write(root / label / f"{label}_{i:03d}.wav", tone(label, rng, sr), sr, subtype="PCM_16")
    return root


def write_tiny_config(path: Path, duration_s: float = 1.0, head: str = "") -> Path:
    """A preprocess TOML with the tests' small features (8 kHz, 32 mels, 64-sample hop);
    `head` adds top-level keys (e.g. "val_fraction = 0.25")."""
    path.write_text(f"{head}\n[audio]\nsr = 8000\nduration_s = {duration_s}\nn_fft = 256\nhop_length = 64\n"
                    "n_mels = 32\n")
    return path


def write_truncated_wav(path: Path, sr: int = 16000) -> None:
    """A WAV whose header claims more audio than the file holds (a cut-off download)."""
    sf.write(path, np.zeros(sr, np.float32) + 0.1, sr, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def run_module(*args: str, cwd: Path = REPO, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """Run `python -m ...` of this repository in a subprocess, capturing its output."""
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, **kwargs)
