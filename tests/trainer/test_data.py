"""The streaming loader: every sample once per epoch, seeded order, exact resume position."""

from __future__ import annotations

import torch

from shared.manifest import Manifest
from trainer.data import ShardStream, iter_batches, make_loader, shards_of


def _stream(shards, workers, batch_size=4, seed=0, with_keys=True, chunk_batches=2):
    manifest = Manifest.read(shards)
    return ShardStream(str(shards), shards_of(manifest, "train"), batch_size, workers, seed,
                       shuffle_buffer=16, with_keys=with_keys, chunk_batches=chunk_batches)


def _epoch(stream, epoch, consumed=None, next_worker=0):
    stream.start_epoch(epoch, consumed, next_worker)
    return [(b["worker"], tuple(b["key"]), b["last_in_chunk"]) for b in iter_batches(make_loader(stream, False, 2))]


def test_each_sample_once_per_epoch_in_a_seeded_order(tiny_shards):
    manifest = Manifest.read(tiny_shards)
    stream = _stream(tiny_shards, workers=2)
    first = _epoch(stream, 0)
    keys = [k for _, batch, _ in first for k in batch]
    assert len(keys) == len(set(keys)) == manifest.splits["train"].samples
    assert len(first) == stream.batches_per_epoch(0)
    assert first == _epoch(_stream(tiny_shards, workers=2), 0)  # same seed, epoch, workers
    assert first != _epoch(stream, 1)  # another epoch, another order
    assert sorted(keys) == sorted(k for _, b, _ in _epoch(stream, 1) for k in b)


def test_more_workers_than_shards_still_reads_everything_once(tiny_shards):
    manifest = Manifest.read(tiny_shards)
    val = ShardStream(str(tiny_shards), shards_of(manifest, "val"), 3, 3, 0, with_keys=True)
    assert len(val.shards) < 3
    val.start_epoch(0)
    keys = [k for b in iter_batches(make_loader(val, False, 2)) for k in b["key"]]
    assert len(keys) == len(set(keys)) == manifest.splits["val"].samples


def test_a_resumed_position_continues_the_exact_sequence(tiny_shards):
    full = _epoch(_stream(tiny_shards, workers=2, chunk_batches=2), 3)
    assert not all(last for _, _, last in full)  # chunks of two batches
    for k in range(1, len(full)):  # an interruption after every batch, mid-chunk or not
        consumed = [0, 0]
        for worker, _, _ in full[:k]:
            consumed[worker] += 1
        worker, _, last = full[k - 1]
        rest = _epoch(_stream(tiny_shards, workers=2, chunk_batches=2), 3, consumed,
                      (worker + 1) % 2 if last else worker)
        assert [b[:2] for b in rest] == [b[:2] for b in full[k:]]


def test_mels_are_decoded_without_pickle_into_float16_batches(tiny_shards):
    stream = _stream(tiny_shards, workers=1, with_keys=False)
    stream.start_epoch(0)
    batch = next(iter_batches(make_loader(stream, False, 2)))
    assert batch["mel"].dtype == torch.float16 and batch["mel"].shape[1:] == (32, 126)
    assert batch["label"].dtype == torch.int64 and "key" not in batch
    labels = Manifest.read(tiny_shards).labels
    assert 0 <= int(batch["label"].min()) and int(batch["label"].max()) < len(labels)
