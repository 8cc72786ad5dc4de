"""Where a preprocessing worker's time goes in a real run: per-stage timers in every process.

Generates N five-second 44.1 kHz WAV clips (as bench/preprocess_throughput.py does) and runs
`python -m preprocess` on them twice, as real subprocesses on a pseudo-terminal (so the progress
bar draws as a user sees it): with --jobs 1 (everything in one process: a clip's cost on one
core) and with --jobs 2 (a loky pool; MELSHARD_POOL_SAMPLES=1 so that a small corpus gets both
workers too). The product is not changed: the run's process is started through `child()`,
which replaces `preprocess.pipeline.write_shard` by `profiled_write_shard` of this module.
joblib pickles that function by reference, so every worker imports this module and wraps the
stage functions in its own process before its first shard. Each wrapper adds the time spent
in its function, less the time of wrapped functions it calls (exclusive time), to its stage.

Per worker, the time from the pool's start to its end is split into: its start (fork and exec,
then interpreter, imports and the first task's unpickling), the stages of each shard, the gaps
between shards (result sent back, next task received) and the wait at the end for the other
worker's last shard. So the rows sum, per clip, to jobs x (the pool's wall time) / clips; the
parent's time before and after the pool, and its CPU during it, are printed below the table.

    python bench/preprocess_profile.py [--n 400] [--shard-size 12] [--work /tmp/melshard-profile]
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import pty
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, machine, python_env  # noqa: E402

LOG_DIR = "MELSHARD_PROFILE_DIR"  # where each process writes its timings; set only by this bench

# Row order of the table; the worker's own stages first, then its time outside shards.
STAGES = (
    "file checks (stat, WAV header, finite)",
    "file read + PCM decode",
    "resample (soxr HQ)",
    "trim (with silence check)",
    "pad/crop",
    "log-mel",
    "float16 cast",
    "band statistics",
    "npy encoding",
    "sample metadata (json)",
    "tar members",
    "hashing (sha256)",
    "file write",
    "shard file: open, fsync, rename",
    "journal record (fingerprint, stat, write)",
    "shard loop, other",
    "profiler's own log",
    "progress display (parent)",
)
OUTSIDE = (
    "worker start: fork, exec",
    "worker start: interpreter, imports",
    "between shards: result back, next task",
    "wait at the end (other worker's last shard)",
)


def now() -> float:
    """The clock /proc's process start times use (seconds since boot), comparable across processes."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


class _Timers:
    """Exclusive seconds per stage of this process, and its shards' (start, end, clips)."""

    def __init__(self):
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.cpu = dict.fromkeys(STAGES, 0.0)  # of which this thread ran on a core
        self.nested = [(0.0, 0.0)]  # (wall, cpu) of wrapped calls inside the current one, per open call
        self.shards: list[list[float]] = []
        self.installed = False

    @contextlib.contextmanager
    def stage(self, name: str):
        start, cpu = now(), time.thread_time()
        self.nested.append((0.0, 0.0))
        try:
            yield
        finally:
            elapsed, used = now() - start, time.thread_time() - cpu
            inner, inner_cpu = self.nested.pop()
            self.seconds[name] += elapsed - inner
            self.cpu[name] += used - inner_cpu
            outer, outer_cpu = self.nested[-1]
            self.nested[-1] = (outer + elapsed, outer_cpu + used)

    def wrap(self, owner, attribute: str, name: str) -> None:
        """Replace `owner.attribute` (a module's or a class's function) by a timed call to it."""
        original = getattr(owner, attribute)  # AttributeError: the product renamed it; update here

        def timed(*args, **kwargs):
            with self.stage(name):
                return original(*args, **kwargs)

        setattr(owner, attribute, timed)


TIMERS = _Timers()


