"""A deterministic synthetic corpus: eight kinds of sound, an unlabeled test set, broken files.

It lets a new user run the whole pipeline with no data of their own (`python -m preprocess
demo`), and gives the tests and benchmarks realistic variation: every clip differs in pitch,
length, loudness, leading silence and background noise.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf

CLASSES = ("tone", "chirp_up", "chirp_down", "square", "tremolo", "vibrato", "clicks", "noise_burst")


def synth(kind: str, rng: np.random.Generator, sr: int) -> np.ndarray:
    """One clip of `kind`, with random pitch, length, level, silence and noise."""
    seconds = rng.uniform(0.5, 1.4)
    t = np.arange(int(sr * seconds)) / sr
    f0 = rng.uniform(300, 900)
    if kind == "tone":
        y = np.sin(2 * np.pi * f0 * t)
    elif kind == "chirp_up":
        y = np.sin(2 * np.pi * (f0 * t + 1500 * t**2 / seconds))
    elif kind == "chirp_down":
        y = np.sin(2 * np.pi * ((f0 + 1500) * t - 1500 * t**2 / seconds))
    elif kind == "square":
        y = np.sign(np.sin(2 * np.pi * f0 / 2 * t)) * 0.6
    elif kind == "tremolo":
        y = np.sin(2 * np.pi * f0 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(6, 12) * t))
    elif kind == "vibrato":
        y = np.sin(2 * np.pi * f0 * t + 40 * np.sin(2 * np.pi * rng.uniform(4, 8) * t))
    elif kind == "clicks":
        y = np.zeros_like(t)
        period = int(sr / rng.uniform(8, 20))
        y[::period] = 1.0
        y = np.convolve(y, np.hanning(32), mode="same")
    elif kind == "noise_burst":
        y = rng.standard_normal(t.size) * np.exp(-t * rng.uniform(2, 6))
        y /= np.abs(y).max()
    else:
        raise ValueError(f"unknown kind {kind!r}; choose from {CLASSES}")
    ramp = np.minimum(1.0, np.minimum(t, t[::-1]) * 50)
    y = rng.uniform(0.1, 0.8) * y * ramp + rng.uniform(0.001, 0.02) * rng.standard_normal(t.size)
    lead = np.zeros(int(sr * rng.uniform(0.0, 0.3)))
    return np.concatenate([lead, y, lead[: lead.size // 2]]).astype(np.float32)


def make_demo_corpus(root: str | Path, per_class: int = 40, test_per_class: int = 6,
                     seed: int = 0, sr: int = 16000) -> dict[str, Path]:
    """Write `root/train/<class>/*.wav`, `root/test/*.wav` and `root/test_labels.csv`.

    Three deliberately broken files in train/ show how rejected inputs are reported.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    train, test = root / "train", root / "test"
    for kind in CLASSES:
        (train / kind).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            sf.write(train / kind / f"{kind}_{i:03d}.wav", synth(kind, rng, sr), sr, subtype="PCM_16")
    test.mkdir(parents=True, exist_ok=True)
    answers = []
    order = rng.permutation(len(CLASSES) * test_per_class)
    for n, index in enumerate(order):
        kind = CLASSES[index % len(CLASSES)]
        name = f"clip_{n:04d}.wav"
        sf.write(test / name, synth(kind, rng, sr), sr, subtype="PCM_16")
        answers.append((name, kind))
    with (root / "test_labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filename", "label"])
        writer.writerows(sorted(answers))
    (train / "tone" / "broken_empty.wav").write_bytes(b"")
    (train / "square" / "broken_text.wav").write_text("not audio\n" * 10)
    good = (train / "chirp_up" / "chirp_up_000.wav").read_bytes()
    (train / "chirp_up" / "broken_truncated.wav").write_bytes(good[: len(good) // 3])
    return {"train": train, "test": test, "answers": root / "test_labels.csv"}
