"""Training under torchrun: two CPU processes with gloo on tiny shards whose count (5) does not
divide by ranks x workers; plus the per-rank plan, checked sample by sample."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from shared.manifest import read_manifest
from tests.audio_fixtures import REPO, run_module
from trainer.data import ShardStream, shards_of


def _keys_of(stream: ShardStream, epoch: int) -> list[list[str]]:
    """Each batch's keys, for every worker of `stream` (read in-process, worker by worker)."""
    batches = []
    for worker in range(stream.workers):
        stream.start_epoch(epoch, next_worker=worker)  # in-process, "worker 0" plays `worker`
        batches += [[s for s in chunk["key"]] for chunk in stream]
    return batches


@pytest.mark.parametrize("world,workers,batch", [(2, 1, 4), (2, 2, 4), (3, 2, 5), (2, 3, 2)])
def test_ranks_and_workers_see_every_sample_once_in_equal_steps(tiny_shards, world, workers, batch):
    manifest = read_manifest(tiny_shards)
    shards = shards_of(manifest, "train")
    seen, steps = [], set()
    for rank in range(world):
        stream = ShardStream(str(tiny_shards), shards, batch, workers, seed=1, shuffle_buffer=50, with_keys=True,
                             chunk_batches=1, rank=rank, world=world)
        batches = _keys_of(stream, epoch=2)
        assert len(batches) == stream.batches_per_epoch(2)
        steps.add(len(batches))
        seen += [key for keys in batches for key in keys]
    assert len(steps) == 1  # every rank runs the same number of steps: no rank waits at a collective
    assert len(seen) == len(set(seen)) == manifest["splits"]["train"]["samples"]


def test_too_few_samples_for_the_slots_is_a_clear_error(tiny_shards):
    shards = shards_of(read_manifest(tiny_shards), "train")
    with pytest.raises(Exception, match="fewer --num-workers"):
        ShardStream(str(tiny_shards), shards, 1, 3, seed=1, rank=0, world=2)  # 6 or 7 samples a slot


def _metrics(run):
    with (run / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


def _torchrun(shards, run, *extra) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "trainer", "train", str(shards), "--out", str(run), "--model", "cnn", "--width", "0.25",
            "--batch-size", "4", "--num-workers", "1", "--epochs", "2", "--lr", "3e-3", "--checkpoint-every", "2",
            *extra]


ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def ddp_reference(tiny_shards, tmp_path_factory):
    run = tmp_path_factory.mktemp("ddp") / "run"
    result = subprocess.run(_torchrun(tiny_shards, run), cwd=REPO, env=ENV, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return run, result


def test_torchrun_two_gloo_ranks_train_in_sync_on_an_uneven_shard_count(tiny_shards, ddp_reference):
    manifest = read_manifest(tiny_shards)
    assert len(manifest["splits"]["train"]["shards"]) % 2 == 1
    run, result = ddp_reference
    assert "ranks in sync: weights identical on all 2 ranks" in result.stderr
    rows = _metrics(run)
    assert [int(r["train_samples"]) for r in rows] == [manifest["splits"]["train"]["samples"]] * 2
    assert result.stdout.count("done: best") == 1  # only rank 0 reports
    alone = run_module("trainer", "train", str(tiny_shards), "--out", str(run), "--resume")
    assert alone.returncode == 2 and "trained by 2 process(es), this launch has 1" in alone.stderr


def test_a_killed_ddp_run_resumes_to_the_same_weights(tiny_shards, ddp_reference, tmp_path):
    run = tmp_path / "run"
    process = subprocess.Popen(_torchrun(tiny_shards, run), cwd=REPO, env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:  # a mid-epoch checkpoint of epoch 2
        try:
            ckpt = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
            if ckpt["epoch"] >= 1 and sum(ckpt["position"]["consumed"]) > 0:
                break
        except Exception:  # noqa: BLE001 - not there yet, or being replaced right now
            pass
        time.sleep(0.01)
    assert process.poll() is None, "the run ended before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)  # torchrun, both ranks and their loader workers
    process.wait()
    resumed = subprocess.run(_torchrun(tiny_shards, run, "--resume"), cwd=REPO, env=ENV, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    mine = torch.load(run / "last.pt", map_location="cpu", weights_only=True)["model"]
    reference = torch.load(ddp_reference[0] / "last.pt", map_location="cpu", weights_only=True)["model"]
    assert all(torch.equal(mine[k], reference[k]) for k in reference)
