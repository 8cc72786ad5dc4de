"""Preprocessing throughput: the seeds' sequential librosa loop vs `python -m preprocess`.

Generates N and 4N five-second 44.1 kHz WAV clips, then times, in one run:
  (a) the seeds' loop, warmed up: librosa.load(sr=22050) -> effects.trim(top_db=20) ->
      util.fix_length(5 s) -> feature.melspectrogram(n_mels=128) -> power_to_db; and the same
      with one augmented copy per clip drawn from the seeds' transforms (noise, pitch_shift,
      time_stretch, time shift, reverb);
  (b) `python -m preprocess` with --jobs 1 and --jobs 2, without and with one augmented copy.

Every preprocess run is a real subprocess (imports and worker start-up included). Besides the
end-to-end rate at 4N it prints the steady rate, what a large corpus sees: clips finished
between the moment every worker had delivered its first shard and the last shard (from the
journal's timestamps), over that time. And the peak resident memory of the whole process tree
at N and 4N.

    python bench/preprocess_throughput.py [--n 500] [--work /tmp/melshard-bench]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, machine, python_env, run_measured  # noqa: E402
from preprocess.synth import CLASSES, synth  # noqa: E402

SR_IN = 44100


def make_clips(folder: Path, n: int, seed: int) -> None:
    """n five-second clips in class folders: synthetic sounds with silence around them."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        kind = CLASSES[i % len(CLASSES)]
        (folder / kind).mkdir(parents=True, exist_ok=True)
        y = np.concatenate([synth(kind, rng, SR_IN) for _ in range(3)])
        y = np.pad(y, (0, max(0, 5 * SR_IN - y.size)))[: 5 * SR_IN]
        sf.write(folder / kind / f"{i:06d}.wav", y, SR_IN, subtype="PCM_16")


