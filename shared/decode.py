"""Decoding: any audio file -> mono float32 samples at a chosen rate, or a clear `AudioError`.

libsndfile (the `soundfile` wheel: wav/flac/ogg/mp3/aiff) first, else FFmpeg's decoders bundled
in PyAV, in-process (m4a, opus, 3gp, caf, ...), else an `ffmpeg` executable if one is on PATH;
then soxr resamples. `decode` reads a clip (up to a limit, in bounded blocks), `decode_stream`
a whole recording block by block. The features made from the samples are `shared/audio.py`'s.
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
import struct
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from shared.errors import MelshardError
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


def all_finite(y: np.ndarray) -> bool:
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
    if not all_finite(y):
        raise AudioError("non_finite", "the audio contains NaN or Inf samples")
    if rate != sr:
        # soxr's HQ setting is librosa.load's default resampler (res_type="soxr_hq").
        y = soxr.resample(y, rate, sr, quality="HQ").astype(np.float32, copy=False)
    return y


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
            if not all_finite(block):
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
