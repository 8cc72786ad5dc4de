"""shared.melscale against librosa: the same arrays, bit for bit, on generated configurations."""

from __future__ import annotations

import warnings

import librosa
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import melscale

SAMPLE_RATES = st.sampled_from([8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000, 96000]) | \
    st.integers(4000, 192000)


@st.composite
def filterbank_configs(draw):
    sr = draw(SAMPLE_RATES)
    n_fft = draw(st.sampled_from([128, 256, 400, 512, 1024, 2048, 4096]) | st.integers(16, 8192))
    n_mels = draw(st.integers(1, 256))
    nyquist = sr / 2
    fmin = draw(st.sampled_from([0.0, 20.0, 50.0]) | st.floats(0.0, nyquist * 0.9))
    fmax = draw(st.none() | st.floats(fmin + 1.0, nyquist) | st.just(nyquist))
    return sr, n_fft, n_mels, fmin, fmax


@settings(max_examples=400, deadline=None)
@given(filterbank_configs())
def test_filterbank_equals_librosa(config):
    sr, n_fft, n_mels, fmin, fmax = config
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # librosa warns about empty filters; the arrays still compare
        expected = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, dtype=np.float32)
    ours = melscale.mel_filterbank(sr, n_fft, n_mels, fmin, fmax)
    assert ours.dtype == expected.dtype and ours.shape == expected.shape
    np.testing.assert_array_equal(ours, expected)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(0.0, 100_000.0), min_size=0, max_size=50), st.floats(0.0, 100_000.0))
def test_scale_conversions_equal_librosa(hz, scalar):
    array = np.asarray(hz, dtype=np.float64)
    np.testing.assert_array_equal(melscale.hz_to_mel(array), librosa.hz_to_mel(array))
    assert melscale.hz_to_mel(scalar) == librosa.hz_to_mel(scalar)
    mels = librosa.hz_to_mel(array)
    np.testing.assert_array_equal(melscale.mel_to_hz(mels), librosa.mel_to_hz(mels))
    assert melscale.mel_to_hz(librosa.hz_to_mel(scalar)) == librosa.mel_to_hz(librosa.hz_to_mel(scalar))


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 300), st.floats(0.0, 5000.0), st.floats(5001.0, 96000.0))
def test_mel_frequencies_equal_librosa(n, fmin, fmax):
    np.testing.assert_array_equal(melscale.mel_frequencies(n, fmin, fmax),
                                  librosa.mel_frequencies(n, fmin=fmin, fmax=fmax))


def test_audio_tables_do_not_import_librosa():
    """The point of the module: a process making log-mels never imports librosa."""
    import subprocess
    import sys

    code = ("import sys; from shared import audio; from shared.config import AudioConfig; "
            "import numpy as np; audio.log_mel(np.ones(22050, np.float32), AudioConfig()); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('librosa', 'numba', 'sklearn', 'torch')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
