"""Fault injection: kill preprocessing and training with SIGKILL at seeded random moments,
rerun, and compare with an uninterrupted run byte for byte (shards, manifest) or tensor for
tensor (weights). The tests in tests/reliability/ run a few kills; this runner runs many.

    python bench/faults.py [--preprocess-kills 50] [--train-kills 10] [--train-stops 10] [--work /tmp/melshard-faults]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, machine, python_env  # noqa: E402


@dataclass(frozen=True)
class Kill:
    seed: int
    delay_s: float  # after the process started
    delivered: bool  # False: the process had already finished
    identical: bool  # the rerun's output equals the uninterrupted run's
    partial_final_names: int  # files under a final name that differ from the reference (must be 0)


def published(folder: Path) -> dict[str, bytes]:
    """What a preprocess run publishes: shards, manifest.json, errors.csv (not its hidden journal)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}


def start(args: list[str]) -> subprocess.Popen:
    """`python -m args` as the leader of a process group of its own, its stderr kept."""
    return subprocess.Popen([sys.executable, "-m", *args], cwd=REPO, env=python_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def kill_after(args: list[str], delay: float, sig: int = signal.SIGKILL) -> tuple[bool, int, str]:
    """Run `python -m args`, send `sig` to its whole process group after `delay` s; (whether it
    was still running, its exit status, its stderr)."""
    process = start(args)
    try:
        stderr = process.communicate(timeout=delay)[1]  # reading as it waits: a full pipe never blocks it
        delivered = False
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, sig)
        stderr = process.communicate()[1]
        delivered = True
    return delivered, process.returncode, stderr


def finish(args: list[str]) -> None:
    result = subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=python_env(), capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"python -m {' '.join(args)} failed:\n{result.stderr[-2000:]}")


def timed(args: list[str]) -> float:
    begin = time.perf_counter()
    finish(args)
    return time.perf_counter() - begin


def warm_duration(args: list[str], out: Path, scratch: Path) -> float:
    """How long `python -m args --out out` takes once caches are warm: the first run of a fresh
    checkout also compiles bytecode and takes longer (in one CI run 1.5x or more), so the later
    kill moments drawn from it fell after the end. The shorter of the reference run and a second
    run into `scratch` (deleted)."""
    first = timed([*args, "--out", str(out)])
    shutil.rmtree(scratch, ignore_errors=True)
    second = timed([*args, "--out", str(scratch)])
    shutil.rmtree(scratch, ignore_errors=True)
    return min(first, second)


def preprocess_kills(src: Path, work: Path, seeds: list[int], options: list[str]) -> list[Kill]:
    """Kill `python -m preprocess src` once per seed at a random moment, rerun, compare with a clean run."""
    reference = work / "reference"
    shutil.rmtree(reference, ignore_errors=True)
    duration = warm_duration(["preprocess", str(src), *options], reference, work / "warm")
    expected = published(reference)
    kills = []
    for seed in seeds:
        out = work / f"killed-{seed}"
        shutil.rmtree(out, ignore_errors=True)
        delay = float(np.random.default_rng(seed).uniform(0.05, 0.95) * duration)
        delivered = kill_after(["preprocess", str(src), "--out", str(out), *options], delay)[0]
        partial = sum(1 for name, data in published(out).items() if expected.get(name) != data) if out.exists() else 0
        finish(["preprocess", str(src), "--out", str(out), *options])
        kills.append(Kill(seed, delay, delivered, published(out) == expected, partial))
        shutil.rmtree(out)
    return kills


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _interrupted_runs(shards: Path, work: Path, seeds: list[int], options: list[str],
                      sig_of: Callable[[int], int], flaws: Callable[[Path, int, int, str], int]) -> list[Kill]:
    """Interrupt `python -m trainer train` once per seed at a random moment with `sig_of(seed)`
    sent to its process group, rerun it with `--resume auto` (a run interrupted before its
    folder was made has no run to continue), compare the weights with an uninterrupted run's.
    `flaws(run, sig, status, stderr)` counts what the interrupted run left wrong."""
    reference = work / "reference-run"
    shutil.rmtree(reference, ignore_errors=True)
    duration = warm_duration(["trainer", "train", str(shards), *options], reference, work / "warm-run")
    runs = []
    for seed in seeds:
        run = work / f"interrupted-run-{seed}"
        shutil.rmtree(run, ignore_errors=True)
        sig = sig_of(seed)
        delay = float(np.random.default_rng(seed).uniform(0.05, 0.95) * duration)
        delivered, status, stderr = kill_after(["trainer", "train", str(shards), "--out", str(run), *options],
                                               delay, sig)
        flawed = flaws(run, sig, status, stderr)
        finish(["trainer", "train", str(shards), "--out", str(run), *options, "--resume", "auto"])
        runs.append(Kill(seed, delay, delivered, same_weights(run / "last.pt", reference / "last.pt"), flawed))
        shutil.rmtree(run)
    return runs


