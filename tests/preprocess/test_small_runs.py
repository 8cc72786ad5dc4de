"""Small runs start fast: no worker pool for little work, and no heavy imports on the way."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from preprocess.pipeline import POOL_BYTES, POOL_SAMPLES, pool_size
from preprocess.plan import Item, ShardJob
from tests.audio_fixtures import REPO, make_corpus, write_tiny_config


def _plan(shards: int, clips_per_shard: int, copies: int = 0, size: int = 1000) -> list[ShardJob]:
    return [ShardJob("train", s, tuple(Item(f"k{s}_{i}", "p", "p", "a", 0, None, copies, size=size)
                                      for i in range(clips_per_shard))) for s in range(shards)]


def test_workers_start_only_for_enough_work(monkeypatch):
    monkeypatch.delenv("MELSHARD_POOL_SAMPLES", raising=False)
    assert pool_size(_plan(2, 10), jobs=2) == 1  # 20 clips: this process
    assert pool_size(_plan(4, POOL_SAMPLES // 4), jobs=8) == 1
    assert pool_size(_plan(4, POOL_SAMPLES // 4 + 1), jobs=8) == 2
    assert pool_size(_plan(4, POOL_SAMPLES // 8, copies=1), jobs=8) == 1  # copies count as work
    assert pool_size(_plan(4, POOL_SAMPLES // 4, copies=1), jobs=8) == 2
    assert pool_size(_plan(40, 500), jobs=8) == 8
    assert pool_size(_plan(40, 500), jobs=1) == 1
    assert pool_size(_plan(1, 5000), jobs=8) == 1  # one shard is one worker's work
    assert pool_size(_plan(3, 1, size=POOL_BYTES), jobs=8) == 3  # three long recordings
    monkeypatch.setenv("MELSHARD_POOL_SAMPLES", "1")
    assert pool_size(_plan(2, 10), jobs=2) == 2


def _run(args: list[str], pool_samples: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MELSHARD_POOL_SAMPLES"}
    env["COLUMNS"] = "200"  # the summary on one line
    if pool_samples is not None:
        env["MELSHARD_POOL_SAMPLES"] = pool_samples
    code = ("import sys; from melshard.cli import main; rc = main(sys.argv[1:], default='preprocess'); "
            "print('heavy:', sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'sklearn', 'librosa', 'numba', 'webdataset'))); "
            "from threadpoolctl import threadpool_info; from shared.runtime import tune_allocator; "
            "print('tuned:', sorted({i['num_threads'] for i in threadpool_info()}), "
            "tune_allocator.cache_info().currsize); sys.exit(rc)")
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env=dict(env, PYTHONPATH=str(REPO)),
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("pool_samples", [None, "1"])
def test_a_small_run_is_the_same_in_one_process_and_imports_nothing_heavy(tmp_path, pool_samples):
    src = make_corpus(tmp_path / "src", per_class=4)
    config = write_tiny_config(tmp_path / "tiny.toml")
    reference = _run([str(src), "--out", str(tmp_path / "one"), "--config", str(config), "--jobs", "1",
                      "--shard-size", "4"], None)
    result = _run([str(src), "--out", str(tmp_path / "two"), "--config", str(config), "--jobs", "2",
                   "--shard-size", "4"], pool_samples)
    assert reference.returncode == 0 and result.returncode == 0, result.stderr
    expected = "1 process)" if pool_samples is None else "2 processes)"
    assert expected in result.stdout + result.stderr, result.stdout + result.stderr
    assert "heavy: []" in reference.stdout  # the parent, which also did the work
    assert "heavy: []" in result.stdout
    # The command's own process is tuned as a worker is (one BLAS thread, the allocator's
    # thresholds): it does the clips of a small or --jobs 1 run.
    assert "tuned: [1] 1" in reference.stdout and "tuned: [1] 1" in result.stdout
    one = {p.name: p.read_bytes() for p in (tmp_path / "one").iterdir() if p.is_file()}
    two = {p.name: p.read_bytes() for p in (tmp_path / "two").iterdir() if p.is_file()}
    assert one == two and any(name.endswith(".tar") for name in one)


def test_a_small_run_in_the_callers_process_leaves_its_thread_settings_alone(tmp_path, monkeypatch):
    """The API may preprocess then train in one process: a run done there must not cap its threads."""
    import torch

    from preprocess.pipeline import RunOptions, run
    from shared.config import AugmentConfig, PreprocessConfig
    from tests.conftest import TINY_AUDIO

    monkeypatch.delenv("MELSHARD_POOL_SAMPLES", raising=False)
    torch.set_num_threads(2)
    src = make_corpus(tmp_path / "src", per_class=4)
    cfg = PreprocessConfig(audio=TINY_AUDIO, augment=AugmentConfig(copies=0), shard_size=4)
    result = run(RunOptions(src, tmp_path / "out", jobs=2), cfg)
    assert result.jobs == 1 and torch.get_num_threads() == 2


def test_a_malformed_pool_setting_is_a_usage_error(monkeypatch):
    from shared.errors import UsageError

    monkeypatch.setenv("MELSHARD_POOL_SAMPLES", "many")
    with pytest.raises(UsageError, match="MELSHARD_POOL_SAMPLES"):
        pool_size(_plan(2, 10), jobs=2)
    monkeypatch.setenv("MELSHARD_POOL_SAMPLES", "256")
    assert pool_size(_plan(2, 10), jobs=2, segmented=True) == 2  # windows are unknown before decoding
