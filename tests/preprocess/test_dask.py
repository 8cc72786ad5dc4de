"""`--backend dask`: the same shard jobs on a real dask.distributed scheduler with two worker
processes on loopback give byte-identical shards and manifest to a local run, written to a
folder and uploaded to an object store (a real S3 API on loopback); reruns on S3 resume."""

from __future__ import annotations

import contextlib
import os

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from tests.audio_fixtures import REPO, make_corpus, run_module, write_truncated_wav

distributed = pytest.importorskip("distributed", reason="pip install 'melshard[dask]' for the dask backend")

SMALL = "shard_size = 4\n[audio]\nsr = 8000\nduration_s = 1.0\nn_fft = 256\nhop_length = 64\nn_mels = 32\n"


def _published(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}


@contextlib.contextmanager
def _local_cluster():
    """Two worker processes on loopback. Starting them sets OMP_NUM_THREADS=1 (and MKL, OpenBLAS)
    in this process's environment for good (dask's nanny pre-spawn settings), which would make
    every later test's subprocess run torch on one thread; the environment is put back after."""
    saved = dict(os.environ)
    try:
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                      dashboard_address=None) as cluster:
            yield cluster
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_dask_without_a_scheduler_is_a_usage_error(tmp_path):
    result = run_module("preprocess", str(tmp_path), "--out", str(tmp_path / "o"), "--backend", "dask")
    assert result.returncode == 2 and "--scheduler" in result.stderr


def _objects(fs, prefix: str) -> dict[str, bytes]:
    """Every object under s3://melshard/PREFIX except the journal, by name."""
    fs.invalidate_cache()
    return {path.rsplit("/", 1)[1]: fs.cat_file(path) for path in sorted(fs.find(f"melshard/{prefix}"))
            if "/.melshard/" not in path}


def _add_bad_inputs(src) -> dict[str, str]:
    """Broken files among the clips (path -> reason): their reasons come back from the workers."""
    write_truncated_wav(src / "low" / "low_001_truncated.wav")
    sf.write(src / "mid" / "mid_003_all_zero.wav", np.zeros(8000, np.float32), 8000)
    (src / "high" / "high_005_random.wav").write_bytes(np.random.default_rng(1).bytes(5000))
    return {"low/low_001_truncated.wav": "truncated", "mid/mid_003_all_zero.wav": "silent",
            "high/high_005_random.wav": "undecodable"}


def test_a_dask_cluster_writes_the_same_bytes_to_a_folder_and_to_s3_as_local_processes(tmp_path, monkeypatch, s3):
    src = make_corpus(tmp_path / "src", per_class=6, labels=("low", "mid", "high"))
    bad = _add_bad_inputs(src)
    config = tmp_path / "small.toml"
    config.write_text(SMALL + "[augment]\ncopies = 1\n")
    local = run_module("preprocess", str(src), "--out", str(tmp_path / "local"), "--config", str(config),
                       "--jobs", "2")
    assert local.returncode == 0, local.stderr

    monkeypatch.setenv("PYTHONPATH", str(REPO))
    with _local_cluster() as cluster:
        for out in (str(tmp_path / "dask"), "s3://melshard/dask"):  # a shared file system; an object store
            result = run_module("preprocess", str(src), "--out", out, "--config", str(config),
                                "--backend", "dask", "--scheduler", cluster.scheduler_address)
            assert result.returncode == 0, result.stderr
        with distributed.Client(cluster) as client:  # the shard jobs really ran on the cluster
            prefixes = client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.task_prefixes))
    assert any("write_shard" in name for name in prefixes), prefixes
    assert len(_published(tmp_path / "local")) > 5
    errors = pd.read_csv(tmp_path / "dask" / "errors.csv")
    assert dict(zip(errors["path"], errors["reason"])) == bad and len(errors) == len(bad)
    assert _published(tmp_path / "dask") == _published(tmp_path / "local")
    uploaded = _objects(s3, "dask")
    assert uploaded == _published(tmp_path / "local")
    assert not [p for p in s3.find("melshard/dask") if p.endswith(".tmp")]  # no temporaries, no lock left
    assert not s3.exists("melshard/dask/.melshard/lock")


def test_a_rerun_on_s3_keeps_finished_shards_and_rewrites_a_lost_one(tmp_path, s3):
    src = make_corpus(tmp_path / "src", per_class=6, labels=("low", "mid", "high"))
    config = tmp_path / "small.toml"
    config.write_text(SMALL)
    command = ["preprocess", str(src), "--out", "s3://melshard/rerun", "--config", str(config), "--jobs", "2"]
    first = run_module(*command)
    assert first.returncode == 0, first.stderr
    before = _objects(s3, "rerun")
    shards = sorted(name for name in before if name.endswith(".tar"))
    s3.rm_file(f"melshard/rerun/{shards[1]}")
    again = run_module(*command)
    assert again.returncode == 0, again.stderr
    assert f"resumed: {len(shards) - 1} finished shard(s)" in again.stdout
    assert _objects(s3, "rerun") == before
    other = run_module(*command[:-2], "--jobs", "1", "--seed", "7")  # another config: refused, nothing touched
    assert other.returncode == 2 and "--overwrite" in other.stderr
    assert _objects(s3, "rerun") == before


def test_workers_without_the_stores_credentials_fail_in_one_line(tmp_path, monkeypatch, s3):
    src = make_corpus(tmp_path / "src", per_class=2, labels=("low", "mid"))
    config = tmp_path / "small.toml"
    config.write_text(SMALL)
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    credentials = {name: os.environ.pop(name) for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    try:
        with _local_cluster() as cluster:  # its workers start without the credentials
            os.environ.update(credentials)  # this process has them: it can write, its workers cannot
            result = run_module("preprocess", str(src), "--out", "s3://melshard/nocreds", "--config", str(config),
                                "--backend", "dask", "--scheduler", cluster.scheduler_address)
    finally:
        os.environ.update(credentials)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: a dask worker could not write to --out s3://melshard/nocreds (NoCredentialsError: ")
