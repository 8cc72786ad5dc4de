"""The Slaney mel scale and filterbank, bit for bit as `librosa.filters.mel` builds them.

Written here because importing `librosa.filters` costs about 1.6 s in every process that builds
a filterbank (it pulls numba, scipy.signal and the rest of librosa), while the filterbank itself
is a millisecond of numpy: a preprocessing worker or a small run paid that import for one table.
`tests/shared/test_melscale.py` holds these functions equal to librosa's, array for array, on
generated configurations covering sample rates, FFT sizes, band counts and frequency limits.
"""

from __future__ import annotations

import numpy as np

_F_SP = 200.0 / 3  # Hz per mel below 1 kHz (the linear part)
_MIN_LOG_HZ = 1000.0  # where the logarithmic part starts
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(frequencies) -> np.ndarray:
    """Slaney mels of `frequencies` in Hz (librosa.hz_to_mel with htk=False)."""
    frequencies = np.asanyarray(frequencies)
    mels = frequencies / _F_SP
    if frequencies.ndim:
        log_t = frequencies >= _MIN_LOG_HZ
        mels[log_t] = _MIN_LOG_MEL + np.log(frequencies[log_t] / _MIN_LOG_HZ) / _LOGSTEP
    elif frequencies >= _MIN_LOG_HZ:
        mels = _MIN_LOG_MEL + np.log(frequencies / _MIN_LOG_HZ) / _LOGSTEP
    return mels


def mel_to_hz(mels) -> np.ndarray:
    """Hz of Slaney `mels` (librosa.mel_to_hz with htk=False)."""
    mels = np.asanyarray(mels)
    freqs = _F_SP * mels
    if mels.ndim:
        log_t = mels >= _MIN_LOG_MEL
        freqs[log_t] = _MIN_LOG_HZ * np.exp(_LOGSTEP * (mels[log_t] - _MIN_LOG_MEL))
    elif mels >= _MIN_LOG_MEL:
        freqs = _MIN_LOG_HZ * np.exp(_LOGSTEP * (mels - _MIN_LOG_MEL))
    return freqs


def mel_frequencies(n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """`n_mels` frequencies in Hz, evenly spaced in mels from `fmin` to `fmax` inclusive."""
    return mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels))


def mel_filterbank(sr: float, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: float | None = None) -> np.ndarray:
    """Slaney-normalised triangular filters, float32 `[n_mels, 1 + n_fft // 2]`
    (librosa.filters.mel with its defaults: htk=False, norm="slaney", dtype=float32)."""
    if fmax is None:
        fmax = float(sr) / 2
    weights = np.zeros((n_mels, 1 + n_fft // 2), dtype=np.float32)
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mel_f = mel_frequencies(n_mels + 2, fmin, fmax)
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels])
    weights *= enorm[:, np.newaxis]
    return weights
