"""How the six FSDD speakers' recordings differ: level, spectral balance, trimming, word endings.

The figures behind the choices in `bench/configs/fsdd_*.toml` and the analysis in
BENCHMARKS.md, per speaker (optionally for one digit):

- peak level (dBFS) and duration;
- seconds that trimming removes at 30 and at 50 dB below the clip's peak (`shared.audio.trim`,
  the preprocessor's own function);
- the tail: seconds at the end of the file more than 30 dB below the peak (a 20 ms moving
  energy average), where quiet word endings such as the /ks/ of "six" live;
- the share of energy at 3-4 kHz (Welch's method, per clip, averaged), the microphone's
  colouring more than the voice.

    python bench/fsdd_recordings.py [--digit 6]
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import welch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import FSDD, machine  # noqa: E402
from bench.fsdd import SPEAKERS  # noqa: E402
from shared.audio import trim  # noqa: E402


def measure(path: Path) -> dict[str, float]:
    y, sr = sf.read(path, dtype="float32", always_2d=True)
    y = y.mean(axis=1)
    energy = np.convolve(y.astype(np.float64) ** 2, np.ones(sr // 50) / (sr // 50), mode="same")
    loud = np.flatnonzero(10 * np.log10(energy / energy.max() + 1e-20) > -30)
    frequencies, power = welch(y, sr, nperseg=256)
    return {
        "seconds": y.size / sr,
        "peak_dbfs": 20 * np.log10(np.abs(y).max() + 1e-12),
        "trim30": (y.size - trim(y, 30.0).size) / sr,
        "trim50": (y.size - trim(y, 50.0).size) / sr,
        "tail": (y.size - 1 - loud[-1]) / sr,
        "high_db": 10 * np.log10(power[frequencies >= 3000].sum() / power.sum() + 1e-20),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--digit", default=None, help="only this digit's recordings (default: all)")
    args = parser.parse_args()
    if not FSDD.is_dir():
        sys.exit(f"{FSDD} is absent: this benchmark needs the FSDD recordings")
    print(f"# fsdd recordings: {machine()}")
    print("# command: python bench/fsdd_recordings.py" + (f" --digit {args.digit}" if args.digit else ""))
    figures: dict[str, list[dict[str, float]]] = collections.defaultdict(list)
    for path in sorted(FSDD.glob("*.wav")):
        digit, speaker, _ = path.stem.split("_")
        if args.digit is None or digit == args.digit:
            figures[speaker].append(measure(path))
    print("| speaker | clips | seconds | peak dBFS | trimmed at 30 dB (s) | trimmed at 50 dB (s) "
          "| tail below -30 dB (s) | energy at 3-4 kHz (dB) |")
    print("|---|---|---|---|---|---|---|---|")
    for speaker in SPEAKERS:
        rows = figures[speaker]
        mean = {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}
        print(f"| {speaker} | {len(rows)} | {mean['seconds']:.2f} | {mean['peak_dbfs']:.1f} | {mean['trim30']:.3f} "
              f"| {mean['trim50']:.3f} | {mean['tail']:.3f} | {mean['high_db']:.1f} |")
    seconds = [row["seconds"] for rows in figures.values() for row in rows]
    print(f"durations: median {np.median(seconds):.2f} s, 99th percentile {np.percentile(seconds, 99):.2f} s, "
          f"longest {max(seconds):.2f} s")


if __name__ == "__main__":
    main()
