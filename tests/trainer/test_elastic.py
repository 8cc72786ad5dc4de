"""The loader's position across layouts (ranks x workers x batch): interrupt an epoch on one
layout, continue it on another, and every sample is seen exactly once, every rank making the
same number of steps. In-process and fast: a `ShardStream` over synthetic samples (no tar
reading) for the property tests, real shards through real DataLoader workers for the rest."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.errors import UsageError
from shared.manifest import Manifest
from trainer import plan
from trainer.data import Shard, ShardStream, iter_batches, make_loader, shards_of


class Synthetic(ShardStream):
    """A ShardStream whose shards are made up: sample `i` of shard `s` has key `s/i`."""

    def _raw_samples(self, segments) -> Iterator[dict[str, Any]]:
        for shard, inside in segments:
            for first, stop in inside:
                for index in range(first, stop):
                    yield {"__key__": f"{shard.name}/{index}"}

    def _collate(self, chunk, worker):
        return {"key": [s["__key__"] for batch in chunk for s in batch], "sizes": [len(b) for b in chunk],
                "worker": worker}


def _streams(cls, shards, layout: tuple[int, int, int, int, int], **kwargs) -> list[ShardStream]:
    world, workers, batch, chunk, buffer = layout
    folder = kwargs.pop("folder", "unused")
    return [cls(folder, shards, batch, workers, seed=7, shuffle_buffer=buffer,
                chunk_batches=chunk, rank=rank, world=world, **kwargs) for rank in range(world)]


def _rank_batches(stream: ShardStream) -> list[list[str]]:
    """One rank's batches still to come, in step order, read in-process worker by worker."""
    _, _, steps, base_id = (int(v) for v in stream.control)
    remaining = plan.complement(stream._base if base_id else [], stream.samples)
    slots = plan.rank_slots(remaining, stream.layout, stream.rank)
    by_step = {}
    for worker, slot in enumerate(slots):
        stream.control[1] = worker  # in-process, "worker 0" plays `worker`
        batches = []
        for chunk in stream:
            start = 0
            for n in chunk["sizes"]:
                batches.append(chunk["key"][start:start + n])
                start += n
        done = plan.batches_done(slot, steps)
        assert len(batches) == len(slot.steps) - done
        by_step.update(zip(slot.steps[done:], batches))
    return [by_step[step] for step in sorted(by_step)]


def _run(streams: list[ShardStream], steps: int | None) -> tuple[list[str], dict[str, Any]]:
    """Take `steps` steps on every rank (all that are left when None): the keys, and the position."""
    per_rank = [_rank_batches(s) for s in streams]
    assert len({len(b) for b in per_rank}) == 1, "ranks make different numbers of steps"
    assert all(len(b) == streams[0].generation_steps - streams[0].steps for b in per_rank)
    steps = len(per_rank[0]) if steps is None else steps
    keys = []
    for stream, batches in zip(streams, per_rank):
        for batch in batches[:steps]:
            assert batch, "an empty batch"
            stream.note_batch({"key": batch})
            keys += batch
    states = [s.state_dict() for s in streams]
    assert all(state == states[0] for state in states)  # the position is global: any rank's will do
    return keys, states[0]


def _epoch_over_layouts(shards, layouts, fractions, epoch=3, cls=Synthetic, **kwargs) -> list[str]:
    """Start `epoch` on layouts[0], stop after fractions[0] of its steps, resume on layouts[1], ... to the end."""
    keys, state = [], None
    for index, layout in enumerate(layouts):
        streams = _streams(cls, shards, layout, **kwargs)
        for stream in streams:
            stream.load_state_dict(state) if state else stream.start_epoch(epoch)
        left = streams[0].generation_steps - streams[0].steps
        last = index == len(layouts) - 1
        taken, state = _run(streams, None if last else int(left * fractions[index]))
        keys += taken
    return keys


def _all_keys(shards) -> list[str]:
    return sorted(f"{s.name}/{i}" for s in shards for i in range(s.samples))


LAYOUT = st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(1, 6), st.integers(1, 3),
                   st.sampled_from([1, 3, 16]))


@settings(max_examples=150, deadline=None)
@given(sizes=st.lists(st.integers(1, 13), min_size=1, max_size=9),
       layouts=st.lists(LAYOUT, min_size=1, max_size=4),
       fractions=st.lists(st.floats(0, 1), min_size=4, max_size=4), shuffle=st.booleans())
def test_any_chain_of_layouts_sees_every_sample_once(sizes, layouts, fractions, shuffle):
    shards = [Shard(f"s{i}.tar", n) for i, n in enumerate(sizes)]
    # at least one sample per rank; a run shuffles (buffer > 0) or keeps the shard order (0) throughout
    layouts = [(min(w, sum(sizes)), k, b, c, buffer if shuffle else 0) for w, k, b, c, buffer in layouts]
    try:
        keys = _epoch_over_layouts(shards, layouts, fractions)
    except UsageError as error:  # the one refusal: fewer samples left than the new layout's ranks
        assert "fewer than the" in str(error)
        return
    assert sorted(keys) == _all_keys(shards)


