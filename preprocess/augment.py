"""Augmented copies of training clips: noise, pitch, speed, time shift, reverb, gain, cut.

Every random draw comes from a generator seeded by (seed, sample key, copy index), so a copy is
the same whichever worker makes it and in whatever order. Each transform is chosen to cost about
as little as the log-mel itself:

- pitch moves the power spectrum along the frequency axis (`shared.audio.warp_spectrum`),
  not a phase vocoder plus resampler (~40 ms a clip with librosa);
- speed is one soxr resampling (tempo and pitch together, as Kaldi-style speed perturbation);
- reverb convolves with a decaying-noise impulse response through one real FFT.
"""

from __future__ import annotations

import hashlib

import numpy as np
import scipy.fft
import soxr

from shared.audio import Augmentation
from shared.config import AugmentConfig


def key_seed(seed: int, key: str, copy: int) -> np.random.Generator:
    """The generator for one augmented copy of one sample."""
    digest = int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "little")
    return np.random.default_rng([seed, digest, copy])


def _noise(y, rng, cfg, sr):
    snr_db = rng.uniform(*cfg.snr_db)
    signal_power = float(np.dot(y, y)) / max(y.size, 1)
    scale = np.sqrt(signal_power / 10.0 ** (snr_db / 10.0))
    return y + rng.standard_normal(y.size, dtype=np.float32) * np.float32(scale), 1.0


def _pitch(y, rng, cfg, sr):
    semitones = rng.uniform(-cfg.pitch_semitones, cfg.pitch_semitones)
    return y, float(2.0 ** (semitones / 12.0))


def _speed(y, rng, cfg, sr):
    factor = rng.uniform(*cfg.speed)
    return soxr.resample(y, sr * factor, sr, quality="HQ").astype(np.float32, copy=False), 1.0


def _shift(y, rng, cfg, sr):
    # Positive: the clip starts later (leading silence); negative: its start is cut, but never
    # more than half of it, so a short clip cannot vanish.
    offset = int(round(rng.uniform(-cfg.shift_s, cfg.shift_s) * sr))
    if offset >= 0:
        return np.concatenate([np.zeros(offset, np.float32), y]), 1.0
    return y[min(-offset, y.size // 2):], 1.0


def _cut(y, rng, cfg, sr):
    # Recordings stopped (or trimmed) early lose the end of the word: on FSDD one speaker's
    # "six" ends 10 ms after its vowel, where the others' /ks/ runs on for 0.1-0.3 s.
    keep = 1.0 - rng.uniform(0.0, cfg.cut_end)
    return y[: max(1, int(round(y.size * keep)))], 1.0


def _reverb(y, rng, cfg, sr):
    rt60 = rng.uniform(*cfg.reverb_rt60_s)
    wet = rng.uniform(*cfg.reverb_wet)
    t = np.arange(int(rt60 * sr)) / sr
    response = (rng.standard_normal(t.size) * np.exp(-6.908 * t / rt60)).astype(np.float32)  # -60 dB at rt60
    response /= np.sqrt(np.dot(response, response))
    n = y.size + response.size - 1
    size = scipy.fft.next_fast_len(n, real=True)
    spectrum = scipy.fft.rfft(y, size)
    spectrum *= scipy.fft.rfft(response, size)
    mixed = scipy.fft.irfft(spectrum, size, overwrite_x=True)[:n]
    mixed *= np.float32(wet)
    mixed[: y.size] += np.float32(1.0 - wet) * y
    # Keep the loudness of the dry clip so that reverb does not double as a gain change.
    rms_in, rms_out = np.sqrt(np.dot(y, y) / n), np.sqrt(np.dot(mixed, mixed) / n)
    return mixed * np.float32(rms_in / max(rms_out, 1e-12)), 1.0


def _gain(y, rng, cfg, sr):
    return y * np.float32(10.0 ** (rng.uniform(*cfg.gain_db) / 20.0)), 1.0


_TRANSFORMS = {
    "noise": _noise, "pitch": _pitch, "speed": _speed,
    "shift": _shift, "reverb": _reverb, "gain": _gain, "cut": _cut,
}


def make_augmentation(cfg: AugmentConfig, sr: int, seed: int, key: str,
                      copy: int) -> tuple[str, Augmentation]:
    """Choose the transform of copy `copy` (>= 1) of sample `key`; return its name and callable."""
    rng = key_seed(seed, key, copy)
    name = cfg.transforms[int(rng.integers(len(cfg.transforms)))]
    transform = _TRANSFORMS[name]
    return name, lambda y: transform(y, rng, cfg, sr)
