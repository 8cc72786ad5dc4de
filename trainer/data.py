"""Streaming shards into batches, with an exact, resumable position.

Each DataLoader worker runs a small WebDataset pipeline over its part of the shard list:
tar members -> samples -> seeded shuffle buffer -> skip what a resumed run already consumed
(before decoding) -> decode `mel.npy` with numpy (`allow_pickle=False`) -> batches. Workers
batch themselves (the DataLoader gets `batch_size=None`), so the main process does no
per-sample Python work and every batch records which worker made it.

The order is a pure function of (seed, epoch, shard list, worker count):
- shards are shuffled per epoch and dealt to workers round-robin; with fewer shards than
  workers, every worker reads every shard and keeps every W-th sample instead;
- each worker's shuffle buffer is seeded by (seed, epoch, worker);
- the DataLoader hands out batches round-robin over workers, skipping exhausted ones.

So the position after k batches is "how many batches of each worker were consumed, and which
worker comes next". A resumed loader skips those batches in each worker and rotates the
worker numbering so that its round-robin starts at the worker that came next.
"""

from __future__ import annotations

import io
import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

MEMBERS = ("mel.npy", "cls", "json")


@dataclass(frozen=True)
class Shard:
    name: str
    samples: int


def _wanted(name: str) -> bool:
    """Read only the members we decode; anything else (.pkl, .pyd, ...) is never touched."""
    return name.rsplit("/", 1)[-1].split(".", 1)[-1] in MEMBERS


def decode_mel(data: bytes, url: str) -> np.ndarray:
    """A sample's mel from its `.npy` bytes: numpy only, pickles refused."""
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"bad mel.npy in {url}: {exc}") from None


def _rng_seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


class ShardStream(IterableDataset):
    """Batches from a shard list, split across `workers` loader processes (see module doc).

    `control` is a shared int64 tensor `[epoch, offset, skip_0 .. skip_{W-1}]` that the main
    process sets before each epoch; persistent workers read it when an epoch starts.
    """

    def __init__(self, folder: str, shards: list[Shard], batch_size: int, workers: int,
                 seed: int, shuffle_buffer: int = 0, with_keys: bool = False):
        self.folder = str(folder)
        self.shards = list(shards)
        self.batch_size = batch_size
        self.workers = max(1, workers)
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer  # 0: keep shard order (validation, prediction)
        self.with_keys = with_keys
        self.control = torch.zeros(2 + self.workers, dtype=torch.int64).share_memory_()

    # --- the plan: which samples each logical worker reads, known from the manifest alone ---

    def _shard_order(self, epoch: int) -> list[int]:
        if not self.shuffle_buffer:
            return list(range(len(self.shards)))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.shards)).tolist()

    def _worker_plan(self, epoch: int, worker: int) -> tuple[list[Shard], int, int]:
        """(shards to read, keep every `stride`-th sample, starting at `start`)."""
        order = self._shard_order(epoch)
        if len(self.shards) >= self.workers:
            return [self.shards[i] for i in order[worker :: self.workers]], 1, 0
        return [self.shards[i] for i in order], self.workers, worker

    def worker_samples(self, epoch: int, worker: int) -> int:
        shards, stride, start = self._worker_plan(epoch, worker)
        total = sum(s.samples for s in shards)
        return max(0, math.ceil((total - start) / stride))

    def worker_batches(self, epoch: int) -> list[int]:
        return [math.ceil(self.worker_samples(epoch, w) / self.batch_size) for w in range(self.workers)]

    def batches_per_epoch(self, epoch: int = 0) -> int:
        return sum(self.worker_batches(epoch))

    @property
    def samples(self) -> int:
        return sum(s.samples for s in self.shards)

    def start_epoch(self, epoch: int, consumed: list[int] | None = None, next_worker: int = 0) -> None:
        """Set what the workers do on their next `iter()`: an epoch, resumed at a position."""
        self.control[0] = epoch
        self.control[1] = next_worker % self.workers
        self.control[2:] = torch.tensor(consumed or [0] * self.workers, dtype=torch.int64)

    # --- inside a worker ---

    def _raw_samples(self, shards: list[Shard]) -> Iterator[dict[str, Any]]:
        urls = [{"url": str(Path(self.folder) / s.name)} for s in shards]
        yield from wds.tariterators.tarfile_samples(urls, select_files=_wanted)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        physical = info.id if info is not None else 0
        epoch, offset = int(self.control[0]), int(self.control[1])
        worker = (physical + offset) % self.workers
        skip = int(self.control[2 + worker]) * self.batch_size
        shards, stride, start = self._worker_plan(epoch, worker)
        stream: Iterator[dict[str, Any]] = self._raw_samples(shards)
        if stride > 1:
            stream = (s for i, s in enumerate(stream) if i % stride == start)
        if self.shuffle_buffer:
            rng = random.Random(_rng_seed(self.seed, epoch, worker))
            stream = wds.shuffle(self.shuffle_buffer, min(100, self.shuffle_buffer), rng=rng)(stream)
        for _ in range(skip):  # already consumed before the interruption: never decoded
            if next(stream, None) is None:
                return
        batch: list[dict[str, Any]] = []
        for sample in stream:
            batch.append(sample)
            if len(batch) == self.batch_size:
                yield self._collate(batch, worker)
                batch = []
        if batch:
            yield self._collate(batch, worker)

    def _collate(self, samples: list[dict[str, Any]], worker: int) -> dict[str, Any]:
        mels = np.stack([decode_mel(s["mel.npy"], s["__url__"]) for s in samples])
        labels = [int(s["cls"]) if "cls" in s else -1 for s in samples]
        batch = {
            "mel": torch.from_numpy(mels),
            "label": torch.tensor(labels, dtype=torch.int64),
            "worker": torch.tensor(worker),
        }
        if self.with_keys:
            batch["key"] = [s["__key__"] for s in samples]
            batch["path"] = [json.loads(s["json"])["path"] for s in samples]
        return batch


def make_loader(stream: ShardStream, pin_memory: bool, prefetch_factor: int) -> DataLoader:
    """A DataLoader over a `ShardStream`: one process per logical worker, kept across epochs."""
    return DataLoader(
        stream, batch_size=None, num_workers=stream.workers, pin_memory=pin_memory,
        persistent_workers=True, prefetch_factor=prefetch_factor,
    )


def shards_of(manifest: dict[str, Any], split: str) -> list[Shard]:
    info = manifest.get("splits", {}).get(split)
    return [Shard(s["name"], s["samples"]) for s in info["shards"]] if info else []