def _unloadable(run: Path, *_: object) -> int:
    """Checkpoints left under a final name that do not load."""
    from trainer import checkpoint

    unloadable = 0
    for name in (checkpoint.LAST, checkpoint.BACKUP, checkpoint.BEST):
        if (run / name).exists():
            try:
                checkpoint.load(run / name)
            except Exception:  # noqa: BLE001 - counted, and the test fails on it
                unloadable += 1
    return unloadable


def train_kills(shards: Path, work: Path, seeds: list[int], options: list[str]) -> list[Kill]:
    """Kill `python -m trainer train` with SIGKILL once per seed at a random moment, resume,
    compare the weights. `partial_final_names` counts checkpoints left under a final name that
    do not load."""
    return _interrupted_runs(shards, work, seeds, options, lambda seed: signal.SIGKILL, _unloadable)


def train_stops(shards: Path, work: Path, seeds: list[int], options: list[str]) -> list[Kill]:
    """Stop `python -m trainer train` once per seed at a random moment with a signal to its whole
    process group (SIGTERM on even seeds, SIGINT on odd ones: `timeout`, `docker stop`, Ctrl-C),
    resume, compare the weights. A stop that lands while the run is still going must end it with
    128 + the signal and no traceback; `partial_final_names` counts those that did not."""
    def unclean(run: Path, sig: int, status: int, stderr: str) -> int:
        return int(status not in (0, 128 + sig) or "Traceback" in stderr)

    return _interrupted_runs(shards, work, seeds, options,
                             lambda seed: signal.SIGTERM if seed % 2 == 0 else signal.SIGINT, unclean)


def summary(what: str, kills: list[Kill]) -> str:
    delivered = sum(k.delivered for k in kills)
    identical = sum(k.identical for k in kills)
    partial = sum(k.partial_final_names for k in kills)
    return (f"{what}: {len(kills)} runs, {delivered} killed mid-run, {identical}/{len(kills)} identical to the "
            f"uninterrupted run after rerunning, {partial} damaged files under a final name")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preprocess-kills", type=int, default=50)
    parser.add_argument("--train-kills", type=int, default=10)
    parser.add_argument("--train-stops", type=int, default=10, help="group SIGTERM / SIGINT stops of training")
    parser.add_argument("--work", default="/tmp/melshard-faults")
    args = parser.parse_args()
    from tests.audio_fixtures import make_corpus

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    src = make_corpus(work / "corpus", per_class=40, labels=("low", "mid", "high", "chirp"))
    config = work / "audio.toml"
    config.write_text("shard_size = 4\n[audio]\nsr = 8000\nduration_s = 1.0\nn_fft = 256\nhop_length = 64\n"
                      "n_mels = 32\n[augment]\ncopies = 1\n")
    print(f"# faults: {machine()}")
    print(f"# command: python bench/faults.py --preprocess-kills {args.preprocess_kills} "
          f"--train-kills {args.train_kills} --train-stops {args.train_stops}")
    options = ["--config", str(config), "--jobs", "2"]
    kills = preprocess_kills(src, work, list(range(args.preprocess_kills)), options)
    print(summary("preprocess SIGKILL", kills), flush=True)
    shards = work / "reference"
    train_options = ["--model", "cnn", "--width", "0.25", "--batch-size", "8", "--num-workers", "1",
                     "--epochs", "3", "--checkpoint-every", "5"]
    kills = train_kills(shards, work, list(range(args.train_kills)), train_options)
    print(summary("train SIGKILL", kills), flush=True)
    stops = train_stops(shards, work, list(range(args.train_stops)), train_options)
    print(summary("train group SIGTERM/SIGINT", stops).replace("damaged files under a final name",
                                                                "unclean exits"), flush=True)


if __name__ == "__main__":
    main()
