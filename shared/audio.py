"""The one audio -> log-mel function: decode, mix to mono, resample, trim, pad or crop, log-mel.

`preprocess` and `predict` both call `load_clip` then `clip_to_mel`, with the `AudioConfig`
recorded in the manifest and the checkpoint, so training and serving features cannot drift.

The log-mel is computed here rather than by `librosa.feature.melspectrogram` because librosa
rebuilds the mel filterbank on every call and runs its FFT in float64; with the tables cached
and the FFT in float32 a 5 s clip costs less than half as much (about 3 ms against 7 ms in
bench/preprocess_throughput.py's per-phase profile). `tests/shared/test_audio.py` holds
it to librosa's `melspectrogram` + `power_to_db` within 1e-3 dB.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import shutil
import struct
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import scipy.fft
import scipy.sparse
import soundfile as sf
import soxr

from shared.config import AudioConfig
from shared.errors import MelshardError, UsageError
from shared.melscale import mel_filterbank
from shared.native_stderr import native_chatter_dropped

# Formats libsndfile decodes itself (soundfile wheels ship a libsndfile with mp3 support).
SOUNDFILE_EXTENSIONS = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".au", ".snd", ".w64"}
)
# Formats decoded in-process by PyAV, whose wheels bundle FFmpeg's demuxers and decoders (so no
# system ffmpeg is needed); files libsndfile refuses are tried there too.
AV_EXTENSIONS = frozenset(
    {".m4a", ".m4b", ".aac", ".3gp", ".caf", ".wma", ".opus", ".webm", ".mp4", ".amr", ".ac3", ".mka",
     ".mpga", ".wv", ".ape", ".tta"}
)
AUDIO_EXTENSIONS = SOUNDFILE_EXTENSIONS | AV_EXTENSIONS

# The crop keeps only the start of a (trimmed) clip, so decoding hours of audio would only cost
# memory. Reading stops after this many seconds (or 4 clip lengths, if longer).
MAX_DECODE_S = 60.0
MAX_STREAM_S = 4 * 3600.0  # a segmented recording through the ffmpeg executable (the rare fallback)
_BLOCK_FRAMES = 1 << 20  # most clips decode in one read; long ones in bounded blocks
_AMIN = 1e-10  # power floor before log10, as librosa.power_to_db

# An augmentation takes a trimmed clip and returns (new clip, pitch ratio): pitch is applied to
# the power spectrum, see `warp_spectrum`.
Augmentation = Callable[[np.ndarray], "tuple[np.ndarray, float]"]


class AudioError(MelshardError):
    """A clip that cannot become a sample. `reason` is a short code for errors.csv."""

    def __init__(self, reason: str, detail: str):
        # Both fields are the exception's args: unpickling (a process pool sending it back)
        # calls AudioError(*args), which must rebuild the same error.
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


# ---------------------------------------------------------------------------------------------
# decoding


def ffmpeg_path() -> str | None:
    """The ffmpeg executable on PATH, or None."""
    return shutil.which("ffmpeg")


def _wav_truncation(path: Path, size: int) -> str | None:
    """Describe a RIFF/WAVE file whose data chunk claims more bytes than the file holds.

    libsndfile silently reads what is there, so a cut-off download would otherwise become a
    shorter clip without anyone noticing.
    """
    with path.open("rb") as handle:
        header = handle.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            return None
        offset = 12
        while offset + 8 <= size:
            handle.seek(offset)
            chunk_id, chunk_size = struct.unpack("<4sI", handle.read(8))
            if chunk_id == b"data":
                available = size - offset - 8
                if chunk_size > available and chunk_size != 0xFFFFFFFF:
                    return f"header declares {chunk_size} bytes of audio, file holds {available}"
                return None
            offset += 8 + chunk_size + (chunk_size & 1)
    return "no data chunk before the end of the file"


# libsndfile's own int -> float conversion is a scalar loop (about 0.7 ms for 5 s of 44.1 kHz
# PCM_16); reading integers and scaling them with numpy gives the same floats 5x faster.
_INTEGER_READS = {"PCM_16": ("int16", 1.0 / 32768), "PCM_24": ("int32", 1.0 / 2**31),
                  "PCM_32": ("int32", 1.0 / 2**31), "PCM_S8": ("int32", 1.0 / 2**31),
                  "PCM_U8": ("int32", 1.0 / 2**31)}


Blocks = Iterator[tuple[int, np.ndarray]]  # (the file's sample rate, mono float32 samples)


def _soundfile_blocks(path: Path) -> Blocks:
    """Decode with libsndfile block by block, mixing to mono as it goes (bounded memory).
    libmpg123's notes on a damaged or fake MP3 are kept off the terminal around each native call."""
    with native_chatter_dropped():
        handle = sf.SoundFile(str(path))
    with handle:
        rate = handle.samplerate
        dtype, scale = _INTEGER_READS.get(handle.subtype, ("float32", None))
        quiet = native_chatter_dropped if handle.format == "MPEG" else contextlib.nullcontext  # only mpg123 talks
        while True:
            with quiet():
                block = handle.read(_BLOCK_FRAMES, dtype=dtype, always_2d=True)
            if not len(block):
                break
            mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
            yield rate, (mono.astype(np.float32) * np.float32(scale) if scale else mono)