@pytest.mark.parametrize("first,then", [((2, 2, 4, 2, 16), (1, 1, 8, 2, 16)), ((1, 1, 8, 2, 16), (2, 2, 4, 2, 16)),
                                        ((4, 3, 2, 1, 3), (2, 1, 4, 4, 5))])
def test_the_global_batch_kept_keeps_the_epochs_step_count(first, then):
    shards = [Shard(f"s{i}.tar", n) for i, n in enumerate([9, 3, 14, 8, 8, 1, 11])]  # uneven, 54 samples
    for fraction in (0.0, 0.3, 0.5, 0.99):
        a = _streams(Synthetic, shards, first)
        total = a[0].batches_per_epoch()
        for s in a:
            s.start_epoch(0)
        _, state = _run(a, int(total * fraction))
        b = _streams(Synthetic, shards, then)
        for s in b:
            s.load_state_dict(state)
        assert b[0].epoch_steps == total == b[0].batches_per_epoch()
        assert b[0].steps_done == int(total * fraction)


def test_fewer_shards_than_slots_and_a_resume_at_the_last_step():
    shards = [Shard("a.tar", 5), Shard("b.tar", 17), Shard("c.tar", 2)]  # 3 shards, 12 slots
    layout = (4, 3, 2, 2, 4)
    streams = _streams(Synthetic, shards, layout)
    for s in streams:
        s.start_epoch(1)
    total = streams[0].generation_steps
    keys, state = _run(streams, total - 1)  # one step left
    for then in [(1, 1, 8, 2, 4), (2, 2, 4, 1, 1), layout]:
        resumed = _streams(Synthetic, shards, then)
        for s in resumed:
            s.load_state_dict(state)
        assert resumed[0].epoch_steps - resumed[0].steps_done == 1  # the same global batch: one step left
        rest, _ = _run(resumed, None)
        assert sorted(keys + rest) == _all_keys(shards)


def test_a_resume_after_the_last_step_has_nothing_left():
    shards = [Shard("a.tar", 7), Shard("b.tar", 6)]
    streams = _streams(Synthetic, shards, (2, 1, 2, 1, 4))
    for s in streams:
        s.start_epoch(0)
    keys, state = _run(streams, None)
    assert sorted(keys) == _all_keys(shards)
    resumed = _streams(Synthetic, shards, (1, 2, 4, 1, 4))[0]
    resumed.load_state_dict(state)
    assert resumed.steps_done == resumed.epoch_steps == streams[0].epoch_steps
    assert _run([resumed], None)[0] == []


def test_the_same_layout_resumes_the_same_batches():
    shards = [Shard(f"s{i}.tar", n) for i, n in enumerate([9, 3, 14, 8])]
    layout = (2, 2, 3, 2, 5)
    full = [_rank_batches(s) for s in _streams(Synthetic, shards, layout)]
    for k in range(len(full[0]) + 1):
        streams = _streams(Synthetic, shards, layout)
        _, state = _run(streams, k)
        resumed = _streams(Synthetic, shards, layout)
        for s in resumed:
            s.load_state_dict(state)
        assert [_rank_batches(s) for s in resumed] == [batches[k:] for batches in full]


def test_consumed_ranges_are_what_the_steps_delivered():
    shards = [Shard(f"s{i}.tar", n) for i, n in enumerate([9, 3, 14, 8])]
    streams = _streams(Synthetic, shards, (2, 2, 3, 2, 5))
    keys, _ = _run(streams, 4)
    order = {}  # global index of each key in epoch 0's shard order
    offset = 0
    for shard, inside in streams[0]._segments([(0, streams[0].samples)], 0):
        for i in range(inside[0][0], inside[0][1]):
            order[f"{shard.name}/{i}"] = offset + i
        offset += shard.samples
    assert streams[0].consumed_ranges() == plan.merge((order[k], order[k] + 1) for k in keys)


def _loader_keys(stream: ShardStream) -> list[str]:
    return [k for b in iter_batches(make_loader(stream, False, 2)) for k in b["key"]]


