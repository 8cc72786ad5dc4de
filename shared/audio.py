"""The one audio -> log-mel function: decode (`shared/decode.py`), trim, pad or crop, log-mel.

`preprocess` and `predict` both call `load_clip` then `clip_to_mel`, with the `AudioConfig`
recorded in the manifest and the checkpoint, so training and serving features cannot drift.

The log-mel is computed here rather than by `librosa.feature.melspectrogram` because librosa
rebuilds the mel filterbank on every call and runs its FFT in float64; with the tables cached
and the FFT in float32 a 5 s clip costs less than half as much (about 3 ms against 7 ms in
bench/preprocess_throughput.py's per-phase profile). `tests/shared/test_audio.py` holds
it to librosa's `melspectrogram` + `power_to_db` within 1e-3 dB.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import scipy.fft
import scipy.sparse
import soxr

from shared.config import AudioConfig
from shared.decode import (
    MAX_DECODE_S,
    AudioError,
    all_finite,
    decode,
    decode_stream,
    recording_seconds,
)
from shared.errors import UsageError
from shared.melscale import mel_filterbank

_AMIN = 1e-10  # power floor before log10, as librosa.power_to_db

# An augmentation takes a trimmed clip and returns (new clip, pitch ratio): pitch is applied to
# the power spectrum, see `warp_spectrum`.
Augmentation = Callable[[np.ndarray], "tuple[np.ndarray, float]"]

# ---------------------------------------------------------------------------------------------
# trimming, padding


def trim(y: np.ndarray, top_db: float, frame_length: int = 2048, hop_length: int = 512) -> np.ndarray:
    """Drop leading and trailing audio quieter than `top_db` below the clip's loudest frame.

    Same frames and rule as `librosa.effects.trim` (a test holds them equal); done here because
    importing librosa.effects pulls scipy.signal, numba and scikit-learn into every worker
    (seconds of start-up), and because with the frame a whole number of hops the frame energies
    are sums of hop-block energies: one pass over the clip instead of four.
    """
    if top_db <= 0 or y.size == 0:
        return y
    if frame_length % hop_length or (frame_length // 2) % hop_length:
        raise ValueError("trim needs frame_length and frame_length / 2 to be multiples of hop_length")
    per_frame = frame_length // hop_length
    lead = (frame_length // 2) // hop_length
    n_frames = 1 + y.size // hop_length
    # Block b covers centred-padded samples [b * hop, (b + 1) * hop); frame t sums blocks
    # t .. t + per_frame - 1.
    n_blocks = n_frames + per_frame - 1
    squares = np.zeros(n_blocks * hop_length)
    squares[lead * hop_length : lead * hop_length + y.size] = np.square(y, dtype=np.float64)
    blocks = squares.reshape(n_blocks, hop_length).sum(axis=1)
    mean_square = np.convolve(blocks, np.ones(per_frame), mode="valid")[:n_frames] / frame_length
    ref = mean_square.max()
    if ref <= 0:
        return y[:0]
    db = 10.0 * np.log10(np.maximum(_AMIN, mean_square)) - 10.0 * np.log10(max(_AMIN, ref))
    loud = np.flatnonzero(db > -top_db)
    start = int(loud[0]) * hop_length
    end = min(y.size, (int(loud[-1]) + 1) * hop_length)
    return y[start:end]


def decode_limit_s(cfg: AudioConfig) -> float:
    """How much of a recording `load_clip` decodes: the crop keeps only the start anyway."""
    return max(MAX_DECODE_S, 4 * cfg.duration_s)


def load_clip(path: str | Path, cfg: AudioConfig) -> np.ndarray:
    """Decode, mix to mono, resample to `cfg.sr`, reject silence and trim: the un-padded clip."""
    return _trimmed(decode(path, cfg.sr, decode_limit_s(cfg)), cfg)


def cropped_seconds(path: str | Path, y: np.ndarray, cfg: AudioConfig) -> float:
    """Seconds of the trimmed clip `y` that padding/cropping to `duration_s` drops; for a
    recording longer than what `load_clip` decodes, measured from the file's own length."""
    if y.size <= cfg.n_samples:
        return 0.0
    seconds = y.size / cfg.sr
    if seconds >= decode_limit_s(cfg) - 1.0:
        seconds = max(seconds, recording_seconds(path) or seconds)
    return seconds - cfg.duration_s


