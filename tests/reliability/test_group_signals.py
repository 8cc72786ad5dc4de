"""Stopped the way clusters stop jobs: a signal to the whole process group (`timeout`, `kill -TERM
-PGID`, `docker stop`, SLURM's scancel and pre-emption warnings), at random moments and at the
awkward ones (loader workers starting, validation, a checkpoint being written).

Training saves one checkpoint, exits with 128 + the signal's number and one line, and `--resume`
ends with the uninterrupted run's exact weights; preprocessing and predict stop at once with one
line. Real processes, real signals: nothing here mocks a handler.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.faults import published, same_weights, warm_duration
from tests.audio_fixtures import REPO, make_corpus

TRAIN = ["--model", "cnn", "--width", "0.25", "--batch-size", "4", "--num-workers", "1", "--epochs", "2",
         "--checkpoint-every", "1", "--lr", "3e-3"]  # a checkpoint after every step: saves are often under way
ENV = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")  # as the reference run (threads change sums)


def _start(*args: str) -> subprocess.Popen:
    """`python -m ARGS` as the leader of a process group of its own, as a job's processes are."""
    return subprocess.Popen([sys.executable, "-m", *args], cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in found]


def _stop_group(process: subprocess.Popen, sig: int) -> tuple[bool, str]:
    """Signal the whole group, wait for it; (whether it was still running, its stderr)."""
    running = process.poll() is None
    if running:
        os.killpg(process.pid, sig)
    _, stderr = process.communicate(timeout=120)
    return running, stderr


def _assert_stopped_cleanly(process: subprocess.Popen, stderr: str, sig: int) -> None:
    assert process.returncode == 128 + sig, (process.returncode, stderr[-3000:])
    assert "Traceback" not in stderr and "Error" not in stderr, stderr[-3000:]
    stops = [line for line in stderr.splitlines() if line.startswith("stopped by")]
    assert len(stops) == 1 and stops[0].startswith(f"stopped by {signal.Signals(sig).name}") and "--resume" in stops[0]


