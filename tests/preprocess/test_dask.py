"""`--backend dask`: the same shard jobs on a real dask.distributed scheduler with two worker
processes on loopback give byte-identical shards and manifest to a local run."""

from __future__ import annotations

import pytest

from tests.audio_fixtures import REPO, make_corpus, run_module

distributed = pytest.importorskip("distributed", reason="pip install 'melshard[dask]' for the dask backend")

SMALL = "shard_size = 4\n[audio]\nsr = 8000\nduration_s = 1.0\nn_fft = 256\nhop_length = 64\nn_mels = 32\n"


def _published(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}


def test_a_dask_cluster_writes_the_same_bytes_as_local_processes(tmp_path, monkeypatch):
    src = make_corpus(tmp_path / "src", per_class=6, labels=("low", "mid", "high"))
    config = tmp_path / "small.toml"
    config.write_text(SMALL + "[augment]\ncopies = 1\n")
    local = run_module("preprocess", str(src), "--out", str(tmp_path / "local"), "--config", str(config),
                       "--jobs", "2")
    assert local.returncode == 0, local.stderr

    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the worker processes import this checkout
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        result = run_module("preprocess", str(src), "--out", str(tmp_path / "dask"), "--config", str(config),
                            "--backend", "dask", "--scheduler", cluster.scheduler_address)
        assert result.returncode == 0, result.stderr
        with distributed.Client(cluster) as client:  # the shard jobs really ran on the cluster
            prefixes = client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.task_prefixes))
    assert any("write_shard" in name for name in prefixes), prefixes
    assert _published(tmp_path / "dask") == _published(tmp_path / "local")
    assert len(_published(tmp_path / "local")) > 5


def test_dask_without_a_scheduler_is_a_usage_error(tmp_path):
    result = run_module("preprocess", str(tmp_path), "--out", str(tmp_path / "o"), "--backend", "dask")
    assert result.returncode == 2 and "--scheduler" in result.stderr