def test_real_workers_resume_on_another_layout(tiny_shards):
    """Real shards, real DataLoader workers: 2 ranks x 2 workers stopped mid-epoch, then 1 x 1 and 1 x 3."""
    manifest = Manifest.read(tiny_shards)
    shards = shards_of(manifest, "train")
    streams = _streams(ShardStream, shards, (2, 2, 3, 1, 16), folder=str(tiny_shards), with_keys=True)
    seen = []
    for stream in streams:
        stream.start_epoch(2)
        loader_batches = iter_batches(make_loader(stream, False, 2))
        seen += [k for _, batch in zip(range(4), loader_batches) for k in batch["key"]]
        del loader_batches
    state = streams[0].state_dict()
    assert state["steps"] == 4 and state == streams[1].state_dict()
    for then in [(1, 1, 6, 2, 16), (1, 3, 6, 1, 16)]:
        resumed = _streams(ShardStream, shards, then, folder=str(tiny_shards), with_keys=True)[0]
        resumed.load_state_dict(state)
        rest = _loader_keys(resumed)
        assert len(rest) + len(seen) == manifest.splits["train"].samples
        assert sorted(rest + seen) == _all_keys_of(tiny_shards, shards)


def _all_keys_of(folder, shards) -> list[str]:
    stream = ShardStream(str(folder), shards, 4, 1, seed=0, with_keys=True)
    return sorted(_loader_keys(stream))


# --- the rest of the run on another layout: per-process batch, learning rate, schedule ---

def test_the_global_batch_is_kept_or_the_lr_scaled_with_it():
    from shared.config import TrainConfig, to_dict
    from trainer.elastic import relayout

    ckpt = {"train_config": to_dict(TrainConfig(batch_size=16, lr=1e-3)), "world_size": 4}  # global 64
    cfg = TrainConfig(batch_size=16, lr=1e-3)
    assert relayout(cfg, ckpt, 4, False) == (cfg, "")
    two, line = relayout(cfg, ckpt, 2, False)
    assert (two.batch_size, two.lr) == (32, 1e-3) and "global batch 64 (was 64)" in line
    with pytest.raises(UsageError, match="does not divide by 3"):
        relayout(cfg, ckpt, 3, False)
    given, line = relayout(TrainConfig(batch_size=8, lr=1e-3), ckpt, 3, True)  # global 24: lr x 24/64
    assert (given.batch_size, given.lr) == (8, pytest.approx(3.75e-4)) and "learning rate" in line


class _Stream:
    def __init__(self, left_in_epoch: int, per_epoch: int):
        self.epoch_steps, self.steps_done, self.per_epoch = left_in_epoch, 0, per_epoch

    def batches_per_epoch(self):
        return self.per_epoch


@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
def test_the_schedule_is_stretched_over_the_steps_left(schedule):
    import types

    import torch

    from shared.config import TrainConfig
    from trainer.elastic import _fit_schedule
    from trainer.schedule import make_scheduler

    cfg = TrainConfig(lr=1e-3, epochs=2, schedule=schedule)
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    scheduler = make_scheduler(optimizer, cfg, 100)
    for _ in range(40):
        optimizer.step()
        scheduler.step()
    before = scheduler.get_last_lr()[0]
    # Resumed in epoch 0 (50 steps per epoch before) with twice the global batch: 5 + 25 steps left.
    s = types.SimpleNamespace(optimizer=optimizer, scheduler=scheduler, schedule_steps=100)
    _fit_schedule(s, TrainConfig(lr=2e-3, epochs=2, schedule=schedule), _Stream(5, 25),
                  {"schedule_steps": 100, "train_config": {"lr": 1e-3}, "epoch": 0})
    assert s.schedule_steps == 20 + 30 and s.scheduler.last_epoch == 20  # 40% through, as before
    assert s.scheduler.get_last_lr()[0] == pytest.approx(2 * before, rel=0.05)  # the same point, lr x 2
    for _ in range(30):
        optimizer.step()
        s.scheduler.step()  # to the very end without running past the schedule
    assert s.scheduler.get_last_lr()[0] < 1e-5


def test_an_older_checkpoints_position_resumes_at_an_epoch_boundary_and_is_refused_mid_epoch():
    import types

    import torch

    from shared.config import TrainConfig
    from trainer.elastic import restore_position
    from trainer.schedule import make_scheduler

    shards = [Shard("a.tar", 20)]
    stream = Synthetic("unused", shards, 4, 2, seed=7, shuffle_buffer=4)
    cfg = TrainConfig(lr=1e-3, epochs=3)
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    s = types.SimpleNamespace(optimizer=optimizer, scheduler=make_scheduler(optimizer, cfg, 15), schedule_steps=15)
    for _ in range(5):
        s.scheduler.step()
    old = {"epoch": 1, "step": 5, "train_config": {"lr": 1e-3}, "schedule_steps": 15}
    restore_position(stream, s, cfg, {**old, "position": {"epoch": 1, "consumed": [0, 0], "next_worker": 0}})
    assert (stream.epoch, stream.steps_done, s.scheduler.last_epoch) == (1, 0, 5)
    with pytest.raises(UsageError, match="older format"):
        restore_position(stream, s, cfg, {**old, "position": {"epoch": 1, "consumed": [2, 1], "next_worker": 1}})
