"""Preprocessing at scale: fixed and per-file costs from 10^4 to 10^6 tiny files.

For each size N (and each layout: class folders, or one CSV listing every file) it generates N
tiny WAV clips (0.1-0.5 s, 8 kHz, 1% of them broken in the ways real corpora break), then:

  1. lists and plans them in this process, timing each (what every run and every rerun does
     before the first clip);
  2. runs `python -m preprocess` (a real subprocess, 2 jobs), SIGKILLs its whole process group
     once half the shards are journaled, and times the resume check a rerun does (listing,
     planning, verifying the finished shards) in this process;
  3. reruns `python -m preprocess` to the end;

and prints: listing and planning seconds and their share of the run, clips/s, the peak resident
memory of the parent and of the largest worker (VmHWM, polled from /proc), the manifest's size
and load time, the journal's size, the resume check, and the rows of errors.csv against the
broken files made. Everything is deleted afterwards.

    python bench/scale.py [--sizes 10000,100000,1000000] [--layouts folders,csv] [--work DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, folder_bytes, machine, python_env  # noqa: E402

SR = 8000
CLASSES = 10
CONFIG = ("seed = 0\n[audio]\nsr = 8000\nduration_s = 0.5\nn_fft = 256\nhop_length = 64\nn_mels = 32\n"
          "[augment]\ncopies = 0\n")
BROKEN = {  # what a broken file holds, cycled over the 1% of files that are broken
    "empty": lambda good: b"",
    "truncated": lambda good: good[: len(good) // 3],
    "not_audio": lambda good: b"%PDF-1.4 not a recording\n" * 8,
    "silent": None,  # a valid WAV of digital silence
}


def _wav_bytes(y: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, y, SR, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def make_corpus(root: Path, n: int, layout: str, seed: int = 0) -> int:
    """`n` files under `root` (class folders, or a flat folder and `root/list.csv`); returns how
    many are broken. 64 distinct recordings per class are written as bytes, so 10^6 files take
    about a minute."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(0.5 * SR)) / SR
    variants = []
    for c in range(CLASSES):
        for _ in range(64):
            seconds = rng.uniform(0.1, 0.5)
            y = 0.3 * np.sin(2 * np.pi * (200 + 150 * c) * t[: int(seconds * SR)]) * rng.uniform(0.2, 1.0)
            variants.append(_wav_bytes(y.astype(np.float32)))
    silent = _wav_bytes(np.zeros(int(0.3 * SR), np.float32))
    broken_kinds = list(BROKEN)
    bad = 0
    rows = ["path,label"]
    for c in range(CLASSES):
        (root / (f"class{c}" if layout == "folders" else "audio")).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        c = i % CLASSES
        data = variants[c * 64 + (i // CLASSES) % 64]
        if i % 100 == 37:  # 1% broken, spread over classes and shards
            kind = broken_kinds[bad % len(broken_kinds)]
            data = silent if BROKEN[kind] is None else BROKEN[kind](data)
            bad += 1
        rel = f"class{c}/{i:07d}.wav" if layout == "folders" else f"audio/{i:07d}.wav"
        fd = os.open(root / rel, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, data)
        os.close(fd)
        rows.append(f"{rel},class{c}")
    if layout == "csv":
        (root / "list.csv").write_text("\n".join(rows) + "\n")
    return bad


def source_of(root: Path, layout: str) -> Path:
    return root / "list.csv" if layout == "csv" else root


# ---------------------------------------------------------------------------------------------
# memory of a process tree


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                children.setdefault(int(stat[stat.rindex(")") + 2:].split()[1]), []).append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _hwm(pid: int) -> int:
    """Peak resident memory of a process so far (VmHWM), bytes; 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class TreeWatch:
    """Polls a process tree: the parent's peak RSS and the largest peak of any descendant."""

    def __init__(self, pid: int):
        self.pid, self.parent, self.worker = pid, 0, 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._done.is_set():
            for pid in _tree(self.pid):
                if pid == self.pid:
                    self.parent = max(self.parent, _hwm(pid))
                else:
                    self.worker = max(self.worker, _hwm(pid))
            time.sleep(0.25)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


# ---------------------------------------------------------------------------------------------
# one size


def _preprocess(source: Path, out: Path, config: Path) -> list[str]:
    return [sys.executable, "-m", "preprocess", str(source), "--out", str(out), "--config", str(config),
            "--jobs", "2"]


def _journaled(out: Path) -> int:
    try:
        return sum(1 for name in os.listdir(out / ".melshard" / "done") if name.endswith(".json"))
    except FileNotFoundError:
        return 0


def measure(work: Path, n: int, layout: str) -> dict:
    from melshard.cli import command_parser
    from melshard.commands import preprocess_options
    from preprocess.journal import finished_record
    from preprocess.output import output
    from preprocess.pipeline import gather_inputs
    from preprocess.plan import plan_shards
    from shared.manifest import read_manifest

    root, out, config = work / f"src-{layout}-{n}", work / f"out-{layout}-{n}", work / "scale.toml"
    config.write_text(CONFIG)
    start = time.perf_counter()
    bad = make_corpus(root, n, layout)
    made_s = time.perf_counter() - start
    source = source_of(root, layout)
    args = command_parser("preprocess").parse_args([str(source), "--out", str(out), "--config", str(config),
                                                    "--jobs", "2"])
    opts, cfg = preprocess_options(args)  # the options the subprocess will run with

    start = time.perf_counter()
    clips, _, labels = gather_inputs(opts, cfg)
    listed_s = time.perf_counter() - start
    start = time.perf_counter()
    plan = plan_shards(clips, labels, cfg)
    planned_s = time.perf_counter() - start

    # Run to half the shards, then SIGKILL the whole process group.
    start = time.perf_counter()
    process = subprocess.Popen(_preprocess(source, out, config), cwd=REPO, env=python_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    watch = TreeWatch(process.pid)
    while _journaled(out) < len(plan) // 2 and process.poll() is None:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    watch.stop()
    first_s = time.perf_counter() - start
    done_first = _journaled(out)
    records = [json.loads(p.read_text()) for p in (out / ".melshard" / "done").glob("*.json")]
    clips_first = sum(r["clips"] + len(r["errors"]) for r in records)

    # What a rerun does before its first new clip: list, plan, verify the finished shards.
    start = time.perf_counter()
    clips2, _, labels2 = gather_inputs(opts, cfg)
    plan2 = plan_shards(clips2, labels2, cfg)
    target = output(out)
    verified = sum(finished_record(target, job, cfg) is not None for job in plan2)
    resume_s = time.perf_counter() - start

    start = time.perf_counter()
    process = subprocess.Popen(_preprocess(source, out, config), cwd=REPO, env=python_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    watch2 = TreeWatch(process.pid)
    _, stderr = process.communicate()
    watch2.stop()
    second_s = time.perf_counter() - start
    if process.returncode != 0:
        sys.exit(f"the rerun failed ({process.returncode}):\n{stderr}")

    start = time.perf_counter()
    read_manifest(out)
    manifest_load_s = time.perf_counter() - start
    error_rows = len((out / "errors.csv").read_text().splitlines()) - 1
    result = {
        "n": n, "layout": layout, "bad": bad, "made_s": made_s, "listed_s": listed_s, "planned_s": planned_s,
        "shards": len(plan), "first_s": first_s, "clips_first": clips_first, "done_first": done_first,
        "resume_s": resume_s, "verified": verified, "second_s": second_s,
        "parent_rss": max(watch.parent, watch2.parent), "worker_rss": max(watch.worker, watch2.worker),
        "manifest_bytes": (out / "manifest.json").stat().st_size, "manifest_load_s": manifest_load_s,
        "journal_bytes": folder_bytes(out / ".melshard"), "error_rows": error_rows,
        "shard_bytes": sum(p.stat().st_size for p in out.glob("*.tar")),
    }
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    return result


def report(r: dict) -> None:
    run_s = r["first_s"] + r["second_s"]
    overhead = r["listed_s"] + r["planned_s"]
    rate = r["clips_first"] / r["first_s"]
    print(f"N={r['n']:>9,} {r['layout']:<7}: list {r['listed_s']:6.2f} s + plan {r['planned_s']:5.2f} s "
          f"= {100 * overhead / run_s:4.1f}% of the run ({run_s:7.1f} s, {r['shards']} shards); "
          f"{rate:6.0f} clips/s (first run, {r['clips_first']:,} clips in {r['first_s']:.1f} s); "
          f"peak RSS parent {r['parent_rss'] / 2**20:5.0f} MiB, worker {r['worker_rss'] / 2**20:4.0f} MiB; "
          f"manifest {r['manifest_bytes'] / 1024:6.1f} KiB, loads in {r['manifest_load_s'] * 1000:5.1f} ms; "
          f"journal {r['journal_bytes'] / 2**20:5.2f} MiB; resume check after the kill at "
          f"{r['done_first']}/{r['shards']} shards {r['resume_s']:5.2f} s ({r['verified']} verified); "
          f"errors.csv {r['error_rows']} rows for {r['bad']} broken files; shards "
          f"{r['shard_bytes'] / 2**20:.0f} MiB; corpus made in {r['made_s']:.0f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--layouts", default="folders,csv")
    parser.add_argument("--work", default="/tmp/melshard-scale", help="scratch folder (deleted at the end)")
    args = parser.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    print(f"# preprocessing at scale: {machine()}")
    print(f"# command: python bench/scale.py --sizes {args.sizes} --layouts {args.layouts}")
    try:
        for n in (int(s) for s in args.sizes.split(",")):
            for layout in args.layouts.split(","):
                report(measure(work, n, layout))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