def _trimmed(y: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    peak = float(np.abs(y).max())
    if peak <= 10.0 ** (cfg.silence_dbfs / 20.0):
        raise AudioError("silent", f"peak level {20 * np.log10(max(peak, 1e-12)):.1f} dBFS is below "
                                   f"audio.silence_dbfs = {cfg.silence_dbfs}")
    return trim(y, cfg.top_db)


def windows(path: str | Path, cfg: AudioConfig) -> Iterator[tuple[float, np.ndarray]]:
    """(offset in seconds, samples) of each window of a recording, for `cfg.segment`.

    A recording no longer than `duration_s` is the one clip `load_clip` makes (trimmed), at
    offset 0. A longer one is not trimmed: it becomes windows of `duration_s` every
    `segment_hop_s`, the last one kept (to be padded) when at least `min_segment_s` long;
    windows whose peak is below `silence_dbfs` are left out. Memory holds one window and one
    decoded block, however long the recording.
    """
    n, hop, floor = cfg.n_samples, cfg.hop_samples, 10.0 ** (cfg.silence_dbfs / 20.0)
    buffer, start = np.zeros(0, np.float32), 0  # buffer holds samples [start, start + len)
    emitted = kept = 0
    stream = decode_stream(path, cfg.sr)
    for block in stream:
        buffer = np.concatenate([buffer, block])
        if start == 0 and buffer.size <= n:
            continue  # still possibly a short clip
        while buffer.size >= n:
            window = buffer[:n]
            emitted += 1
            if float(np.abs(window).max()) > floor:
                kept += 1
                yield start / cfg.sr, window.copy()
            buffer, start = buffer[hop:], start + hop
    if start == 0 and emitted == 0:  # the whole recording fits one window: the clip as load_clip makes it
        yield 0.0, _trimmed(buffer, cfg)
        return
    if buffer.size >= cfg.min_segment_samples and (emitted == 0 or buffer.size > n - hop):
        emitted += 1
        if float(np.abs(buffer).max()) > floor:
            kept += 1
            yield start / cfg.sr, buffer
    if kept == 0:
        raise AudioError("silent", f"every window's peak is below audio.silence_dbfs = {cfg.silence_dbfs}")


def file_to_mels(path: str | Path, cfg: AudioConfig) -> list[tuple[float, np.ndarray]]:
    """(offset in seconds, mel) of each window of a file with `cfg.segment`, else [(0, file_to_mel)]."""
    if not cfg.segment:
        return [(0.0, file_to_mel(path, cfg))]
    return [(offset, clip_to_mel(y, cfg)) for offset, y in windows(path, cfg)]


# ---------------------------------------------------------------------------------------------
# log-mel


@functools.lru_cache(maxsize=16)
def _tables(cfg: AudioConfig) -> tuple[np.ndarray, scipy.sparse.csr_matrix, scipy.sparse.csr_matrix]:
    """Periodic Hann window and the Slaney mel filterbank for a config, built once per process.

    The filterbank is kept sparse (each FFT bin feeds at most two bands: about 2,000 non-zeros of
    128 x 1,025), and once more with every column doubled (4,000 non-zeros): applied to the FFT's
    complex output viewed as interleaved (re, im) float pairs and squared in place, it sums
    re^2 + im^2 inside the product instead of in two passes over a power array. Together 0.6 ms
    instead of 1.3 ms a 5 s clip (dense product over a separately built power array), measured
    with `python bench/preprocess_throughput.py`'s phase profile. The sums' order differs from
    the dense product's: about 0.02% of the float16 values move by one step (well inside the
    1e-3 dB guard against librosa); `preprocess.plan.FEATURES` records the change.
    """
    n = np.arange(cfg.n_fft)
    window = (0.5 - 0.5 * np.cos(2.0 * np.pi * n / cfg.n_fft)).astype(np.float32)
    basis = mel_filterbank(cfg.sr, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax)
    return window, scipy.sparse.csr_matrix(basis), scipy.sparse.csr_matrix(np.repeat(basis, 2, axis=1))


def warp_spectrum(power: np.ndarray, ratio: float) -> np.ndarray:
    """A power spectrogram `[frames, bins]` pitch-shifted by `ratio`: P'(f) = P(f / ratio).

    Moving energy along the frequency axis by linear interpolation is what a phase vocoder
    pitch shift does to the magnitudes; since only the power spectrum is kept, doing it here
    gives the same feature for under a millisecond instead of ~40 ms of librosa.effects.pitch_shift.
    """
    n_freq = power.shape[1]
    source = np.arange(n_freq) / ratio  # fractional source bin of every target bin
    low = np.floor(source).astype(np.intp)
    frac = (source - low).astype(np.float32)
    outside = low + 1 >= n_freq  # above the (shifted) Nyquist: nothing to take
    low = np.minimum(low, n_freq - 2)
    warped = power[:, low] * (1.0 - frac)
    warped += power[:, low + 1] * frac
    warped[:, outside] = 0.0
    return warped


def _centred(y: np.ndarray, n: int, half: int) -> np.ndarray:
    """`y` cut or zero-padded to `n` samples, plus `half` zeros each side (librosa's centring)."""
    padded = np.zeros(n + 2 * half, np.float32)
    keep = min(y.size, n)
    padded[half : half + keep] = y[:keep]
    return padded


def log_mel(y: np.ndarray, cfg: AudioConfig, pitch_ratio: float = 1.0) -> np.ndarray:
    """Log-mel spectrogram in dB, float32 `[n_mels, frames]`, centred frames as librosa."""
    return _log_mel_centred(_centred(np.asarray(y), y.size, cfg.n_fft // 2), cfg, pitch_ratio)


def _log_mel_centred(padded: np.ndarray, cfg: AudioConfig, pitch_ratio: float) -> np.ndarray:
    window, basis, pairs_basis = _tables(cfg)
    frames = np.lib.stride_tricks.sliding_window_view(padded, cfg.n_fft)[:: cfg.hop_length]
    # scipy's pocketfft runs float32 natively; numpy's float32 rfft is several times slower.
    # The window product is also the contiguous copy the FFT transforms in place.
    spectrum = scipy.fft.rfft(frames * window, axis=-1, overwrite_x=True)
    if pitch_ratio != 1.0:
        power = np.square(spectrum.real)
        power += np.square(spectrum.imag)
        mel = basis @ warp_spectrum(power, pitch_ratio).T
    else:
        pairs = spectrum.view(np.float32)  # [frames, 2 * bins]: re, im, re, im, ...
        np.square(pairs, out=pairs)
        mel = pairs_basis @ pairs.T
    db = 10.0 * np.log10(np.maximum(mel, _AMIN))
    if cfg.db_reference == "clip_max":
        db -= 10.0 * np.log10(max(float(mel.max()), _AMIN))
    if cfg.db_range > 0:
        np.maximum(db, db.max() - cfg.db_range, out=db)
    return db


def clip_to_mel(y: np.ndarray, cfg: AudioConfig, augment: Augmentation | None = None) -> np.ndarray:
    """Optional augmentation, pad or crop to `cfg.duration_s`, log-mel, float16."""
    ratio = 1.0
    if augment is not None:
        y, ratio = augment(y)
    # Padding/cropping and librosa's centring padding in one buffer: one copy of the clip.
    padded = _centred(y, cfg.n_samples, cfg.n_fft // 2)
    return _log_mel_centred(padded, cfg, ratio).astype(np.float16)


def file_to_mel(path: str | Path, cfg: AudioConfig) -> np.ndarray:
    """`load_clip` then `clip_to_mel`: the features of one file, as `predict` makes them."""
    return clip_to_mel(load_clip(path, cfg), cfg)


def array_to_mel(y: np.ndarray, sr: int, cfg: AudioConfig) -> np.ndarray:
    """The features of audio already in memory (`[samples]` or `[samples, channels]` at `sr` Hz,
    as soundfile reads it), made as `file_to_mel` makes a file's: mixed to mono, resampled with
    soxr, silence refused, trimmed, padded or cropped, log-mel. More channels than samples is
    librosa's `[channels, samples]` layout read the wrong way round: a `UsageError`."""
    y = np.asarray(y, dtype=np.float32)
    if y.ndim == 2 and y.shape[1] > y.shape[0]:
        raise UsageError(f"audio of shape {y.shape} would be {y.shape[1]} channels of {y.shape[0]} sample(s); "
                         "pass [samples, channels] as soundfile reads it, e.g. y.T for librosa's [channels, samples]")
    if y.ndim == 2:
        y = y.mean(axis=1)
    if y.ndim != 1 or y.size == 0:
        raise AudioError("no_audio", f"expected samples [n] or [n, channels], got shape {y.shape}")
    if not all_finite(y):
        raise AudioError("non_finite", "the audio contains NaN or Inf samples")
    if sr != cfg.sr:
        y = soxr.resample(y, sr, cfg.sr, quality="HQ").astype(np.float32, copy=False)
    return clip_to_mel(_trimmed(y, cfg), cfg)
