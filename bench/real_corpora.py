"""What the real-corpus options cost: long recordings as windows, and balanced classes.

Long recordings: a folder of 2-minute recordings (3 classes, 8 kHz WAV) preprocessed at the
seeds' 22,050 Hz / 5 s / 128 mels, cropped (the default) and with `--segment`: windows/s,
samples, shard bytes, and the peak memory of the whole process tree. Then one 60-minute
recording with `--segment`: its windows/s and peak memory (bounded: it is decoded as a stream).

Imbalanced classes: a 40:1 corpus of short clips, plain and with `--balance-classes`: samples
and shard bytes (what the extra copies cost on disk). Class weights (`trainer train
--class-weights balanced`) cost nothing on disk and one weighted cross-entropy per step.

    python bench/real_corpora.py [--work /tmp/melshard-real] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine, run_measured  # noqa: E402

SR = 8000


def _recording(seconds: float, hz: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.2 * np.sin(2 * np.pi * hz * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def long_corpus(root: Path, files: int, seconds: float) -> Path:
    rng = np.random.default_rng(0)
    for i in range(files):
        label = ("low", "mid", "high")[i % 3]
        (root / label).mkdir(parents=True, exist_ok=True)
        sf.write(root / label / f"{label}{i:03d}.wav", _recording(seconds, (220, 660, 1760)[i % 3], rng), SR,
                 subtype="PCM_16")
    return root


def skewed_corpus(root: Path, majority: int, minority: int) -> Path:
    rng = np.random.default_rng(1)
    for label, count, hz in (("common", majority, 440), ("rare", minority, 1320)):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            sf.write(root / label / f"{i:04d}.wav", _recording(rng.uniform(0.5, 2.0), hz, rng), SR, subtype="PCM_16")
    return root


def preprocess(src: Path, out: Path, jobs: int, *extra: str) -> dict:
    """Run the public command; return wall seconds, peak RSS, samples and shard bytes."""
    shutil.rmtree(out, ignore_errors=True)
    seconds, peak = run_measured([sys.executable, "-m", "preprocess", str(src), "--out", str(out),
                                  "--jobs", str(jobs), "--val-fraction", "0", *extra])
    manifest = json.loads((out / "manifest.json").read_text())
    samples = sum(s["samples"] for s in manifest["splits"].values())
    size = sum(shard["bytes"] for s in manifest["splits"].values() for shard in s["shards"])
    return {"seconds": seconds, "peak_mb": peak / 2**20, "samples": samples, "mb": size / 2**20,
            "inputs": manifest["inputs"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/melshard-real")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--files", type=int, default=60, help="2-minute recordings in the long corpus")
    args = parser.parse_args()
    work = Path(args.work)
    print(f"# real corpora: {machine()}")
    print(f"# command: python bench/real_corpora.py --jobs {args.jobs} --files {args.files}")

    src = work / "long"
    if not src.exists():
        long_corpus(src, args.files, 120.0)
    hours = args.files * 120 / 3600
    cropped = preprocess(src, work / "cropped", args.jobs, "--augment-copies", "0")
    segmented = preprocess(src, work / "segmented", args.jobs, "--augment-copies", "0", "--segment")
    print(f"{args.files} recordings of 2 min ({hours:.1f} h), 22,050 Hz / 5 s / 128 mels, {args.jobs} jobs:")
    print(f"  cropped (default): {cropped['samples']:6d} samples, {cropped['mb']:7.1f} MB of shards, "
          f"{cropped['seconds']:6.1f} s, peak {cropped['peak_mb']:6.0f} MB; "
          f"{cropped['inputs']['cropped']} clips cropped, {cropped['inputs']['cropped_s'] / 3600:.2f} h dropped")
    print(f"  --segment        : {segmented['samples']:6d} samples, {segmented['mb']:7.1f} MB of shards, "
          f"{segmented['seconds']:6.1f} s, peak {segmented['peak_mb']:6.0f} MB; "
          f"{segmented['samples'] / segmented['seconds']:.0f} windows/s, "
          f"{segmented['mb'] / cropped['mb']:.1f}x the shard bytes")

    hour = work / "hour"
    if not hour.exists():
        (hour / "field").mkdir(parents=True)
        (hour / "other").mkdir(parents=True)
        rng = np.random.default_rng(2)
        with sf.SoundFile(hour / "field" / "one-hour.wav", "w", SR, 1, "PCM_16") as handle:
            for _ in range(60):
                handle.write(_recording(60.0, 440, rng))
        sf.write(hour / "other" / "short.wav", _recording(3.0, 880, rng), SR, subtype="PCM_16")
    one = preprocess(hour, work / "hour-shards", 1, "--augment-copies", "0", "--segment")
    print(f"  one 60-minute recording, --segment, 1 job: {one['samples']} windows in {one['seconds']:.1f} s "
          f"({one['samples'] / one['seconds']:.0f} windows/s), peak {one['peak_mb']:.0f} MB")

    skewed = skewed_corpus(work / "skewed", 400, 10) if not (work / "skewed").exists() else work / "skewed"
    plain = preprocess(skewed, work / "skewed-plain", args.jobs, "--augment-copies", "0")
    balanced = preprocess(skewed, work / "skewed-balanced", args.jobs, "--augment-copies", "0",
                          "--balance-classes")
    print("40:1 corpus (400 + 10 clips), 22,050 Hz / 5 s / 128 mels:")
    print(f"  plain            : {plain['samples']:5d} samples, {plain['mb']:6.1f} MB, {plain['seconds']:5.1f} s")
    print(f"  --balance-classes: {balanced['samples']:5d} samples, {balanced['mb']:6.1f} MB, "
          f"{balanced['seconds']:5.1f} s (the cap of 10 copies per clip: 10 rare clips give 110 samples)")


if __name__ == "__main__":
    main()
