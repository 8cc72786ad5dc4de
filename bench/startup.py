"""Start-up: how long small runs take end to end, where most users first meet the tool.

Times, as real subprocesses (interpreter start, imports and worker start-up included), best of
--repeat runs each:
  - `python -m preprocess` on 20 five-second 44.1 kHz WAV clips with --jobs 1 and --jobs 2;
  - `python -m trainer predict` of 10 raw files with a small trained cnn (trained here first);
and the import time of the modules each process needs (`python -X importtime`).

    python bench/startup.py [--repeat 3] [--work /tmp/melshard-startup]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, machine, python_env  # noqa: E402
from bench.preprocess_throughput import make_clips  # noqa: E402


def timed(command: list[str], repeat: int, before=None) -> float:
    """Best wall time of `repeat` runs of `command` (`before()` runs first each time, untimed)."""
    best = float("inf")
    for _ in range(repeat):
        if before:
            before()
        start = time.perf_counter()
        result = subprocess.run(command, cwd=REPO, env=python_env(), capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if result.returncode != 0:
            sys.exit(f"failed: {' '.join(command)}\n{result.stderr}")
        best = min(best, seconds)
    return best


def import_seconds(module: str) -> float:
    """Cumulative import time of `module` in a fresh interpreter."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"], cwd=REPO,
                            env=python_env(), capture_output=True, text=True, check=True)
    line = [row for row in result.stderr.splitlines() if row.rstrip().endswith(f"| {module}")][-1]
    return int(line.split("|")[1]) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--work", default="/tmp/melshard-startup", help="scratch folder (deleted at the end)")
    args = parser.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    print(f"# start-up: {machine()}")
    print(f"# command: python bench/startup.py --repeat {args.repeat}")
    make_clips(work / "clips20", 20, seed=20)
    out = work / "out"
    for jobs in (1, 2):
        seconds = timed([sys.executable, "-m", "preprocess", str(work / "clips20"), "--out", str(out),
                         "--jobs", str(jobs), "--augment-copies", "0"], args.repeat,
                        before=lambda: shutil.rmtree(out, ignore_errors=True))
        print(f"python -m preprocess, 20 clips, --jobs {jobs}: {seconds:.2f} s")

    make_clips(work / "train", 160, seed=1)
    shards, run = work / "shards", work / "run"
    subprocess.run([sys.executable, "-m", "preprocess", str(work / "train"), "--out", str(shards),
                    "--augment-copies", "0"], cwd=REPO, env=python_env(), check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "trainer", "train", str(shards), "--out", str(run), "--epochs", "1",
                    "--width", "0.25"], cwd=REPO, env=python_env(), check=True, capture_output=True)
    make_clips(work / "ten", 10, seed=10)
    seconds = timed([sys.executable, "-m", "trainer", "predict", str(run), "--input", str(work / "ten"),
                     "--out", str(work / "submission.csv")], args.repeat)
    print(f"python -m trainer predict, 10 raw files: {seconds:.2f} s")
    for module in ("melshard.cli", "preprocess.shards", "torch", "librosa.filters",
                   "sklearn.model_selection"):
        print(f"import {module}: {import_seconds(module):.2f} s")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