def seeds_augment(y: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    import librosa
    import scipy.signal

    choice = rng.integers(5)
    if choice == 0:
        return y + 0.005 * rng.standard_normal(y.size).astype(np.float32)
    if choice == 1:
        return librosa.effects.pitch_shift(y, sr=sr, n_steps=rng.uniform(-2, 2))
    if choice == 2:
        return librosa.effects.time_stretch(y, rate=rng.uniform(0.8, 1.2))
    if choice == 3:
        return np.roll(y, int(rng.uniform(-0.2, 0.2) * y.size))
    t = np.arange(int(0.3 * sr)) / sr
    response = rng.standard_normal(t.size) * np.exp(-t * 20)
    return scipy.signal.fftconvolve(y, response)[: y.size].astype(np.float32)


def seeds_loop(files: list[Path], augment: bool) -> float:
    """The seeds' way, one clip after another; returns seconds."""
    import librosa

    rng = np.random.default_rng(0)

    def one(path: Path) -> None:
        y, sr = librosa.load(path, sr=22050)
        y, _ = librosa.effects.trim(y, top_db=20)
        versions = [y, seeds_augment(y, sr, rng)] if augment else [y]
        for version in versions:
            version = librosa.util.fix_length(version, size=5 * sr)
            librosa.power_to_db(librosa.feature.melspectrogram(y=version, sr=sr, n_mels=128))

    for path in files[:5]:  # warm-up: librosa compiles and caches on first use
        one(path)
    start = time.perf_counter()
    for path in files:
        one(path)
    return time.perf_counter() - start


def phase_profile(files: list[Path]) -> None:
    """Where a clip's time goes, in one process: the seeds' steps and ours side by side."""
    import librosa

    from preprocess.shards import _npy_bytes
    from shared import audio
    from shared.config import AudioConfig
    from shared.runtime import tune_allocator

    tune_allocator()
    cfg = AudioConfig()
    seeds = dict.fromkeys(("load+resample", "trim", "fix_length", "melspectrogram", "power_to_db"), 0.0)
    ours = dict.fromkeys(("decode", "resample", "trim", "log-mel", "npy bytes"), 0.0)
    for repeat in range(2):  # the first pass warms librosa's caches and numba
        for path in files:
            t = [time.perf_counter()]
            y, sr = librosa.load(path, sr=22050)
            t.append(time.perf_counter())
            y, _ = librosa.effects.trim(y, top_db=20)
            t.append(time.perf_counter())
            y = librosa.util.fix_length(y, size=5 * sr)
            t.append(time.perf_counter())
            power = librosa.feature.melspectrogram(y=y, sr=sr, n_mels=128)
            t.append(time.perf_counter())
            librosa.power_to_db(power)
            t.append(time.perf_counter())
            if repeat:
                for name, a, b in zip(seeds, t, t[1:]):
                    seeds[name] += b - a
            t = [time.perf_counter()]
            raw = audio.decode(path, 44100)
            t.append(time.perf_counter())
            y = audio.soxr.resample(raw, 44100, cfg.sr, quality="HQ")
            t.append(time.perf_counter())
            y = audio.trim(y, cfg.top_db)
            t.append(time.perf_counter())
            mel = audio.clip_to_mel(y, cfg)
            t.append(time.perf_counter())
            _npy_bytes(mel)
            t.append(time.perf_counter())
            if repeat:
                for name, a, b in zip(ours, t, t[1:]):
                    ours[name] += b - a
    for title, phases in (("seeds' loop", seeds), ("melshard   ", ours)):
        parts = ", ".join(f"{name} {1000 * v / len(files):.2f}" for name, v in phases.items())
        print(f"per clip, {title}: {1000 * sum(phases.values()) / len(files):.2f} ms ({parts})")


def steady_rate(out: Path, jobs: int) -> float:
    """Clips per second once every worker is warm, from the journal's completion times."""
    records = sorted((p.stat().st_mtime_ns, json.loads(p.read_text()))
                     for p in (out / ".melshard" / "done").glob("*.json"))
    warm = records[jobs - 1:]  # from the moment the last worker finished its first shard
    clips = sum(r["clips"] + len(r["errors"]) for _, r in warm[1:])
    return clips / ((warm[-1][0] - warm[0][0]) / 1e9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="clips in the small corpus (the large has 4N)")
    parser.add_argument("--work", default="/tmp/melshard-bench", help="scratch folder (deleted at the end)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    sizes = {"N": args.n, "4N": 4 * args.n}
    print(f"# preprocess throughput: {machine()}")
    print(f"# command: python bench/preprocess_throughput.py --n {args.n}")
    for label, n in sizes.items():
        make_clips(work / label, n, seed=n)

    files = sorted((work / "N").rglob("*.wav"))
    seeds = {aug: len(files) / seeds_loop(files, aug) for aug in (False, True)}
    print(f"seeds' loop, no augmentation     : {seeds[False]:7.1f} clips/s")
    print(f"seeds' loop, 1 augmented copy    : {seeds[True]:7.1f} clips/s")
    phase_profile(files[:100])

    env = python_env()
    results = {}
    for copies in (0, 1):
        for jobs in (1, 2):
            row = {}
            for label, n in sizes.items():
                out = work / f"out-{label}-{copies}-{jobs}"
                command = [sys.executable, "-m", "preprocess", str(work / label), "--out", str(out),
                           "--jobs", str(jobs), "--augment-copies", str(copies), "--val-fraction", "0",
                           "--shard-size", str(max(8, n // 32 * (1 + copies)))]
                row[label] = (n, *run_measured(command, env), steady_rate(out, jobs))
                shutil.rmtree(out)
            (_, _, m1, _), (n4, t4, m4, steady) = row["N"], row["4N"]
            results[copies, jobs] = steady
            print(f"preprocess --jobs {jobs} --augment-copies {copies}: 4N end to end {n4 / t4:6.1f} clips/s, "
                  f"steady {steady:6.1f} clips/s ({steady / seeds[bool(copies)]:4.2f}x seeds); "
                  f"peak RSS N {m1 / 2**20:5.0f} MiB, 4N {m4 / 2**20:5.0f} MiB ({m4 / m1:4.2f}x)")
    for copies in (0, 1):
        print(f"scaling 1 -> 2 jobs, {copies} augmented copies: {results[copies, 2] / results[copies, 1]:.2f}x")

    # The machine's own limit on scaling: two independent single-process runs at the same time.
    outs = [work / f"out-pair-{i}" for i in (0, 1)]
    pair = [subprocess.Popen([sys.executable, "-m", "preprocess", str(work / "4N"), "--out", str(out), "--jobs", "1",
                              "--augment-copies", "0", "--val-fraction", "0", "--shard-size", str(max(8, args.n // 8))],
                             cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for out in outs]
    for process in pair:
        process.wait()
    rates = [steady_rate(out, 1) for out in outs]
    print(f"two independent --jobs 1 runs at once: {rates[0]:.1f} and {rates[1]:.1f} clips/s, together "
          f"{sum(rates) / results[0, 1]:.2f}x one run alone")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
