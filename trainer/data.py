"""Streaming shards into batches, with an exact, resumable position, on one rank or many.

Each DataLoader worker runs a small WebDataset pipeline over its part of the epoch:
tar members -> samples (`shared.shardio`) -> webdataset's shuffle buffer, seeded -> skip what a
resumed run already consumed (before decoding) -> decode `mel.npy` (numeric arrays only, never
a pickle) -> batches. Workers batch themselves (the DataLoader gets `batch_size=None`), so the
main process does no per-sample Python work and every batch records which worker made it.

The plan is a pure function of (seed, epoch, shard list and sample counts from the manifest,
ranks x workers, batch size), known before any shard is opened:
- the shards are shuffled per epoch; laid end to end they form one sequence of N samples;
- that sequence is cut into `world x workers` contiguous slots of N // slots or N // slots + 1
  samples (slot = rank x workers + worker), so a slot reads its own shards plus at most the
  tails of two shared ones, and every sample belongs to exactly one slot;
- every slot makes the same number of batches K = ceil(ceil(N / slots) / batch_size), its samples
  spread evenly over them (sizes differ by at most one). So every rank runs the same number of
  steps, nothing is padded or dropped, and no rank waits on another at the end of an epoch;
- each worker's shuffle buffer is seeded by (seed, epoch, slot); workers send chunks of a few
  batches (one transfer each), cut at fixed batch numbers; the DataLoader takes chunks
  round-robin over workers.

So the position after k batches is "how many batches of each worker were consumed, and which
worker comes next", the same on every rank. A resumed loader skips those batches in each worker
and rotates the worker numbering so that its round-robin starts at the worker that came next.
"""

from __future__ import annotations

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

from shared.errors import UsageError
from shared.integrity import BadShard, check_shards
from shared.location import Location
from shared.shardio import decode_npy, iter_stream, required_members


@dataclass(frozen=True)
class Shard:
    name: str
    samples: int


def _rng_seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


