"""The one audio -> mel function: equal to librosa, decoding every supported input, bad input."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import soundfile as sf

from shared import decode as decoding
from shared.audio import clip_to_mel, file_to_mel, load_clip, log_mel, trim
from shared.config import AudioConfig
from shared.decode import AudioError, decode, ffmpeg_path
from tests.audio_fixtures import tone, write_truncated_wav


def _signal(sr: int, seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.zeros(sr // 10, np.float32), tone("mid", rng, sr, seconds), tone("chirp", rng, sr, 0.5)])
    return y.astype(np.float32)


@pytest.mark.parametrize("cfg", [
    AudioConfig(),
    AudioConfig(sr=8000, duration_s=1.0, n_fft=512, hop_length=128, n_mels=64, fmin=20.0, fmax=3800.0),
    AudioConfig(sr=16000, duration_s=2.0, n_fft=1024, hop_length=256, n_mels=80, db_reference="clip_max", db_range=0),
], ids=["seeds", "8k", "clip-max-no-clamp"])
def test_log_mel_matches_librosa_within_a_thousandth_of_a_db(cfg):
    y = librosa.util.fix_length(_signal(cfg.sr, 1.2), size=cfg.n_samples)
    power = librosa.feature.melspectrogram(
        y=y, sr=cfg.sr, n_fft=cfg.n_fft, hop_length=cfg.hop_length, n_mels=cfg.n_mels,
        fmin=cfg.fmin, fmax=cfg.fmax)
    ref = np.max if cfg.db_reference == "clip_max" else 1.0
    expected = librosa.power_to_db(power, ref=ref, top_db=cfg.db_range or None)
    ours = log_mel(y, cfg)
    assert ours.dtype == np.float32
    assert ours.shape == expected.shape == (cfg.n_mels, cfg.n_frames)
    assert np.abs(ours - expected).max() < 1e-3


def test_trim_matches_librosa():
    y = _signal(22050, 1.0)
    for top_db in (10, 20, 40):
        expected, _ = librosa.effects.trim(y, top_db=top_db)
        np.testing.assert_array_equal(trim(y, top_db), expected)


def test_clip_to_mel_pads_and_crops_to_the_configured_length():
    cfg = AudioConfig(sr=8000, duration_s=1.0, n_fft=256, hop_length=64, n_mels=32)
    short = clip_to_mel(np.full(100, 0.1, np.float32), cfg)
    long = clip_to_mel(_signal(8000, 3.0), cfg)
    assert short.shape == long.shape == (32, cfg.n_frames)
    assert short.dtype == long.dtype == np.float16


def test_pitch_warp_moves_a_tone_up_by_the_ratio():
    cfg = AudioConfig(sr=16000, duration_s=1.0, n_fft=1024, hop_length=256, n_mels=128)
    t = np.arange(cfg.n_samples) / cfg.sr
    y = (0.3 * np.sin(2 * np.pi * 500 * t)).astype(np.float32)
    up = (0.3 * np.sin(2 * np.pi * 500 * 1.25 * t)).astype(np.float32)
    warped = log_mel(y, cfg, pitch_ratio=1.25).mean(axis=1)
    assert np.argmax(warped) == np.argmax(log_mel(up, cfg).mean(axis=1))
    assert np.argmax(warped) > np.argmax(log_mel(y, cfg).mean(axis=1))


@pytest.mark.parametrize("subtype,ext", [
    ("PCM_U8", "wav"), ("PCM_16", "wav"), ("PCM_24", "wav"), ("PCM_32", "wav"),
    ("FLOAT", "wav"), ("DOUBLE", "wav"), ("PCM_16", "flac"), ("VORBIS", "ogg"), ("MPEG_LAYER_III", "mp3"),
])
def test_decode_formats_and_depths_to_mono_at_the_target_rate(tmp_path, subtype, ext):
    sr_in = 44100
    t = np.arange(sr_in) / sr_in
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 440 * t)], axis=1)
    path = tmp_path / f"clip.{ext}"
    sf.write(path, stereo, sr_in, subtype=subtype)
    y = decode(path, 22050)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(y.size - 22050) < 2300  # lossy codecs add a little padding
    assert 0.2 < np.abs(y).max() < 0.4


def test_many_channels_are_mixed_to_mono(tmp_path):
    y = np.tile(np.linspace(-0.5, 0.5, 8000, dtype=np.float32)[:, None], (1, 6))
    y[:, 3] = 0.0
    sf.write(tmp_path / "six.wav", y, 8000, subtype="FLOAT")
    mono = decode(tmp_path / "six.wav", 8000)
    np.testing.assert_allclose(mono, y.mean(axis=1), atol=1e-6)


@pytest.mark.parametrize("make,reason", [
    (lambda p: p.write_bytes(b""), "empty_file"),
    (lambda p: p.write_bytes(np.random.default_rng(0).bytes(5000)), "undecodable"),
    (write_truncated_wav, "truncated"),
    (lambda p: sf.write(p, np.array([0.1, np.nan, 0.2] * 1000, np.float32), 8000, subtype="FLOAT"), "non_finite"),
    (lambda p: sf.write(p, np.zeros(8000, np.float32), 8000), "silent"),
])
def test_bad_files_raise_a_specific_reason(tmp_path, make, reason):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(AudioError) as caught:
        load_clip(path, AudioConfig(sr=8000, duration_s=1.0))
    assert caught.value.reason == reason


def test_m4a_decodes_without_ffmpeg_and_a_broken_one_is_undecodable(tmp_path, monkeypatch):
    from bench.decode_formats import write_encoded

    monkeypatch.setattr(decoding, "ffmpeg_path", lambda: None)
    write_encoded(tmp_path / "voice.m4a", 0.3 * np.sin(np.arange(16000) / 5.0), 16000, "aac")
    y = decode(tmp_path / "voice.m4a", 16000)
    # AAC adds priming and pads to whole 1024-sample frames: at most 2048 samples more.
    assert 16000 <= y.size <= 16000 + 2048 and np.abs(y).max() > 0.2
    path = tmp_path / "broken.m4a"
    path.write_bytes(b"\0" * 100)
    with pytest.raises(AudioError) as caught:
        decode(path, 16000)
    assert caught.value.reason == "undecodable"
    assert "\n" not in caught.value.detail


@pytest.mark.skipif(ffmpeg_path() is None, reason="ffmpeg is not installed")
def test_ffmpeg_decodes_what_soundfile_cannot(tmp_path):
    import subprocess

    sf.write(tmp_path / "a.wav", 0.3 * np.sin(np.arange(16000) / 5.0), 16000)
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(tmp_path / "a.wav"), str(tmp_path / "a.m4a")], check=True)
    y = decode(tmp_path / "a.m4a", 16000)
    assert abs(y.size - 16000) < 2000 and np.abs(y).max() > 0.2


def test_long_clips_are_read_only_as_far_as_needed(tmp_path):
    sr = 8000
    sf.write(tmp_path / "long.wav", np.full(sr * 200, 0.1, np.float32), sr, subtype="PCM_16")
    y = decode(tmp_path / "long.wav", sr, max_seconds=60)
    assert y.size == 60 * sr


def test_file_to_mel_is_load_clip_then_clip_to_mel(tmp_path):
    cfg = AudioConfig(sr=16000, duration_s=1.0)
    sf.write(tmp_path / "a.wav", _signal(44100, 0.8), 44100)
    np.testing.assert_array_equal(file_to_mel(tmp_path / "a.wav", cfg),
                                  clip_to_mel(load_clip(tmp_path / "a.wav", cfg), cfg))


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT"])
def test_integer_pcm_decodes_to_exactly_libsndfiles_floats(tmp_path, subtype):
    stereo = np.random.default_rng(0).uniform(-1, 1, (4000, 2))
    sf.write(tmp_path / "x.wav", stereo, 16000, subtype=subtype)
    expected, _ = sf.read(tmp_path / "x.wav", dtype="float32")
    np.testing.assert_array_equal(decode(tmp_path / "x.wav", 16000), expected.mean(axis=1, dtype=np.float32))
