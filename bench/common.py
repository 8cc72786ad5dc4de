"""Helpers shared by the benchmarks: timing a command, peak memory of a process tree."""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def machine() -> str:
    """One line naming the machine, for the figures' provenance."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cores} cores ({cpu}), Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"


def _tree_rss(root: int) -> int:
    """Resident memory of `root` and all its descendants, in bytes (Linux /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
            rss[int(entry)] = int(fields[21]) * page
        except (OSError, ValueError, IndexError):
            continue
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total


def run_measured(command: list[str], env: dict | None = None) -> tuple[float, int]:
    """Run a command; return its wall time and the peak RSS summed over its process tree."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    peak = 0
    done = threading.Event()

    def poll() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss(process.pid))
            time.sleep(0.02)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    _, stderr = process.communicate()
    seconds = time.perf_counter() - start
    done.set()
    watcher.join()
    if process.returncode != 0:
        sys.exit(f"command failed ({process.returncode}): {' '.join(command)}\n{stderr}")
    return seconds, peak


def folder_bytes(folder: Path) -> int:
    """Bytes of every file under `folder`."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def python_env() -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO))


FSDD = REPO.parent / "shared" / "data" / "fsdd" / "recordings"


def corpus_folder(work: Path) -> Path:
    """FSDD's recordings as class folders of symlinks, or a synthetic corpus when FSDD is absent."""
    folder = work / "corpus"
    if folder.exists():
        return folder
    if FSDD.is_dir():
        for path in sorted(FSDD.glob("*.wav")):
            digit = path.name.split("_", 1)[0]
            (folder / digit).mkdir(parents=True, exist_ok=True)
            (folder / digit / path.name).symlink_to(path)
    else:
        from preprocess.synth import make_demo_corpus

        make_demo_corpus(work / "synthetic", per_class=375, test_per_class=0)
        folder = work / "synthetic" / "train"
    return folder


def training_options(parser: argparse.ArgumentParser, workers: int, help_workers: str | None = None) -> None:
    """The options the training benchmarks share (model size, batch, loader, device, work folder)."""
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=workers, help=help_workers)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--work", default="/tmp/melshard-loader")


def shards_for_training(work: Path) -> Path:
    """The training benchmarks' shard folder (FSDD, or synthetic audio), made once."""
    shards = work / "shards"
    preprocess(corpus_folder(work), shards, "--augment-copies", "0")
    return shards


def preprocess(src: Path, out: Path, *args: str) -> None:
    """`python -m preprocess` with the default (seeds') audio config, no validation split."""
    if (out / "manifest.json").exists():
        return
    command = [sys.executable, "-m", "preprocess", str(src), "--out", str(out), "--val-fraction", "0",
               "--max-rejected", "1", *args]
    subprocess.run(command, cwd=REPO, env=python_env(), check=True, stdout=subprocess.DEVNULL)