class ShardStream(IterableDataset):
    """Batches of one rank's share of a shard list, split across `workers` loader processes
    (see the module doc).

    `control` is a shared int64 tensor `[epoch, offset, skip_0 .. skip_{W-1}]` that the main
    process sets before each epoch; persistent workers read it when an epoch starts.
    """

    def __init__(self, folder: str, shards: list[Shard], batch_size: int, workers: int,
                 seed: int, shuffle_buffer: int = 0, with_keys: bool = False, chunk_batches: int = 0,
                 rank: int = 0, world: int = 1):
        self.folder = str(folder)
        self.shards = list(shards)
        self.batch_size = batch_size
        self.workers = max(1, workers)
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer  # 0: keep shard order (validation, prediction)
        self.with_keys = with_keys
        self.rank, self.world = rank, world
        # Handing a batch to the main process costs about a millisecond whatever its size, so
        # workers send chunks of ~256 samples.
        self.chunk_batches = chunk_batches or max(1, 256 // batch_size)
        self.control = torch.zeros(2 + self.workers, dtype=torch.int64).share_memory_()
        slots = self.world * self.workers
        if self.world > 1 and self.samples // slots < self.slot_batches:
            raise UsageError(f"{self.samples} samples cannot give {slots} loader slots ({self.world} ranks x "
                             f"{self.workers} workers) {self.slot_batches} batches each; use fewer --num-workers "
                             "or processes, or a larger --batch-size")

    # --- the plan: which samples each slot reads, known from the manifest alone ---

    @property
    def samples(self) -> int:
        return sum(s.samples for s in self.shards)

    @property
    def slot_batches(self) -> int:
        """K: the batches every slot makes per epoch (fewer only for slots with fewer than K samples)."""
        slots = self.world * self.workers
        return math.ceil(math.ceil(self.samples / slots) / self.batch_size) if self.samples else 0

    def _shard_order(self, epoch: int) -> list[int]:
        if not self.shuffle_buffer:
            return list(range(len(self.shards)))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.shards)).tolist()

    def _slot_plan(self, epoch: int, worker: int) -> list[tuple[Shard, int, int]]:
        """(shard, first, stop) segments of this rank's `worker`: samples [first, stop) of each shard."""
        slots = self.world * self.workers
        slot = self.rank * self.workers + worker
        low, high = slot * self.samples // slots, (slot + 1) * self.samples // slots
        segments, start = [], 0
        for index in self._shard_order(epoch):
            shard = self.shards[index]
            first, stop = max(low - start, 0), min(high - start, shard.samples)
            if first < stop:
                segments.append((shard, first, stop))
            start += shard.samples
        return segments

    def worker_samples(self, epoch: int, worker: int) -> int:
        return sum(stop - first for _, first, stop in self._slot_plan(epoch, worker))

    def batch_sizes(self, samples: int) -> list[int]:
        """`samples` spread over K batches as evenly as possible (sizes differ by at most one)."""
        count = min(self.slot_batches, samples)
        return [samples // count + (i < samples % count) for i in range(count)] if count else []

    def worker_batches(self, epoch: int) -> list[int]:
        return [len(self.batch_sizes(self.worker_samples(epoch, w))) for w in range(self.workers)]

    def batches_per_epoch(self, epoch: int = 0) -> int:
        return sum(self.worker_batches(epoch))

    def start_epoch(self, epoch: int, consumed: list[int] | None = None, next_worker: int = 0) -> None:
        """Set what the workers do on their next `iter()`: an epoch, resumed at a position."""
        self.control[0] = epoch
        self.control[1] = next_worker % self.workers
        self.control[2:] = torch.tensor(consumed or [0] * self.workers, dtype=torch.int64)

    # --- inside a worker ---

    def _raw_samples(self, segments: list[tuple[Shard, int, int]]) -> Iterator[dict[str, Any]]:
        where = Location(self.folder)
        for shard, first, stop in segments:
            with where.open(shard.name) as handle:
                samples = iter_stream(handle, where.url(shard.name), required=required_members(shard.name))
                for index, sample in enumerate(samples):
                    if index >= stop:
                        break  # the rest of this shard belongs to the next slot: not even read
                    if index >= first:
                        yield sample

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        physical = info.id if info is not None else 0
        epoch, offset = int(self.control[0]), int(self.control[1])
        worker = (physical + offset) % self.workers
        segments = self._slot_plan(epoch, worker)
        sizes = self.batch_sizes(sum(stop - first for _, first, stop in segments))
        done = int(self.control[2 + worker])
        stream: Iterator[dict[str, Any]] = self._raw_samples(segments)
        if self.shuffle_buffer:
            slot = self.rank * self.workers + worker
            rng = random.Random(_rng_seed(self.seed, epoch, slot))
            stream = wds.shuffle(self.shuffle_buffer, min(100, self.shuffle_buffer), rng=rng)(stream)
        for _ in range(sum(sizes[:done])):  # already consumed before the interruption: never decoded
            if next(stream, None) is None:
                return
        # Batches travel to the main process in chunks of `chunk_batches`, aligned to the
        # epoch's batch numbering so that a resumed worker cuts the same batches.
        chunk: list[list[dict[str, Any]]] = []
        for size in sizes[done:]:
            batch = [sample for _, sample in zip(range(size), stream)]
            if not batch:
                break
            chunk.append(batch)
            done += 1
            if done % self.chunk_batches == 0:
                yield self._collate(chunk, worker)
                chunk = []
        if chunk:
            yield self._collate(chunk, worker)

    def _collate(self, chunk: list[list[dict[str, Any]]], worker: int) -> dict[str, Any]:
        samples = [s for batch in chunk for s in batch]
        mels = np.stack([decode_npy(s["mel.npy"], s["__url__"]) for s in samples])
        # One tensor per chunk: each tensor crosses to the main process as its own shared-memory
        # segment, so labels travel as a plain list.
        batch = {"mel": torch.from_numpy(mels), "label": [int(s["cls"]) if "cls" in s else -1 for s in samples],
                 "sizes": [len(b) for b in chunk], "worker": worker}
        if self.with_keys:
            batch["key"] = [s["__key__"] for s in samples]
            batch["meta"] = [json.loads(s["json"]) if "json" in s else {} for s in samples]
        return batch


def iter_batches(loader) -> Iterator[dict[str, Any]]:
    """Split the loader's chunks into batches (views, no copies), in order.

    Each batch has `mel` `[B, M, T]`, `label` (an int64 tensor), `worker`, and `last_in_chunk`,
    which tells whether that worker's next batch comes next too (it does mid-chunk).
    """
    for chunk in loader:
        labels = torch.as_tensor(chunk["label"], dtype=torch.int64)
        start = 0
        for index, size in enumerate(chunk["sizes"]):
            batch = {"mel": chunk["mel"][start : start + size], "label": labels[start : start + size],
                     "worker": chunk["worker"], "last_in_chunk": index == len(chunk["sizes"]) - 1}
            for name in ("key", "meta"):
                if name in chunk:
                    batch[name] = chunk[name][start : start + size]
            start += size
            yield batch


class BandNorm:
    """Per-band standardisation of float16 mels `[B, M, T]` -> float32 `[B, 1, M, T]`.

    The one copy used by training, evaluation and prediction, so the model always sees inputs
    scaled the same way. Bands with (near) zero spread are floored so they cannot blow up.
    """

    def __init__(self, mean, std, device: torch.device):
        self.mean = torch.as_tensor(mean, dtype=torch.float32).to(device).reshape(-1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).to(device).clamp_min(1e-3).reshape(-1, 1)

    def __call__(self, mel: torch.Tensor) -> torch.Tensor:
        return ((mel.to(self.mean.device, non_blocking=True).float() - self.mean) / self.std).unsqueeze(1)


def make_loader(stream: ShardStream, pin_memory: bool, prefetch_factor: int) -> DataLoader:
    """A DataLoader over a `ShardStream`: one process per logical worker, kept across epochs."""
    return DataLoader(
        stream, batch_size=None, num_workers=stream.workers, pin_memory=pin_memory,
        persistent_workers=True, prefetch_factor=prefetch_factor,
    )


def shard_entries(manifest: dict[str, Any], split: str) -> list[dict[str, Any]]:
    """The manifest's entries (name, samples, bytes, sha256) of one split's shards."""
    info = manifest.get("splits", {}).get(split)
    return list(info["shards"]) if info else []


def shards_of(manifest: dict[str, Any], split: str) -> list[Shard]:
    return [Shard(s["name"], s["samples"]) for s in shard_entries(manifest, split)]


def checked_shards(folder: str | Path, manifest: dict[str, Any], split: str, policy: str,
                   **share: Any) -> tuple[list[Shard], list[BadShard]]:
    """A split's shards that match the manifest, and the damaged ones (see `shared.integrity`;
    `share` splits the hashing among processes: rank, world, combine)."""
    good, bad = check_shards(folder, shard_entries(manifest, split), policy, **share)
    return [Shard(s["name"], s["samples"]) for s in good], bad
