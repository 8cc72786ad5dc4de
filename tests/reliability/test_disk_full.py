"""A full disk while writing shards or checkpoints: one clear line, nothing half-written under a
final name, and a rerun after freeing space completes with the result of a run that never failed.

The disk is a real small tmpfs (needs root, as in CI; skipped elsewhere), filled with a ballast
file so that the run runs out of space half way; deleting the ballast frees the space.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch

from bench.faults import published, same_weights
from tests.audio_fixtures import make_corpus, run_module
from trainer import checkpoint

TINY = "shard_size = 3\n[audio]\nsr = 8000\nduration_s = 1.0\nn_fft = 256\nhop_length = 64\nn_mels = 32\n"
TRAIN = ["--model", "cnn", "--width", "0.25", "--batch-size", "4", "--num-workers", "1", "--epochs", "3",
         "--lr", "3e-3"]


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", f"melshard-{uuid.uuid4().hex[:8]}", str(mount)],
                       check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a small tmpfs here ({exc}); needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """A ballast file that leaves about `leave` bytes free on `disk`."""
    stats = os.statvfs(disk)
    ballast = disk / "ballast"
    ballast.write_bytes(bytes(max(0, stats.f_bavail * stats.f_frsize - leave)))
    return ballast


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_preprocess_on_a_full_disk_fails_cleanly_and_completes_after_freeing_space(tmp_path, small_disk):
    src = make_corpus(tmp_path / "corpus", per_class=8, labels=("low", "mid", "high"))
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    args = ["--config", str(config), "--jobs", "2"]
    assert run_module("preprocess", str(src), "--out", str(tmp_path / "reference"), *args).returncode == 0
    expected = published(tmp_path / "reference")
    ballast = fill(small_disk, sum(len(data) for data in expected.values()) // 2)

    out = small_disk / "shards"
    failed = run_module("preprocess", str(src), "--out", str(out), *args)
    assert failed.returncode == 1
    line = one_error_line(failed.stderr)
    assert "No space left on device" in line and "rerun the same command" in line
    assert not (out / "manifest.json").exists()
    assert all(expected.get(name) == data for name, data in published(out).items())  # complete or absent
    assert not list(out.glob(".*.tmp"))

    ballast.unlink()
    assert run_module("preprocess", str(src), "--out", str(out), *args).returncode == 0
    assert published(out) == expected


def test_training_on_a_full_disk_fails_cleanly_and_resumes_to_the_same_weights(tiny_shards, tmp_path, small_disk):
    reference = tmp_path / "reference"
    assert run_module("trainer", "train", str(tiny_shards), "--out", str(reference), *TRAIN).returncode == 0
    size = (reference / checkpoint.LAST).stat().st_size
    # Room for best.pt and last.pt plus a temporary copy: the first epoch saves, a later one cannot.
    ballast = fill(small_disk, int(3.5 * size))

    run = small_disk / "run"
    failed = run_module("trainer", "train", str(tiny_shards), "--out", str(run), *TRAIN)
    assert failed.returncode == 1
    line = one_error_line(failed.stderr)
    assert "No space left on device" in line and "--resume" in line
    assert not list(run.glob(".*.tmp"))
    assert checkpoint.load_latest(run)["epoch"] >= 1  # the last complete checkpoint is kept

    ballast.unlink()
    resumed = run_module("trainer", "train", str(tiny_shards), "--out", str(run), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert same_weights(run / checkpoint.LAST, reference / checkpoint.LAST)


def test_a_save_that_runs_out_of_space_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """The same guarantee where no small disk can be mounted: the write itself raises ENOSPC."""
    target = tmp_path / "last.pt"
    checkpoint.save(target, {"version": 1, "w": torch.ones(3)}, keep_backup=True)

    def full_disk(obj, handle, *args, **kwargs):
        handle.write(b"partial bytes")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError) as caught:
        checkpoint.save(target, {"version": 2, "w": torch.zeros(3)}, keep_backup=True)
    assert caught.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert checkpoint.load(target)["version"] == 1
    assert not list(tmp_path.glob(".*.tmp")) and not (tmp_path / "last.prev.pt").exists()


def test_a_save_cut_short_by_a_file_size_limit_raises_the_os_error_and_keeps_the_previous_checkpoint(tmp_path):
    """A real failing write, no root needed: a file-size limit makes the write fail with EFBIG
    (Python ignores SIGXFSZ) part way through. The error must be the OSError itself, not the
    RuntimeError torch's zip writer raises when it is closed after a failed write."""
    script = f"""
import errno, resource, sys, torch
from trainer import checkpoint
from shared.errors import is_disk_full
target = {str(tmp_path / 'last.pt')!r}
checkpoint.save(target, {{"version": 1, "w": torch.ones(4)}}, keep_backup=True)
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
try:
    checkpoint.save(target, {{"version": 2, "w": torch.zeros(1_000_000)}}, keep_backup=True)
except BaseException as exc:
    print(type(exc).__name__, is_disk_full(exc))
    sys.exit(0)
print("saved")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["OSError", "True"]
    assert checkpoint.load(tmp_path / "last.pt")["version"] == 1
    assert not list(tmp_path.glob(".*.tmp")) and not (tmp_path / "last.prev.pt").exists()