def _take(blocks: Blocks, max_frames_at: Callable[[int], int]) -> tuple[np.ndarray, int]:
    """The first `max_frames_at(rate)` samples of `blocks`, and the rate; the rest is never decoded."""
    parts: list[np.ndarray] = []
    rate = read = 0
    limit = None
    try:
        for rate, block in blocks:
            limit = max_frames_at(rate) if limit is None else limit
            parts.append(block[: limit - read])
            read += parts[-1].size
            if read >= limit:
                break
    finally:
        blocks.close()  # closes the file now, not when the generator is collected
    y = np.concatenate(parts) if len(parts) > 1 else parts[0] if parts else np.zeros(0, np.float32)
    return y, rate


def _read_soundfile(path: Path, max_frames_at: Callable[[int], int]) -> tuple[np.ndarray, int]:
    return _take(_soundfile_blocks(path), max_frames_at)


class _CannotOpen(AudioError):
    """PyAV cannot open the file or has no decoder for its codec: the one failure for which the
    ffmpeg executable (possibly a newer FFmpeg) is tried. A file PyAV opens but fails to decode
    is undecodable everywhere, so shards do not depend on whether ffmpeg is installed."""


# FFmpeg sample formats (packed or planar) -> numpy's scale to [-1, 1) and zero level; these are
# the factors libsndfile and _INTEGER_READS use, so PCM gives the same floats on both paths.
_AV_SCALES = {"u8": (1.0 / 128, 128), "s16": (1.0 / 32768, 0), "s32": (1.0 / 2**31, 0),
              "s64": (1.0 / 2**63, 0), "flt": (None, 0), "dbl": (None, 0)}


def _one_line(exc: BaseException) -> str:
    """An exception as one line without the file's path (errors.csv has the path already)."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


def _frame_to_mono(frame) -> np.ndarray:
    """One decoded PyAV frame as mono float32: channels mixed by their mean, as _read_soundfile."""
    name = frame.format.name.rstrip("p")  # "fltp" is planar "flt"
    scale, zero = _AV_SCALES.get(name, (None, None))
    if zero is None:
        raise AudioError("undecodable", f"unsupported sample format {frame.format.name}")
    data = frame.to_ndarray()
    # Planar frames come as [channels, samples]; packed ones as [1, samples * channels].
    block = data.T if frame.format.is_planar else data.reshape(frame.samples, -1)
    if zero:
        block = block.astype(np.float32) - np.float32(zero)
    if block.shape[1] > 1:
        mono = block.mean(axis=1, dtype=np.float32)
    else:
        mono = block[:, 0].astype(np.float32, copy=False)
    return mono * np.float32(scale) if scale else mono


def _av_blocks(path: Path) -> Blocks:
    """Decode the first audio stream with PyAV frame by frame, mixing to mono as it goes.

    Raises _CannotOpen when FFmpeg cannot open the file or has no decoder for it, and
    AudioError("undecodable") for anything else FFmpeg rejects.
    """
    import av  # here, not at the top: a corpus of WAV files never pays for loading FFmpeg

    try:
        # An absolute path, and the file protocol only: a name like "pipe:1.m4a" or a playlist
        # inside a file can never make FFmpeg open anything but local files.
        container = av.open(str(path.absolute()), options={"protocol_whitelist": "file"})
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise _CannotOpen("undecodable", f"av: {_one_line(exc)}") from None
    with container:
        if not container.streams.audio:
            raise AudioError("undecodable", f"no audio stream in the {container.format.name} container")
        stream = container.streams.audio[0]
        try:
            stream.codec_context.open(strict=False)  # a codec the wheel has no decoder for fails here
        except (av.FFmpegError, ValueError) as exc:
            raise _CannotOpen("undecodable", f"av: no decoder for {stream.codec_context.name}: "
                                             f"{_one_line(exc)}") from None
        rate = 0
        try:
            for frame in container.decode(stream):
                if not rate:
                    rate = frame.sample_rate
                elif frame.sample_rate != rate:
                    raise AudioError("undecodable", f"the sample rate changes from {rate} to "
                                                    f"{frame.sample_rate} Hz mid-stream")
                yield rate, _frame_to_mono(frame)
        except (av.FFmpegError, ValueError, OSError) as exc:
            raise AudioError("undecodable", f"av ({stream.codec_context.name}): {_one_line(exc)}") from None


def _read_av(path: Path, max_frames_at: Callable[[int], int]) -> tuple[np.ndarray, int]:
    """PyAV's decoding of the first `max_frames_at(rate)` samples (the rest is never demuxed)."""
    return _take(_av_blocks(path), max_frames_at)


