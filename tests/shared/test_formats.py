"""Compressed formats decode in-process through PyAV (FFmpeg's decoders in the `av` wheel), with
no ffmpeg executable: right length, rate and pitch; the same floats as libsndfile for the same
PCM; bounded reads of long files; one-line `undecodable` errors for broken files; the ffmpeg
executable only for files PyAV cannot open."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from bench.decode_formats import write_encoded
from shared import decode as audio
from shared.audio import clip_to_mel, file_to_mel, load_clip
from shared.config import AudioConfig
from shared.decode import AudioError, decode

SR_IN = 44100
SR_OUT = 16000
SECONDS = 1.5


@pytest.fixture(autouse=True)
def no_ffmpeg(monkeypatch):
    """As on a machine without ffmpeg, even where one is installed."""
    monkeypatch.setattr(audio, "ffmpeg_path", lambda: None)


def _has_encoder(codec: str) -> bool:
    try:
        av.Codec(codec, "w")
    except Exception:  # noqa: BLE001 - av raises different errors for unknown codecs across versions
        return False
    return True


def _encode(path: Path, y: np.ndarray, codec: str, rate: int | None = None) -> Path:
    """`y` at SR_IN encoded with `codec` into `path`, or the test skipped if the wheel lacks it."""
    if not _has_encoder(codec):
        pytest.skip(f"the installed av wheel has no {codec} encoder")
    write_encoded(path, y, SR_IN, codec, rate)
    return path


def _tones(*hz: float, seconds: float = SECONDS, sr: int = SR_IN, level: float = 0.4) -> np.ndarray:
    """One sine per channel: `[n]` for one frequency, `[n, channels]` for several."""
    t = np.arange(int(sr * seconds)) / sr
    channels = [level * np.sin(2 * np.pi * f * t) for f in hz]
    return (channels[0] if len(channels) == 1 else np.stack(channels, axis=1)).astype(np.float32)


def _peaks(y: np.ndarray, sr: int, count: int) -> list[float]:
    """The `count` strongest frequencies of `y` in Hz (1 Hz bins), strongest first."""
    spectrum = np.abs(np.fft.rfft(y * np.hanning(y.size), n=max(sr, y.size)))
    freqs = np.fft.rfftfreq(max(sr, y.size), 1.0 / sr)
    found = []
    for _ in range(count):
        at = int(spectrum.argmax())
        found.append(float(freqs[at]))
        spectrum[np.abs(freqs - freqs[at]) < 50] = 0  # the peak's skirt is not a second tone
    return found


def _three_gp_codec() -> str:
    return "libopencore_amrnb" if _has_encoder("libopencore_amrnb") else "aac"


# name, encoder, the rate the codec needs, tones (one per channel)
FORMATS = [
    ("speech.m4a", "aac", None, (1000.0, 1500.0)),
    ("speech.opus", "libopus", 48000, (1000.0,)),
    ("speech.3gp", _three_gp_codec(), 8000 if _three_gp_codec() != "aac" else None, (1000.0,)),
    ("speech.caf", "alac", None, (1000.0, 1500.0)),
    ("speech.mp3", "libmp3lame", None, (1000.0, 1500.0)),
    ("speech.webm", "libopus", 48000, (1000.0, 1500.0)),
    ("speech.aac", "aac", None, (1000.0,)),
]


@pytest.mark.parametrize("name,codec,rate,hz", FORMATS, ids=[f[0].split(".")[1] for f in FORMATS])
def test_compressed_formats_decode_to_the_right_length_rate_and_pitch(tmp_path, name, codec, rate, hz):
    path = _encode(tmp_path / name, _tones(*hz), codec, rate)
    y = decode(path, SR_OUT)
    assert y.dtype == np.float32 and np.isfinite(y).all()
    # Codecs add priming and pad to whole frames: AAC about 33 ms, AMR 20 ms, Opus and ALAC none.
    assert abs(y.size / SR_OUT - SECONDS) <= 0.05, y.size / SR_OUT
    # The tones land at their frequencies after resampling to 16 kHz, so the rate is right; two
    # channels are mixed by their mean, so both tones are there at about half level each.
    found = _peaks(y, SR_OUT, len(hz))
    assert sorted(found) == pytest.approx(sorted(hz), abs=3.0), found
    level = 0.4 / len(hz)
    middle = y[SR_OUT // 10 : -SR_OUT // 10]  # away from codec start-up and the cut at the end
    assert np.sqrt(np.mean(middle**2)) == pytest.approx(level * np.sqrt(len(hz) / 2), rel=0.2)


def test_load_clip_and_file_to_mel_read_an_m4a(tmp_path):
    cfg = AudioConfig(sr=SR_OUT, duration_s=1.0, n_fft=512, hop_length=128, n_mels=40)
    path = _encode(tmp_path / "voice.m4a", _tones(1000.0, 1500.0), "aac")
    clip = load_clip(path, cfg)
    assert abs(clip.size / SR_OUT - SECONDS) <= 0.05
    mel = file_to_mel(path, cfg)
    assert mel.shape == (40, 1 + cfg.n_samples // 128) and np.isfinite(mel).all()
    np.testing.assert_array_equal(mel, clip_to_mel(clip, cfg))
    # Close to the features of the lossless original (AAC at its default bit rate).
    sf.write(tmp_path / "voice.wav", _tones(1000.0, 1500.0), SR_IN, subtype="FLOAT")
    original = file_to_mel(tmp_path / "voice.wav", cfg).astype(np.float32)
    assert np.median(np.abs(mel.astype(np.float32) - original)) < 1.0


@pytest.mark.parametrize("suffix,subtype,channels", [(".wav", "PCM_16", 2), (".flac", "PCM_24", 1),
                                                     (".wav", "FLOAT", 3)])
def test_pyav_and_soundfile_give_the_same_floats_for_the_same_pcm(tmp_path, suffix, subtype, channels):
    rng = np.random.default_rng(0)
    pcm = np.clip(0.3 * rng.standard_normal((SR_OUT, channels)), -1, 1)
    path = tmp_path / f"same{suffix}"
    sf.write(path, pcm, SR_OUT, subtype=subtype)
    everything = lambda rate: 1 << 40
    by_soundfile, rate_sf = audio._read_soundfile(path, everything)
    by_av, rate_av = audio._read_av(path, everything)
    assert rate_sf == rate_av == SR_OUT and by_av.dtype == np.float32
    assert by_av.shape == by_soundfile.shape == (SR_OUT,)
    # Same integer scales and the same mean over channels: equal to float32 rounding.
    assert np.abs(by_av - by_soundfile).max() <= 1e-6


def test_a_long_file_is_decoded_only_up_to_the_limit(tmp_path, monkeypatch):
    sr = 8000
    ten_minutes = np.tile(_tones(440.0, seconds=1.0, sr=sr), 600)
    path = tmp_path / "lecture.mka"
    write_encoded(path, ten_minutes, sr, "pcm_s16le")  # lossless and fast to write
    assert audio._read_av(path, lambda rate: 1 << 40)[0].size == 600 * sr

    converted = []
    frame_to_mono = audio._frame_to_mono

    def counting(frame):
        converted.append(frame.samples)
        return frame_to_mono(frame)

    monkeypatch.setattr(audio, "_frame_to_mono", counting)
    y = decode(path, sr, max_seconds=60)
    assert y.size == 60 * sr
    # Decoding stopped at the limit: at most one frame beyond it was decoded, not 9 more minutes.
    assert sum(converted) - 60 * sr < max(converted)


def _broken(tmp_path: Path, name: str, damage) -> Path:
    good = _encode(tmp_path / f"good_{name}", _tones(1000.0, 1500.0), "aac")
    path = tmp_path / name
    path.write_bytes(damage(good.read_bytes()))
    return path


def _with_moov_first(path: Path) -> None:
    """An m4a with its index before the audio (as streamed files are), so a cut keeps the index."""
    y = _tones(1000.0)
    with av.open(str(path), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream("aac", rate=SR_IN, layout="mono")
        frame = av.AudioFrame.from_ndarray(y[None, :], format="flt", layout="mono")
        frame.sample_rate = SR_IN
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def test_broken_m4a_files_are_undecodable_in_one_line(tmp_path):
    random_bytes = tmp_path / "random.m4a"
    random_bytes.write_bytes(np.random.default_rng(0).bytes(5000))
    cut_before_index = _broken(tmp_path, "cut.m4a", lambda data: data[: len(data) // 2])
    _with_moov_first(tmp_path / "streamed.m4a")
    data = (tmp_path / "streamed.m4a").read_bytes()
    (tmp_path / "streamed_cut.m4a").write_bytes(data[: len(data) * 2 // 3])
    for path in (random_bytes, cut_before_index, tmp_path / "streamed_cut.m4a"):
        with pytest.raises(AudioError) as caught:
            decode(path, SR_OUT)
        assert caught.value.reason == "undecodable", path.name
        assert "\n" not in str(caught.value) and str(path) not in str(caught.value)


def test_a_file_without_an_audio_stream_is_undecodable(tmp_path):
    path = tmp_path / "video.mp4"
    if not _has_encoder("mpeg4"):
        pytest.skip("the installed av wheel has no mpeg4 encoder")
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width = stream.height = 32
        for _ in range(3):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")))
        out.mux(stream.encode(None))
    with pytest.raises(AudioError) as caught:
        decode(path, SR_OUT)
    assert caught.value.reason == "undecodable" and "no audio stream" in caught.value.detail


@pytest.mark.parametrize("name,codec,rate", [("x.m4a", "aac", None), ("x.opus", "libopus", 48000),
                                             ("x.caf", "alac", None), ("x.webm", "libopus", 48000)])
def test_damaged_compressed_files_never_raise_anything_but_audio_error(tmp_path, name, codec, rate):
    good = _encode(tmp_path / name, _tones(1000.0, 1500.0), codec, rate).read_bytes()
    rng = np.random.default_rng(1)
    for attempt in range(6):
        data = bytearray(good)
        if attempt % 2:
            data = data[: int(rng.integers(len(data) // 8, len(data)))]
        for _ in range(20):  # flip bytes after the header, where the audio is
            data[int(rng.integers(len(data) // 4, len(data)))] = int(rng.integers(256))
        path = tmp_path / f"damaged{attempt}{Path(name).suffix}"
        path.write_bytes(bytes(data))
        try:
            y = decode(path, SR_OUT)
        except AudioError as exc:
            assert exc.reason in ("undecodable", "no_audio", "non_finite"), exc
        else:
            assert y.dtype == np.float32 and np.isfinite(y).all()


def _fake_ffmpeg(folder: Path) -> Path:
    """An `ffmpeg` on PATH that records its arguments and prints 1 s of 0.25 as f32le at 8 kHz."""
    folder.mkdir()
    script = folder / "ffmpeg"
    script.write_text(f"#!{sys.executable}\nimport sys\n"
                      f"open({str(folder / 'called')!r}, 'w').write(' '.join(sys.argv))\n"
                      "sys.stdout.buffer.write(b'\\x00\\x00\\x80\\x3e' * 8000)\n")
    script.chmod(0o755)
    return folder / "called"


def test_the_ffmpeg_executable_is_tried_only_for_files_pyav_cannot_open(tmp_path, monkeypatch):
    monkeypatch.undo()  # the real ffmpeg_path, which finds the fake one first on PATH
    called = _fake_ffmpeg(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    unknown = tmp_path / "unknown.m4a"
    unknown.write_bytes(np.random.default_rng(0).bytes(5000))
    y = decode(unknown, 8000)
    np.testing.assert_array_equal(y, np.full(8000, 0.25, np.float32))
    assert "-ar 8000" in called.read_text()

    # A file PyAV opens but cannot decode is undecodable with or without ffmpeg.
    called.unlink()
    _with_moov_first(tmp_path / "streamed.m4a")
    data = (tmp_path / "streamed.m4a").read_bytes()
    (tmp_path / "cut.m4a").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(AudioError, match="undecodable"):
        decode(tmp_path / "cut.m4a", 8000)
    assert not called.exists()


def test_a_file_named_like_an_ffmpeg_protocol_is_read_as_a_local_file(tmp_path, monkeypatch):
    _encode(tmp_path / "pipe:0.m4a", _tones(1000.0), "aac")
    monkeypatch.chdir(tmp_path)  # a relative "pipe:0..." would otherwise be FFmpeg's stdin
    y = decode(Path("pipe:0.m4a"), SR_OUT)
    assert abs(y.size / SR_OUT - SECONDS) <= 0.05