def _wait_until(predicate, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        assert process.poll() is None, "the run ended before the moment came"
        time.sleep(0.002)
    raise AssertionError("timed out waiting for the moment")


@pytest.fixture(scope="module")
def uninterrupted(tiny_shards, tmp_path_factory):
    work = tmp_path_factory.mktemp("group-signals")
    duration = warm_duration(["trainer", "train", str(tiny_shards), *TRAIN], work / "reference", work / "warm")
    return work / "reference", duration


def _resumes_exactly(shards: Path, run: Path, reference: Path) -> None:
    resumed = subprocess.run([sys.executable, "-m", "trainer", "train", str(shards), "--out", str(run), *TRAIN,
                              "--resume"], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert same_weights(run / "last.pt", reference / "last.pt")


@pytest.mark.parametrize("seed,sig", [(1, signal.SIGTERM), (2, signal.SIGINT), (3, signal.SIGTERM)])
def test_a_group_signal_at_a_random_moment_saves_once_and_resumes_exactly(tiny_shards, uninterrupted, tmp_path,
                                                                          seed, sig):
    reference, duration = uninterrupted
    run = tmp_path / "run"
    process = _start("trainer", "train", str(tiny_shards), "--out", str(run), *TRAIN)
    time.sleep(float(np.random.default_rng(seed).uniform(0.1, 0.9)) * duration)
    running, stderr = _stop_group(process, sig)
    if running and process.returncode != 0:
        _assert_stopped_cleanly(process, stderr, sig)
    _resumes_exactly(tiny_shards, run, reference)


def _val_worker_started(process: subprocess.Popen):
    """True once a second loader process runs beside the train worker: validation has begun."""
    return lambda: len(_children(process.pid)) >= 2


def _saving(run: Path):
    return lambda: any(run.glob(".last.pt.*.tmp"))


@pytest.mark.parametrize("moment", ["workers starting", "validating", "saving"])
def test_a_group_sigterm_at_an_awkward_moment_saves_once_and_resumes_exactly(tiny_shards, uninterrupted, tmp_path,
                                                                             moment):
    reference, _ = uninterrupted
    run = tmp_path / "run"
    process = _start("trainer", "train", str(tiny_shards), "--out", str(run), *TRAIN)
    if moment == "workers starting":
        _wait_until(lambda: bool(_children(process.pid)), process)  # the first loader worker is forking
    elif moment == "validating":
        _wait_until(_val_worker_started(process), process)
    else:
        _wait_until(_saving(run), process)
    running, stderr = _stop_group(process, signal.SIGTERM)
    assert running
    _assert_stopped_cleanly(process, stderr, signal.SIGTERM)
    stopped = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    assert stopped["step"] < torch.load(reference / "last.pt", map_location="cpu", weights_only=True)["step"]
    _resumes_exactly(tiny_shards, run, reference)


def test_a_chosen_preemption_signal_checkpoints_and_the_others_are_left_alone(tiny_shards, uninterrupted, tmp_path):
    reference, _ = uninterrupted
    run = tmp_path / "run"
    # SLURM's `#SBATCH --signal=USR2@120` (say): USR2 warns the job; the run must save and stop.
    process = _start("trainer", "train", str(tiny_shards), "--out", str(run), *TRAIN,
                     "--stop-signals", "SIGTERM,SIGUSR2")
    _wait_until(lambda: (run / "last.pt").exists(), process)
    running, stderr = _stop_group(process, signal.SIGUSR2)
    assert running
    _assert_stopped_cleanly(process, stderr, signal.SIGUSR2)
    _resumes_exactly(tiny_shards, run, reference)
    # SIGUSR1 is a stop signal by default, as `--signal=USR1@...` is the usual choice.
    run = tmp_path / "run-usr1"
    process = _start("trainer", "train", str(tiny_shards), "--out", str(run), *TRAIN)
    _wait_until(lambda: (run / "last.pt").exists(), process)
    running, stderr = _stop_group(process, signal.SIGUSR1)
    _assert_stopped_cleanly(process, stderr, signal.SIGUSR1)


def test_an_unknown_stop_signal_is_refused_in_one_line(tiny_shards, tmp_path):
    for bad in ("SIGKILL", "SIGNOPE"):
        result = subprocess.run([sys.executable, "-m", "trainer", "train", str(tiny_shards), "--out",
                                 str(tmp_path / "run"), "--stop-signals", f"SIGTERM,{bad}"], cwd=REPO, env=ENV,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("error: --stop-signals:") and len(result.stderr.splitlines()) == 1
        assert not (tmp_path / "run").exists()


# --- requeue: --resume never mistakes a missing folder for "nothing to resume yet" ---

def _train(shards: Path, run: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainer", "train", str(shards), "--out", str(run), *TRAIN,
                           "--epochs", "1", *extra], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)


def test_resume_of_a_folder_that_does_not_exist_is_refused_and_auto_starts_it(tiny_shards, tmp_path):
    typo = tmp_path / "runs" / "nope"
    result = _train(tiny_shards, typo, "--resume")
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "does not exist" in result.stderr
    assert "--resume auto" in result.stderr
    assert not typo.exists() and not typo.parent.exists()
    empty = tmp_path / "empty"
    empty.mkdir()  # a folder no run has started in is no run to continue either
    result = _train(tiny_shards, empty, "--resume")
    assert result.returncode == 2 and "holds no run" in result.stderr, result.stderr
    # A requeued job passes the same command on its first start and on every later one.
    run = tmp_path / "requeued"
    first = _train(tiny_shards, run, "--resume", "auto")
    assert first.returncode == 0, first.stderr
    assert "starting from the beginning" in first.stderr
    again = _train(tiny_shards, run, "--resume=auto", "--epochs", "2")
    assert again.returncode != 0 and "--epochs 2 differs" in again.stderr  # it did find the run to continue
    again = _train(tiny_shards, run, "--resume=auto")
    assert again.returncode == 0 and "resuming" in again.stderr, again.stderr


# --- preprocess and predict: stop at once, one line ---

TINY = "shard_size = 3\n[audio]\nsr = 8000\nduration_s = 1.0\nn_fft = 256\nhop_length = 64\nn_mels = 32\n"


def test_preprocess_stopped_by_a_group_sigterm_says_so_and_reruns_to_identical_output(tmp_path):
    src = make_corpus(tmp_path / "corpus", per_class=30, labels=("low", "mid", "high", "chirp"))
    config = tmp_path / "tiny.toml"
    config.write_text(TINY + "[augment]\ncopies = 1\n")
    options = ["--config", str(config), "--jobs", "2"]
    reference, out = tmp_path / "reference", tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "preprocess", str(src), "--out", str(reference), *options], cwd=REPO,
                         env=ENV, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    process = _start("preprocess", str(src), "--out", str(out), *options)
    _wait_until(lambda: out.exists() and any(out.glob("*.tar")), process)  # shards are being written
    running, stderr = _stop_group(process, signal.SIGTERM)
    assert running
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.strip() and "clips/s" not in line]
    assert lines == ["stopped by SIGTERM: finished shards are kept; rerun the same command to resume"], stderr
    rerun = subprocess.run([sys.executable, "-m", "preprocess", str(src), "--out", str(out), *options], cwd=REPO,
                           env=ENV, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert published(out) == published(reference)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_predict_stops_within_a_second_with_one_line(trained, tmp_path, sig):
    many = tmp_path / "many"
    many.mkdir()
    sources = sorted(trained["test"].rglob("*.wav"))
    for i in range(600):  # enough files that the feature workers are busy when the signal comes
        shutil.copyfile(sources[i % len(sources)], many / f"f{i:04d}.wav")
    out = tmp_path / "s.csv"
    process = _start("trainer", "predict", str(trained["run"]), "--input", str(many), "--out", str(out), "--jobs", "2")
    _wait_until(lambda: bool(_children(process.pid)), process)
    time.sleep(0.5)
    sent = time.monotonic()
    os.killpg(process.pid, sig)
    first = process.stderr.readline()
    said = time.monotonic() - sent
    rest = process.communicate(timeout=120)[1]
    ended = time.monotonic() - sent
    assert process.returncode == 128 + sig, (process.returncode, first + rest)
    head = "interrupted" if sig == signal.SIGINT else "stopped by SIGTERM"
    assert first == f"{head}: nothing was written to {out}\n" and not rest.strip(), first + rest
    # At once: no waiting for the workers to finish the files in hand (it took 6 s); the exit
    # itself (freeing torch and the pool) adds a moment on a busy machine.
    assert said < 1.5 and ended < 5, (said, ended)
    assert not out.exists() and not list(tmp_path.glob("s.*"))


def test_a_stopped_progress_bar_is_cleared_so_the_one_line_stands_alone():
    import io

    from rich.console import Console

    from trainer.progress import FileProgress

    shown = io.StringIO()
    with pytest.raises(KeyboardInterrupt):
        with FileProgress(10, Console(file=shown, force_terminal=True, width=80)) as progress:
            progress.advance(3)
            raise KeyboardInterrupt
    assert shown.getvalue().endswith("\x1b[1A\x1b[2K")  # the bar's line erased
    shown = io.StringIO()
    with FileProgress(10, Console(file=shown, force_terminal=True, width=80)) as progress:
        progress.advance(10)
    assert "10/10" in shown.getvalue() and not shown.getvalue().endswith("\x1b[2K")  # a finished bar stays