def _read_ffmpeg(path: Path, sr: int, seconds: float) -> np.ndarray:
    """Decode anything ffmpeg reads to mono float32 at `sr`. Arguments never pass a shell."""
    command = [
        ffmpeg_path() or "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error",
        "-i", str(path.resolve()), "-t", f"{seconds:.3f}", "-vn",
        "-ac", "1", "-ar", str(sr), "-f", "f32le", "pipe:1",
    ]
    try:
        result = subprocess.run(command, capture_output=True, timeout=300, check=False)
    except subprocess.TimeoutExpired:
        raise AudioError("undecodable", "ffmpeg took longer than 300 s") from None
    if result.returncode != 0:
        message = result.stderr.decode("utf-8", "replace").strip().splitlines()
        raise AudioError("undecodable", f"ffmpeg: {message[-1] if message else 'failed'}")
    return np.frombuffer(result.stdout, dtype="<f4").astype(np.float32)


def _read_with_ffmpeg_libraries(path: Path, sr: int, max_seconds: float,
                                tried: str | None = None) -> tuple[np.ndarray, int]:
    """PyAV, then the ffmpeg executable for a file PyAV cannot open (if ffmpeg is on PATH).

    `tried` says why libsndfile refused the file, for the error's detail.
    """
    try:
        y, rate = _read_av(path, lambda rate: int(rate * max_seconds))
    except _CannotOpen as exc:
        if ffmpeg_path() is None:
            raise AudioError("undecodable", f"{tried}; {exc.detail}" if tried else exc.detail) from None
        return _read_ffmpeg(path, sr, max_seconds), sr
    if tried and y.size == 0:
        # FFmpeg picks a demuxer by extension when nothing else matches (text named .flac opens
        # as an empty FLAC stream): libsndfile's refusal is the real story.
        raise AudioError("undecodable", f"{tried}; av: no audio frame decodes from it")
    return y, rate


def _refused(path: Path, exc: BaseException) -> str:
    """Why libsndfile refused `path`, for errors.csv. Its MP3 reader reports a file that is not
    an MPEG stream as 'File does not exist or is not a regular file (possibly a pipe?)': the file
    was opened and read already (`_checked`), so the real reason is its content."""
    text = _one_line(exc)
    if "does not exist or is not a regular file" in text and path.is_file():
        text = f"unrecognised format (not {path.suffix.lstrip('.').upper() or 'audio'} data)"
    return f"soundfile: {text}"


def _finite(y: np.ndarray) -> bool:
    """No NaN or Inf in `y`: its float32 extremes carry both (a float64 sum is 4x slower)."""
    return y.size == 0 or bool(np.isfinite(y.max()) and np.isfinite(y.min()))


def _checked(path: Path) -> str:
    """The file's lower-case extension, once it is known to be readable, non-empty and (for a
    WAV) not cut short."""
    try:
        size = path.stat().st_size
        with path.open("rb"):
            pass
    except OSError as exc:
        raise AudioError("unreadable", exc.strerror or str(exc)) from None
    if size == 0:
        raise AudioError("empty_file", "the file has 0 bytes")
    ext = path.suffix.lower()
    problem = _wav_truncation(path, size) if ext in (".wav", ".wave") else None
    if problem:
        raise AudioError("truncated", problem)
    return ext


