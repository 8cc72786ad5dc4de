"""How a sample's log-mel is stored: float16 (exact, the default) or uint8 (lossy, bounded).

`uint8` keeps each clip's log-mel as 8-bit codes with one offset and one scale per clip:

    mel = offset + scale * code        code: uint8 [n_mels, frames], in the member `mel.u8.npy`
                                       offset, scale: `mel_offset`, `mel_scale` of the sample's json

`offset` is the clip's lowest value and `scale` (a float32) is `(max - min) / 255`, rounded up
to the next float32 when rounding to nearest would fall short, so the 256 codes span the clip's
whole range. Each value gets the nearest code, so a decoded value is within `scale / 2`, that is
`(max - min) / 510` dB, of the float16 value it encodes, plus float32 rounding (a few 1e-6 dB at
the magnitudes a log-mel has). A constant clip has scale 0 and decodes exactly. With the default
`db_range` of 80 dB a clip's range is at most 80 dB, so the error is at most 0.157 dB.

Everything here is deterministic (round half to even, float32 offset and scale written as exact
JSON numbers), so shards stay byte-identical across `--jobs` counts and reruns.
"""

from __future__ import annotations

import math

import numpy as np

from shared.config import MEL_ENCODINGS

MEMBERS = dict(zip(MEL_ENCODINGS, ("mel.npy", "mel.u8.npy")))  # the sample's member for each encoding
LEVELS = 255  # codes 0..255


def encode_u8(mel: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(codes, offset, scale) of a finite float16 or float32 mel; `decode_u8` inverts it within
    `(max - min) / 510` (see the module doc). A non-finite value is a ValueError."""
    mel = np.asarray(mel)
    if mel.dtype not in (np.float16, np.float32):
        mel = mel.astype(np.float32)  # the offset must be a float32 value, and the bound is against these
    if mel.size == 0:
        return np.zeros(mel.shape, np.uint8), 0.0, 0.0
    values = mel.astype(np.float64)  # exact; every step below is in float64 on float32 values
    low, high = float(values.min()), float(values.max())
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError("a log-mel with NaN or infinite values cannot be stored as uint8")
    span = high - low  # exact: both are float32 values, their difference fits a float64
    scale = np.float32(span / LEVELS)
    if float(scale) * LEVELS < span:  # rounded down: the top code would fall short of the maximum
        scale = np.nextafter(scale, np.float32(np.inf))
    if scale == 0:
        return np.zeros(mel.shape, np.uint8), low, 0.0
    values -= low
    values /= float(scale)
    np.rint(values, out=values)
    np.clip(values, 0, LEVELS, out=values)
    return values.astype(np.uint8), low, float(scale)


def decode_u8(codes: np.ndarray, offset, scale) -> np.ndarray:
    """The float32 mel that `encode_u8` codes stand for: `code * scale + offset`, each step in
    float32 (4-5x faster than looking the 256 values up in a table, and the same numbers).
    `offset` and `scale` are numbers, or arrays that broadcast against a batch of codes."""
    mel = codes.astype(np.float32)
    mel *= np.asarray(scale, np.float32)
    mel += np.asarray(offset, np.float32)
    return mel


def error_bound(mel: np.ndarray) -> float:
    """The most a decoded value may differ from `mel`'s (documented and tested): half a code's
    step plus float32 rounding."""
    values = np.asarray(mel, dtype=np.float64)
    if values.size == 0:
        return 0.0
    low, high = float(values.min()), float(values.max())
    return (high - low) / (2 * LEVELS) * (1 + 2.0**-20) + 2.0**-20 * max(1.0, abs(low), abs(high))
