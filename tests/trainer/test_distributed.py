"""Training under torchrun: two CPU processes with gloo on tiny shards whose count (5) does not
divide by ranks x workers; plus the per-rank plan, checked sample by sample, interruptions
(SIGKILL of everything, SIGTERM of one rank) and damaged shards checked by both ranks together."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from shared.manifest import Manifest
from tests.audio_fixtures import REPO
from trainer.data import ShardStream, iter_batches, make_loader, shards_of


def _keys_of(stream: ShardStream, epoch: int) -> list[list[str]]:
    """Each batch's keys, for every worker of `stream` (read in-process, worker by worker)."""
    batches = []
    for worker in range(stream.workers):
        stream.start_epoch(epoch, next_worker=worker)  # in-process, "worker 0" plays `worker`
        batches += [[s for s in chunk["key"]] for chunk in stream]
    return batches


@pytest.mark.parametrize("world,workers,batch", [(2, 1, 4), (2, 2, 4), (3, 2, 5), (2, 3, 2)])
def test_ranks_and_workers_see_every_sample_once_in_equal_steps(tiny_shards, world, workers, batch):
    manifest = Manifest.read(tiny_shards)
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
    assert len(seen) == len(set(seen)) == manifest.splits["train"].samples


def test_fewer_samples_than_processes_is_a_clear_error(tiny_shards):
    shards = shards_of(Manifest.read(tiny_shards), "train")
    # Batches are planned per rank, so tiny slots are fine: 19 steps of one sample on each rank.
    assert ShardStream(str(tiny_shards), shards, 1, 3, seed=1, rank=0, world=2).batches_per_epoch() == 19
    with pytest.raises(Exception, match="fewer processes"):
        ShardStream(str(tiny_shards), shards[:1], 1, 1, seed=1, rank=0, world=shards[0].samples + 1)


