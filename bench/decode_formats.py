"""Decoding cost per format: PyAV in-process, libsndfile, and the ffmpeg executable.

Generates one 7-second clip per format (a stereo chord with a little noise at 44.1 kHz; AMR-NB
in 3gp is 8 kHz mono, Opus is 48 kHz, as those codecs require), then times, per file:
  - soundfile: `shared.decode._read_soundfile`, where libsndfile reads the format at all;
  - PyAV: `shared.decode._read_av`, FFmpeg's decoders bundled in the `av` wheel, in-process;
  - ffmpeg: `shared.decode._read_ffmpeg`, one subprocess per file (only if `ffmpeg` is on PATH);
  - decode(): what preprocessing pays, the reader `decode` picks plus soxr to 22,050 Hz.
Each figure is the median of --repeat calls after one warm-up call, in ms per file. The one-off
cost of `import av` in a fresh worker is printed too. PyAV's WAV time is mostly `av.open`
(FFmpeg's WAV demuxer reads into the data while probing), one reason libsndfile stays first for
the formats it reads.

    python bench/decode_formats.py [--repeat 15] [--work /tmp/melshard-decode]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine
from shared import decode as audio

SR = 44100
SECONDS = 7.0
# extension -> (encoder in the av wheel, sample rate it needs or None, mono only)
ENCODED = {
    ".mp3": ("libmp3lame", None, False),
    ".m4a": ("aac", None, False),
    ".opus": ("libopus", 48000, False),
    ".3gp": ("libopencore_amrnb", 8000, True),
    ".caf": ("alac", None, False),
}


def write_encoded(path: Path, y: np.ndarray, sr: int, codec: str, rate: int | None = None) -> None:
    """Encode float samples `[n]` or `[n, 2]` at `sr` with PyAV's `codec` into `path`.

    The container follows the extension (.m4a -> ipod, .opus -> ogg/opus, .3gp, .caf, .webm,
    .mka, ...); the samples are converted to the encoder's sample format and to `rate` (if
    given) by libswresample. Raises av.FFmpegError if the wheel lacks the encoder.
    """
    import av

    y = np.asarray(y, np.float32)
    y = y[:, None] if y.ndim == 1 else y
    layout = "mono" if y.shape[1] == 1 else "stereo"
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate or sr, layout=layout)
        context = stream.codec_context
        context.open()  # now the encoder's sample format and frame size are known
        # Encoders with no frame size of their own (PCM) get 4096-sample packets, as ffmpeg writes
        # them, rather than one packet holding the whole file.
        resampler = av.AudioResampler(format=context.format.name, layout=layout, rate=context.sample_rate,
                                      frame_size=context.frame_size or 4096)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(y.reshape(1, -1)), format="flt", layout=layout)
        frame.sample_rate = sr
        for piece in resampler.resample(frame) + resampler.resample(None):  # None flushes
            out.mux(stream.encode(piece))
        out.mux(stream.encode(None))


def signal(sr: int, seconds: float, seed: int = 0) -> np.ndarray:
    """A stereo chord with a little noise: content every codec has to work at."""
    t = np.arange(int(sr * seconds)) / sr
    rng = np.random.default_rng(seed)
    left = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 1320 * t)
    right = 0.3 * np.sin(2 * np.pi * 660 * t) + 0.1 * np.sin(2 * np.pi * 2200 * t)
    noise = 0.01 * rng.standard_normal((t.size, 2))
    return (np.stack([left, right], axis=1) + noise).astype(np.float32)


def make_files(work: Path) -> dict[str, Path]:
    """One 7 s file per format; a format whose encoder the wheel lacks is left out."""
    work.mkdir(parents=True, exist_ok=True)
    y = signal(SR, SECONDS)
    files = {}
    for ext in (".wav", ".flac"):
        sf.write(work / f"clip{ext}", y, SR, subtype="PCM_16")
        files[ext] = work / f"clip{ext}"
    for ext, (codec, rate, mono) in ENCODED.items():
        try:
            write_encoded(work / f"clip{ext}", y.mean(axis=1) if mono else y, SR, codec, rate)
        except Exception as exc:  # noqa: BLE001 - any missing encoder only drops its row
            print(f"{ext}: cannot encode with {codec} ({exc}); left out")
            continue
        files[ext] = work / f"clip{ext}"
    return files


def median_ms(call: Callable[[], object], repeat: int) -> float:
    """Median wall time of `call` over `repeat` runs after one warm-up run, in ms."""
    call()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def timed(call: Callable[[], object], repeat: int) -> str:
    """`median_ms` as a table cell, or why the reader cannot decode the file."""
    try:
        return f"{median_ms(call, repeat):.1f}"
    except audio.AudioError as exc:
        return f"fails ({exc.reason})"
    except RuntimeError:  # sf.LibsndfileError: libsndfile does not know the format
        return "cannot read"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--work", default="/tmp/melshard-decode")
    args = parser.parse_args()

    start = time.perf_counter()
    import av  # first import: what each preprocessing worker pays once, if it meets such a file

    import_ms = 1000 * (time.perf_counter() - start)
    files = make_files(Path(args.work))

    print(machine())
    print(f"PyAV {av.__version__} (FFmpeg {av.ffmpeg_version_info}); first `import av`: {import_ms:.0f} ms; "
          f"ffmpeg executable: {audio.ffmpeg_path() or 'not installed'}")
    print(f"ms per {SECONDS:.0f} s file, median of {args.repeat}\n")
    print("| format | KB | soundfile | PyAV | ffmpeg subprocess | decode() to 22,050 Hz |")
    print("|---|---:|---:|---:|---:|---:|")
    for ext, path in files.items():
        print(row(ext, path, args.repeat))


def row(ext: str, path: Path, repeat: int) -> str:
    """One table row: every reader's time on one file."""

    def everything(rate: int) -> int:  # whole 7 s files
        return 1 << 40

    soundfile_ms = timed(lambda: audio._read_soundfile(path, everything), repeat)
    av_ms = timed(lambda: audio._read_av(path, everything), repeat)
    ffmpeg_ms = (timed(lambda: audio._read_ffmpeg(path, SR, SECONDS + 1), repeat)
                 if audio.ffmpeg_path() else "not installed")
    decode_ms = timed(lambda: audio.decode(path, 22050), repeat)
    return f"| {ext[1:]} | {path.stat().st_size / 1024:.0f} | {soundfile_ms} | {av_ms} | {ffmpeg_ms} | {decode_ms} |"

if __name__ == "__main__":
    main()