class _TimedHash:
    """hashlib.sha256() with its updates timed (the product's _HashingWriter calls update per write)."""

    def __init__(self):
        import hashlib

        self._hash = hashlib.sha256()

    def update(self, data) -> None:
        with TIMERS.stage("hashing (sha256)"):
            self._hash.update(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def _timed_context(original, name: str):
    """A context-manager function whose enter and exit are timed, not the block inside."""

    @contextlib.contextmanager
    def timed(*args, **kwargs):
        manager = original(*args, **kwargs)
        with TIMERS.stage(name):
            value = manager.__enter__()
        try:
            yield value
        except BaseException:
            if not manager.__exit__(*sys.exc_info()):
                raise
        else:
            with TIMERS.stage(name):
                manager.__exit__(None, None, None)

    return timed


def install() -> None:
    """Wrap the stage functions in this process (once)."""
    if TIMERS.installed:
        return
    TIMERS.installed = True
    import types

    import soxr

    import preprocess.output as output
    import preprocess.shards as shards
    import shared.audio as audio
    import shared.decode as decode

    wrap = TIMERS.wrap
    wrap(audio, "decode", "file checks (stat, WAV header, finite)")  # shared.audio's own name for it
    wrap(decode, "_checked", "file checks (stat, WAV header, finite)")
    wrap(decode, "_read_soundfile", "file read + PCM decode")
    # decode calls soxr.resample through its module global: give it a timed copy of the module's namespace
    decode.soxr = types.SimpleNamespace(**{k: getattr(soxr, k) for k in dir(soxr) if not k.startswith("__")})
    wrap(decode.soxr, "resample", "resample (soxr HQ)")
    wrap(audio, "_trimmed", "trim (with silence check)")
    wrap(audio, "_centred", "pad/crop")
    wrap(audio, "_log_mel_centred", "log-mel")
    wrap(shards, "clip_to_mel", "float16 cast")  # its own time, less pad/crop and log-mel: the cast
    wrap(shards._BandStats, "add", "band statistics")
    wrap(shards, "_npy_bytes", "npy encoding")
    wrap(shards, "_sample", "sample metadata (json)")
    wrap(shards.TarSink, "write", "tar members")
    wrap(shards.TarSink, "__exit__", "tar members")  # the tar's closing blocks
    shards.hashlib = types.SimpleNamespace(sha256=_TimedHash)
    wrap(shards._HashingWriter, "write", "file write")  # its own time, less the hash: the buffered write
    output.atomic_open = _timed_context(output.atomic_open, "shard file: open, fsync, rename")
    wrap(shards, "job_fingerprint", "journal record (fingerprint, stat, write)")
    wrap(output.LocalOutput, "stamp", "journal record (fingerprint, stat, write)")
    wrap(output.LocalOutput, "write", "journal record (fingerprint, stat, write)")


def _process_start() -> float:
    """This process's start, in `now()` seconds (/proc's start time, in clock ticks since boot)."""
    stat = Path("/proc/self/stat").read_text()
    return int(stat[stat.rindex(")") + 2:].split()[19]) / os.sysconf("SC_CLK_TCK")


def _run_queue_s() -> float:
    """Seconds this process has been runnable but waiting for a core (the kernel's schedstat):
    the part of its stages' wall time that other processes (the other worker, the parent, any
    other job on the machine) took."""
    try:
        return int(Path("/proc/self/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def _save(extra: dict | None = None) -> None:
    record = {"pid": os.getpid(), "started": _process_start(), "seconds": TIMERS.seconds, "cpu": TIMERS.cpu,
              "shards": TIMERS.shards, **(extra or {})}
    path = Path(os.environ[LOG_DIR]) / f"{os.getpid()}.json"
    path.write_text(json.dumps(record))


def profiled_write_shard(job, cfg, out, in_worker: bool = True):
    """`preprocess.shards.write_shard` with its stages timed; the timings go to LOG_DIR."""
    install()
    from preprocess.shards import write_shard

    start, queued = now(), _run_queue_s()
    with TIMERS.stage("shard loop, other"):
        record = write_shard(job, cfg, out, in_worker)
    TIMERS.shards.append([start, now(), record.inputs, _run_queue_s() - queued])
    with TIMERS.stage("profiler's own log"):
        if in_worker:  # the parent saves its own at exit
            _save()
    return record


def child(argv: list[str]) -> int:
    """`python -m preprocess ARGV` with the stage timers installed (runs in the measured process)."""
    import preprocess.pipeline as pipeline
    from melshard.cli import main

    install()
    parent: dict = {}
    original_track = pipeline.track

    def waited(records):
        iterator = iter(records)
        while True:  # the time spent waiting for the next record is not the display's
            with TIMERS.stage("shard loop, other" if parent["jobs"] == 1 else "waiting (parent)"):
                record = next(iterator, None)
            if record is None:
                return
            yield record

    def track(records, *args):
        # The pool's span: from the display's start (which starts the workers) to its last record.
        # The parent's stages count only inside it (it also writes the manifest and errors.csv).
        parent["pool_start"], parent["cpu_start"] = now(), _cpu()
        parent["before"] = dict(TIMERS.seconds), dict(TIMERS.cpu)
        shown = original_track(waited(records), *args)
        while True:
            with TIMERS.stage("progress display (parent)"):
                record = next(shown, None)
            if record is None:
                break
            yield record
        parent["pool_end"], parent["cpu_end"] = now(), _cpu()
        parent["during"] = dict(TIMERS.seconds), dict(TIMERS.cpu)

    def jobs_of(pending, jobs, *args):
        parent["jobs"] = original_pool_size(pending, jobs, *args)
        return parent["jobs"]

    TIMERS.seconds["waiting (parent)"] = TIMERS.cpu["waiting (parent)"] = 0.0
    original_pool_size = pipeline.pool_size
    pipeline.pool_size = jobs_of
    pipeline.track, pipeline.write_shard = track, profiled_write_shard
    atexit.register(lambda: _save({"parent": True, "ended": now(), **parent}))
    return main(argv, default="preprocess")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_profiled(src: Path, out: Path, jobs: int, shard_size: int, logs: Path, tty: bool = True) -> float:
    """One profiled `python -m preprocess` subprocess; its wall time. Logs land in `logs`."""
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    env = dict(python_env(), MELSHARD_POOL_SAMPLES="1", **{LOG_DIR: str(logs)})
    code = "import sys; from bench.preprocess_profile import child; sys.exit(child(sys.argv[1:]))"
    command = [sys.executable, "-c", code,
               str(src), "--out", str(out), "--jobs", str(jobs), "--augment-copies", "0", "--val-fraction", "0",
               "--shard-size", str(shard_size)]
    reader = None
    if tty:  # rich draws its bar only on a terminal: give the run one, and drain it
        master, terminal = pty.openpty()
        reader = threading.Thread(target=_drain, args=(master,), daemon=True)
        reader.start()
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=terminal if tty else subprocess.PIPE)
    seconds = time.perf_counter() - start
    if tty:
        os.close(terminal)
        reader.join(timeout=5)
    if result.returncode != 0:
        sys.exit(f"profiled run failed ({result.returncode}): {' '.join(command)}")
    shutil.rmtree(out)
    return seconds


def _drain(fd: int) -> None:
    with contextlib.suppress(OSError):
        while os.read(fd, 65536):
            pass
    os.close(fd)


def table(logs: Path) -> dict:
    """Per-clip milliseconds of the pool's worker time by row, and the run's facts, from `logs`."""
    records = [json.loads(p.read_text()) for p in logs.glob("*.json")]
    parent = next(r for r in records if r.get("parent"))
    for i, key in enumerate(("seconds", "cpu")):
        parent[key] = {k: v - parent["before"][i][k] for k, v in parent["during"][i].items()}
    workers = [r for r in records if not r.get("parent") and r["shards"]] or [parent]
    start, end = parent["pool_start"], parent["pool_end"]
    clips = sum(s[2] for w in workers for s in w["shards"])
    rows = dict.fromkeys(STAGES + OUTSIDE, 0.0)
    cpu = dict.fromkeys(STAGES, 0.0)
    for worker in workers:
        for name in STAGES:
            rows[name] += worker["seconds"][name]
            cpu[name] += worker["cpu"][name]
        if worker is parent:
            continue
        calls = sorted(worker["shards"])
        rows["worker start: fork, exec"] += max(0.0, worker["started"] - start)
        rows["worker start: interpreter, imports"] += calls[0][0] - max(start, worker["started"])
        rows["between shards: result back, next task"] += sum(b[0] - a[1] for a, b in zip(calls, calls[1:]))
        rows["wait at the end (other worker's last shard)"] += end - calls[-1][1]
    if workers != [parent]:  # the parent's display is not a worker's time: shown below the table
        rows.pop("progress display (parent)")
        cpu.pop("progress display (parent)")
    queued = sum(s[3] for w in workers for s in w["shards"])
    return {"rows": {k: 1000 * v / clips for k, v in rows.items()}, "clips": clips, "workers": len(workers),
            "cpu": {k: 1000 * v / clips for k, v in cpu.items()}, "queued_ms": 1000 * queued / clips,
            "pool_s": end - start, "before_s": start - parent["started"], "after_s": parent["ended"] - end,
            "parent_cpu_ms": 1000 * (parent["cpu_end"] - parent["cpu_start"]) / clips,
            "display_ms": 1000 * parent["seconds"]["progress display (parent)"] / clips,
            "parent_wait_ms": 1000 * parent["seconds"].get("waiting (parent)", 0.0) / clips}


def report(results: dict[int, dict], walls: dict[int, float]) -> None:
    """The table: per job count, wall ms per clip per worker, its share, and of it the ms on a core."""
    names = [n for n in STAGES + OUTSIDE if any(n in r["rows"] for r in results.values())]
    jobs = sorted(results)
    print(f"{'stage (ms per clip, per worker)':46}"
          + "".join(f"{f'--jobs {j} wall':>14}{'share':>7}{'on CPU':>8}" for j in jobs))
    totals = {j: sum(results[j]["rows"].values()) for j in jobs}
    for name in names:
        cells = ""
        for j in jobs:
            value, cpu = results[j]["rows"].get(name), results[j]["cpu"].get(name)
            cells += (f"{'-':>14}{'':>15}" if value is None else
                      f"{value:14.3f}{100 * value / totals[j]:6.1f}%" + (f"{cpu:8.3f}" if cpu is not None else " " * 8))
        print(f"{name:46}{cells}")
    print(f"{'sum of rows':46}" + "".join(f"{totals[j]:14.3f}{'':>7}{sum(results[j]['cpu'].values()):8.3f}"
                                          for j in jobs))
    measured = {j: 1000 * results[j]["workers"] * results[j]["pool_s"] / results[j]["clips"] for j in jobs}
    print(f"{'measured: workers x pool wall / clips':46}" + "".join(f"{measured[j]:14.3f}{'':>15}" for j in jobs))
    for j in jobs:
        r = results[j]
        print(f"--jobs {j}: {r['clips']} clips, {r['workers']} worker process(es), pool {r['pool_s']:.2f} s "
              f"({r['clips'] / r['pool_s']:.0f} clips/s); parent before the pool {r['before_s']:.2f} s "
              f"(interpreter, imports, listing, plan), after {r['after_s']:.2f} s; whole run {walls[j]:.2f} s; "
              f"parent CPU during the pool {r['parent_cpu_ms']:.3f} ms per clip (progress display "
              f"{r['display_ms']:.3f}); of the workers' time in shards, {r['queued_ms']:.3f} ms per clip "
              "was spent runnable but waiting for a core (/proc/self/schedstat)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400, help="clips")
    parser.add_argument("--shard-size", type=int, default=0, help="clips per shard (default N / 32, at least 8)")
    parser.add_argument("--work", default="/tmp/melshard-profile", help="scratch folder (deleted at the end)")
    parser.add_argument("--no-tty", action="store_true", help="run without a terminal (no progress bar)")
    args = parser.parse_args()
    shard_size = args.shard_size or max(8, args.n // 32)
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    print(f"# command: python bench/preprocess_profile.py --n {args.n} --shard-size {shard_size}"
          f"{' --no-tty' if args.no_tty else ''}")
    print(f"# preprocess profile: {machine()}")
    from bench.preprocess_throughput import make_clips

    make_clips(work / "clips", args.n, seed=args.n)
    results, walls = {}, {}
    for jobs in (1, 2):
        walls[jobs] = run_profiled(work / "clips", work / "out", jobs, shard_size, work / f"logs-{jobs}",
                                   tty=not args.no_tty)
        results[jobs] = table(work / f"logs-{jobs}")
    report(results, walls)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