def _metrics(run):
    with (run / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


def _torchrun(shards, run, *extra) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "trainer", "train", str(shards), "--out", str(run), "--model", "cnn", "--width", "0.25",
            "--batch-size", "4", "--num-workers", "1", "--epochs", "2", "--lr", "3e-3", "--checkpoint-every", "2",
            "--class-weights", "balanced", "--ema-decay", "0.9", *extra]  # class weights and the weight
    # average ride along: resume stays exact with them, and the ranks' averages must agree


ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def ddp_reference(tiny_shards, tmp_path_factory):
    run = tmp_path_factory.mktemp("ddp") / "run"
    result = subprocess.run(_torchrun(tiny_shards, run), cwd=REPO, env=ENV, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return run, result


def test_torchrun_two_gloo_ranks_train_in_sync_on_an_uneven_shard_count(tiny_shards, ddp_reference):
    manifest = Manifest.read(tiny_shards)
    assert len(manifest.shards("train")) % 2 == 1
    run, result = ddp_reference
    assert "ranks in sync: weights identical on all 2 ranks, weight averages too" in result.stderr
    rows = _metrics(run)
    assert [int(r["train_samples"]) for r in rows] == [manifest.splits["train"].samples] * 2
    assert result.stdout.count("done: best") == 1  # only rank 0 reports


def _wait_for_mid_epoch_checkpoint(process: subprocess.Popen, run: Path, epoch: int) -> None:
    """Until `last.pt` holds a position inside epoch index `epoch` or later (saved by --checkpoint-every)."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        try:
            ckpt = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
            if ckpt["epoch"] >= epoch and sum(ckpt["position"]["consumed"]) > 0:
                return
        except Exception:  # noqa: BLE001 - not there yet, or being replaced right now
            pass
        time.sleep(0.01)
    assert process.poll() is None, "the run ended before it could be interrupted"


def _rank_pid(launcher: int, rank: int) -> int:
    """The pid of torchrun's child process running `rank` (found by its RANK variable)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if parent == launcher and f"RANK={rank}".encode() in environ:
            return int(proc.name)
    raise AssertionError(f"no rank {rank} under torchrun pid {launcher}")


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        try:
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) if proc.name.isdigit() else None
        except (OSError, IndexError, ValueError):
            continue
        if parent is not None:
            children.setdefault(parent, []).append(int(proc.name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def _kill_all(process: subprocess.Popen) -> None:
    """SIGKILL torchrun, every rank and their loader workers. torchrun starts each rank in a session
    of its own, so killing torchrun's process group would leave the ranks training on."""
    for pid in [process.pid, *_descendants(process.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()


def _same_weights(run: Path, reference: Path) -> bool:
    """The weights and their average (every tensor of both)."""
    mine = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    theirs = torch.load(reference / "last.pt", map_location="cpu", weights_only=True)
    return all(torch.equal(mine[w][k], theirs[w][k]) for w in ("model", "ema") for k in theirs[w])


def _resume(shards: Path, run: Path) -> None:
    resumed = subprocess.run(_torchrun(shards, run, "--resume"), cwd=REPO, env=ENV, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]


def test_a_killed_ddp_run_resumes_to_the_same_weights(tiny_shards, ddp_reference, tmp_path):
    run = tmp_path / "run"
    process = subprocess.Popen(_torchrun(tiny_shards, run), cwd=REPO, env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    _wait_for_mid_epoch_checkpoint(process, run, epoch=1)  # resumes into the second epoch
    _kill_all(process)
    _resume(tiny_shards, run)
    assert _same_weights(run, ddp_reference[0])


def test_sigterm_to_one_rank_stops_both_at_the_same_step_and_resumes_exactly(tiny_shards, ddp_reference, tmp_path):
    run = tmp_path / "run"
    process = subprocess.Popen(_torchrun(tiny_shards, run), cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    # As early as possible: with a step or two left, rank 1 could already be past its training loop,
    # where SIGTERM has its default effect.
    _wait_for_mid_epoch_checkpoint(process, run, epoch=0)
    os.kill(_rank_pid(process.pid, 1), signal.SIGTERM)  # rank 0 never sees a signal
    try:
        out, err = process.communicate(timeout=120)  # a rank left waiting at a collective would hang here
    finally:
        _kill_all(process) if process.poll() is None else None
    assert process.returncode != 0
    assert err.count("stopped by SIGTERM") == 1 and "--resume" in err  # rank 0 saved and said so
    stopped = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    final = torch.load(ddp_reference[0] / "last.pt", map_location="cpu", weights_only=True)
    assert stopped["step"] < final["step"]  # stopped part way, not at the end
    _resume(tiny_shards, run)
    assert _same_weights(run, ddp_reference[0])


def test_both_ranks_share_the_damage_check_and_agree(tiny_shards, tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    for file in tiny_shards.iterdir():
        if file.is_file():
            (shards / file.name).write_bytes(file.read_bytes())
    manifest = Manifest.read(shards)
    entries = manifest.shards("train")
    damaged = [entries[0].name, entries[1].name]  # one hashed by each rank
    (shards / damaged[0]).unlink()
    with (shards / damaged[1]).open("r+b") as handle:
        handle.seek(700)
        handle.write(b"\xff" * 16)
    run = tmp_path / "run"
    result = subprocess.run(_torchrun(shards, run, "--on-bad-shard", "skip", "--epochs", "1"), cwd=REPO, env=ENV,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("warning: train: lost") == 1  # printed by rank 0 only
    assert all(name in result.stderr for name in damaged)
    lost = sum(e.samples for e in entries[:2])
    row = _metrics(run)[0]
    assert int(row["train_samples"]) == manifest.splits["train"].samples - lost == \
        manifest.splits["train"].samples - int(row["lost_train_samples"])
    assert "ranks in sync: weights identical on all 2 ranks" in result.stderr


# --- resuming on another layout (ranks x workers), with every sample seen once ---

def _command(shards, ranks: int, *extra) -> list[str]:
    """`trainer train` on `ranks` processes (torchrun for more than one), without its --out."""
    launch = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks)] if ranks > 1 else []
    return [sys.executable, *launch, "-m", "trainer", "train", str(shards), "--model", "cnn",
            "--width", "0.25", "--epochs", "2", "--lr", "3e-3", "--checkpoint-every", "1", "--ema-decay", "0.9",
            *extra]  # validated with the weight average, as the reference run is


def _train_keys(shards: Path) -> list[str]:
    stream = ShardStream(str(shards), shards_of(Manifest.read(shards), "train"), 4, 1, seed=0, with_keys=True)
    return sorted(k for batch in iter_batches(make_loader(stream, False, 2)) for k in batch["key"])


def _logged(log: Path, epoch: int, before_step: int | None = None) -> list[str]:
    """Keys trained on in `epoch` (by any rank), at steps of the epoch before `before_step`."""
    keys = []
    for line in log.read_text().splitlines():
        e, step, _, key = line.split(" ", 3)
        if int(e) == epoch and (before_step is None or int(step) < before_step):
            keys.append(key)
    return keys


def _kill_mid_epoch_and_resume(shards, tmp_path, first: list[str], then: list[str]):
    """Run `first`, SIGKILL it at a checkpoint inside its second epoch, resume with `then`; return
    (the resumed result, keys the interrupted epoch trained on, metrics rows)."""
    run, before, after = tmp_path / "run", tmp_path / "keys-before.log", tmp_path / "keys-after.log"
    process = subprocess.Popen(first + ["--out", str(run)], cwd=REPO,
                               env=dict(ENV, MELSHARD_KEY_LOG=str(before)), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    _wait_for_mid_epoch_checkpoint(process, run, epoch=1)
    _kill_all(process)
    from trainer.checkpoint import load_latest

    position = load_latest(run)["position"]  # what --resume will continue from
    epoch, done = position["epoch"], position["before"]["steps"] + position["steps"]
    assert 0 < done, "killed at an epoch boundary; the test wants a mid-epoch position"
    resumed = subprocess.run(then + ["--out", str(run), "--resume"], cwd=REPO,
                             env=dict(ENV, MELSHARD_KEY_LOG=str(after)), capture_output=True, text=True, timeout=300,
                             check=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    seen = _logged(before, epoch, done) + _logged(after, epoch)
    assert sorted(_logged(before, 0)) == _train_keys(shards)  # the first epoch, uninterrupted, saw each once
    return resumed, seen, _metrics(run)


def _smooth(rows, reference_rows) -> None:
    """The schedule continues step for step, and the losses stay within the noise of uninterrupted
    runs: on these shards, 2x1, 2x2, 1x1 and 1x2 layouts (global batch 8) end their epochs with
    train losses up to 0.24 apart and validation losses up to 0.06 apart."""
    for row, ref in zip(rows, reference_rows):
        assert float(row["lr"]) == pytest.approx(float(ref["lr"]), rel=1e-6)
        assert abs(float(row["train_loss"]) - float(ref["train_loss"])) < 0.3, (row, ref)
        assert abs(float(row["val_loss"]) - float(ref["val_loss"])) < 0.1, (row, ref)


def test_a_2x2_run_killed_mid_epoch_resumes_on_1x1_seeing_every_sample_once(tiny_shards, ddp_reference, tmp_path):
    first = _command(tiny_shards, 2, "--batch-size", "4", "--num-workers", "2")
    then = _command(tiny_shards, 1, "--num-workers", "1")  # the global batch of 8 is kept: 8 per process
    resumed, seen, rows = _kill_mid_epoch_and_resume(tiny_shards, tmp_path, first, then)
    assert sorted(seen) == _train_keys(tiny_shards)  # the interrupted epoch: every sample once
    assert "resuming on 1 process(es) (trained on 2): batch 8 per process, global batch 8" in resumed.stderr
    manifest = Manifest.read(tiny_shards)
    assert [int(r["train_samples"]) for r in rows] == [manifest.splits["train"].samples] * 2
    assert [int(r["step"]) for r in rows] == [int(r["step"]) for r in _metrics(ddp_reference[0])]  # same steps
    _smooth(rows, _metrics(ddp_reference[0]))


def test_a_1x1_run_killed_mid_epoch_resumes_on_2x2_seeing_every_sample_once(tiny_shards, ddp_reference, tmp_path):
    first = _command(tiny_shards, 1, "--batch-size", "8", "--num-workers", "1")
    then = _command(tiny_shards, 2, "--num-workers", "2")  # 4 per process
    resumed, seen, rows = _kill_mid_epoch_and_resume(tiny_shards, tmp_path, first, then)
    assert sorted(seen) == _train_keys(tiny_shards)
    assert "ranks in sync: weights identical on all 2 ranks" in resumed.stderr
    manifest = Manifest.read(tiny_shards)
    assert [int(r["train_samples"]) for r in rows] == [manifest.splits["train"].samples] * 2
    assert [int(r["step"]) for r in rows] == [int(r["step"]) for r in _metrics(ddp_reference[0])]
    _smooth(rows, _metrics(ddp_reference[0]))


def _processes_naming(text: str) -> list[int]:
    """Processes whose command line names `text` (a run folder: the launcher, ranks, loader workers)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text.encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_sigterm_to_torchruns_process_group_stops_every_rank_once_and_resumes_on_2_and_on_1(
        tiny_shards, ddp_reference, tmp_path):
    """As `timeout`, scancel or `docker stop` stop a torchrun job: SIGTERM to the launcher's process
    group. torchrun forwards it to each rank's own group (the rank and its loader workers)."""
    run = tmp_path / "run"
    process = subprocess.Popen(_torchrun(tiny_shards, run), cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    _wait_for_mid_epoch_checkpoint(process, run, epoch=0)
    assert len(_descendants(process.pid)) >= 4  # two ranks, each with its loader worker
    os.killpg(process.pid, signal.SIGTERM)
    try:
        _, err = process.communicate(timeout=120)  # a rank left waiting at a collective would hang here
    finally:
        _kill_all(process) if process.poll() is None else None
    time.sleep(1)
    assert _processes_naming(str(run)) == []  # every rank and loader worker has exited
    assert err.count("stopped by SIGTERM") == 1 and "--resume" in err  # rank 0 saved and said so
    assert "DataLoader worker" not in err and "killed by signal" not in err
    stopped = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    final = torch.load(ddp_reference[0] / "last.pt", map_location="cpu", weights_only=True)
    assert stopped["step"] < final["step"]
    on_one = tmp_path / "on-one"
    shutil.copytree(run, on_one)
    _resume(tiny_shards, run)
    assert _same_weights(run, ddp_reference[0])  # on the same 2 ranks: exact
    # On one process the epoch goes on over exactly the samples not yet seen, as after a SIGKILL.
    alone = [sys.executable, "-m", "trainer", "train", str(tiny_shards), "--out", str(on_one), "--num-workers", "1",
             "--resume"]  # the global batch of 8 is kept: 8 on the one process
    resumed = subprocess.run(alone,
                             cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming on 1 process(es) (trained on 2)" in resumed.stderr
    manifest = Manifest.read(tiny_shards)
    rows = _metrics(on_one)
    assert [int(r["train_samples"]) for r in rows] == [manifest.splits["train"].samples] * 2
    assert [int(r["step"]) for r in rows] == [int(r["step"]) for r in _metrics(ddp_reference[0])]