def decode(path: str | Path, sr: int, max_seconds: float = MAX_DECODE_S) -> np.ndarray:
    """Decode a file to mono float32 at `sr`, reading at most `max_seconds` of it.

    libsndfile reads its own formats; everything else (and any file libsndfile refuses) goes to
    PyAV, in-process; the ffmpeg executable is tried only for a file PyAV cannot open, and only
    if it is on PATH. Raises AudioError with reason unreadable, empty_file, truncated,
    undecodable, no_audio or non_finite.
    """
    path = Path(path)
    ext = _checked(path)
    if ext in SOUNDFILE_EXTENSIONS:
        try:
            y, rate = _read_soundfile(path, lambda rate: int(rate * max_seconds))
        except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
            # e.g. a WAV holding a codec libsndfile lacks: FFmpeg's decoders may know it.
            y, rate = _read_with_ffmpeg_libraries(path, sr, max_seconds, _refused(path, exc))
    else:
        y, rate = _read_with_ffmpeg_libraries(path, sr, max_seconds)
    if y.size == 0:
        raise AudioError("no_audio", "the file decodes to 0 samples")
    if not _finite(y):
        raise AudioError("non_finite", "the audio contains NaN or Inf samples")
    if rate != sr:
        # soxr's HQ setting is librosa.load's default resampler (res_type="soxr_hq").
        y = soxr.resample(y, rate, sr, quality="HQ").astype(np.float32, copy=False)
    return y


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


def recording_seconds(path: str | Path) -> float | None:
    """A recording's length from its header (libsndfile's frame count or the container's
    duration), without decoding it; None when the file does not say."""
    try:
        with native_chatter_dropped():
            return float(sf.info(str(path)).duration)
    except (sf.LibsndfileError, RuntimeError, ValueError):
        pass
    try:
        import av

        with av.open(str(Path(path).absolute()), options={"protocol_whitelist": "file"}) as container:
            return container.duration / av.time_base if container.duration else None
    except (av.FFmpegError, ValueError, OSError):
        return None


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


def _started(blocks: Blocks) -> Blocks:
    """`blocks` run up to their first block, so that a file that cannot be opened fails here."""
    first = next(blocks, None)
    return itertools.chain([first] if first is not None else [], blocks)


def decode_stream(path: str | Path, sr: int) -> Iterator[np.ndarray]:
    """A whole recording as mono float32 blocks at `sr`, in bounded memory (about a second of
    audio per block): the reader `decode` picks, resampled by one soxr stream, which gives the
    same samples as resampling the whole array. Raises AudioError as `decode` does."""
    path = Path(path)
    ext = _checked(path)
    blocks, tried = None, None
    if ext in SOUNDFILE_EXTENSIONS:
        try:
            blocks = _started(_soundfile_blocks(path))
        except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
            tried = _refused(path, exc)
    if blocks is None:
        try:
            blocks = _started(_av_blocks(path))
        except _CannotOpen as exc:
            if ffmpeg_path() is None:
                raise AudioError("undecodable", f"{tried}; {exc.detail}" if tried else exc.detail) from None
            blocks = iter([(sr, _read_ffmpeg(path, sr, MAX_STREAM_S))])
    resampler, decoded = None, 0
    try:
        for rate, block in blocks:
            if not _finite(block):
                raise AudioError("non_finite", "the audio contains NaN or Inf samples")
            decoded += block.size
            if rate != sr:
                resampler = resampler or soxr.ResampleStream(rate, sr, 1, dtype="float32", quality="HQ")
                block = resampler.resample_chunk(block)  # may hold all of a short file back until `last`
            if block.size:
                yield block
        if resampler is not None and decoded:
            tail = resampler.resample_chunk(np.zeros(0, np.float32), last=True)
            if tail.size:
                yield tail
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AudioError("undecodable", f"soundfile: {_one_line(exc)}") from None
    finally:
        if hasattr(blocks, "close"):
            blocks.close()
    if decoded == 0:
        raise AudioError("undecodable" if tried else "no_audio",
                         f"{tried}; av: no audio frame decodes from it" if tried else "the file decodes to 0 samples")


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
    if not _finite(y):
        raise AudioError("non_finite", "the audio contains NaN or Inf samples")
    if sr != cfg.sr:
        y = soxr.resample(y, sr, cfg.sr, quality="HQ").astype(np.float32, copy=False)
    return clip_to_mel(_trimmed(y, cfg), cfg)
