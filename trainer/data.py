"""Streaming shards into batches, with a position that survives a change of ranks or workers.

Each DataLoader worker runs a small pipeline over its part of the epoch: tar members -> samples
(`shared.shardio`) -> a seeded shuffle buffer -> skip what a resumed run already consumed
(before decoding) -> decode `mel.npy` (numeric arrays only, never a pickle; a uint8-encoded
`mel.u8.npy` to float32) -> batches. Workers
batch themselves (the DataLoader gets `batch_size=None`), so the main process does no
per-sample Python work and every batch records which worker made it.

Which worker reads which samples, in which batches, is `trainer.plan`: the epoch's order depends
only on (seed, epoch, shard list); ranks and workers take shares of what is not yet consumed, and
every rank makes the same number of steps. `ShardStream.state_dict()` is the loader's position:
the epoch, the samples consumed before the current layout took over (global index ranges), the
layout and the steps it has taken. `load_state_dict()` continues exactly on the same layout, and
on another one plans the rest of the epoch over exactly the samples not yet seen.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from shared.errors import UsageError
from shared.integrity import BadShard, check_shards
from shared.interrupt import STOPPABLE, blocked, ignore_in_worker
from shared.location import Location
from shared.manifest import Manifest
from shared.shardio import iter_stream, required_members, stack_mels
from trainer import plan

KEY_LOG = "MELSHARD_KEY_LOG"  # test hook: append "epoch step rank key" for every sample trained on
_BASE_IDS = itertools.count(1)


@dataclass(frozen=True)
class Shard:
    name: str
    samples: int


class ShardStream(IterableDataset):
    """Batches of one rank's share of a shard list, split across `workers` loader processes
    (see the module doc and `trainer.plan`).

    `control` is a shared int64 tensor `[epoch, first worker, steps taken, base id]` that the main
    process sets before each epoch; persistent workers read it when an epoch starts. The ranges
    consumed before the layout took over are too long for it: workers hold them from the moment
    they started, and `base id` tells them which ones to use (0: none, a fresh epoch).
    """

    def __init__(self, folder: str, shards: list[Shard], batch_size: int, workers: int,
                 seed: int, shuffle_buffer: int = 0, with_keys: bool = False, chunk_batches: int = 0,
                 rank: int = 0, world: int = 1, key_log: str | None = None):
        self.folder = str(folder)
        self.shards = list(shards)
        self.seed = seed
        self.with_keys = with_keys
        self.rank = rank
        # Handing a batch to the main process costs about a millisecond whatever its size, so
        # workers send chunks of ~256 samples.
        self.layout = plan.Layout(world, max(1, workers), batch_size,
                                  chunk_batches or max(1, 256 // batch_size), shuffle_buffer)
        self.key_log = key_log  # KEY_LOG's file, for the training stream
        self.control = torch.zeros(4, dtype=torch.int64).share_memory_()
        if 0 < self.samples < world:
            raise UsageError(f"{self.samples} samples cannot be shared by {world} processes; use fewer processes")
        self.start_epoch(0)

    @property
    def workers(self) -> int:
        return self.layout.workers

    @property
    def batch_size(self) -> int:
        return self.layout.batch_size

    @property
    def samples(self) -> int:
        return sum(s.samples for s in self.shards)

    def batches_per_epoch(self, epoch: int = 0) -> int:
        """Steps of every rank in a whole epoch on this layout (the same for every epoch)."""
        return plan.steps_for(self.samples, self.layout)

    # --- the position ---

    def _remaining(self, base: plan.Ranges) -> plan.Ranges:
        return plan.complement(base, self.samples)

    def start_epoch(self, epoch: int, consumed: list[int] | None = None, next_worker: int | None = None) -> None:
        """Start `epoch` from its beginning, or after `sum(consumed)` steps of this layout.

        `next_worker` makes loader worker 0 play that worker (in-process reads of one worker's
        batches); by default it is the worker whose batch comes next."""
        self.epoch, self.steps = epoch, sum(consumed or [])
        self._base, self._base_steps, self._base_id = [], 0, 0
        self._publish(next_worker)

    def _publish(self, first_worker: int | None = None) -> None:
        """Tell the workers (through `control`) where their next `iter()` starts."""
        if first_worker is None:  # the worker whose batch comes next
            first_worker = plan.worker_of_step(self.steps, plan.chunk_for(self.layout, self.generation_steps),
                                               self.workers)
        self.control[:] = torch.tensor([self.epoch, first_worker % self.workers, self.steps, self._base_id])

    @property
    def generation_steps(self) -> int:
        """Steps this layout makes in the epoch (all of them unless it took over mid-epoch)."""
        return plan.steps_for(self.samples - plan.size(self._base), self.layout)

    @property
    def epoch_steps(self) -> int:
        return self._base_steps + self.generation_steps

    @property
    def steps_done(self) -> int:
        return self._base_steps + self.steps

    def consumed_ranges(self) -> plan.Ranges:
        """Every global index of the epoch consumed so far (what a new layout must skip)."""
        taken = plan.consumed(self._remaining(self._base), self.layout, self.steps, self.seed, self.epoch)
        return plan.merge(self._base + taken)

    def state_dict(self) -> dict[str, Any]:
        slots = plan.rank_slots(self._remaining(self._base), self.layout, self.rank)
        chunk = plan.chunk_for(self.layout, self.generation_steps)
        return {
            "epoch": self.epoch, "steps": self.steps, "layout": asdict(self.layout),
            "before": {"ranges": [list(r) for r in self._base], "steps": self._base_steps},
            # for people reading the checkpoint: batches of each worker, and whose comes next
            "consumed": [plan.batches_done(slot, self.steps) for slot in slots],
            "next_worker": plan.worker_of_step(self.steps, chunk, self.workers),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue at `state`: exactly as saved on the same layout; on another one, over exactly
        the samples of the epoch not yet consumed."""
        fields = sorted(plan.Layout.__dataclass_fields__)
        if not (isinstance(state, dict) and {"epoch", "steps", "layout", "before"} <= set(state)
                and isinstance(state["layout"], dict) and sorted(state["layout"]) == fields
                and isinstance(state["before"], dict) and {"ranges", "steps"} <= set(state["before"])):
            got = f"keys {sorted(map(str, state))}" if isinstance(state, dict) else type(state).__name__
            raise UsageError(f"not a loader position: a state dict holds epoch, steps, layout ({', '.join(fields)}) "
                             f"and before (ranges, steps), as state_dict() returns it; got {got}")
        self.epoch, self.steps = int(state["epoch"]), int(state["steps"])
        self._base = plan.merge(tuple(r) for r in state["before"]["ranges"])
        self._base_steps = int(state["before"]["steps"])
        saved = plan.Layout(**state["layout"])
        if bool(saved.shuffle_buffer) != bool(self.layout.shuffle_buffer):
            raise UsageError("a shuffled epoch's position cannot continue an unshuffled one, or the reverse")
        if saved != self.layout:
            remaining = self._remaining(self._base)
            taken = plan.consumed(remaining, saved, self.steps, self.seed, self.epoch)
            self._base = plan.merge(self._base + taken)
            self._base_steps += self.steps
            self.steps = 0
            left = self.samples - plan.size(self._base)
            if 0 < left < self.layout.world:
                raise UsageError(f"only {left} samples of epoch {self.epoch + 1} remain, fewer than the "
                                 f"{self.layout.world} processes; resume with at most {left}")
        self._base_id = next(_BASE_IDS) if self._base else 0
        self._publish()

    def note_batch(self, batch: dict[str, Any]) -> None:
        """Called for each batch handed to training: one more step of the position."""
        if self.key_log and "key" in batch:
            lines = "".join(f"{self.epoch} {self.steps_done} {self.rank} {k}\n" for k in batch["key"])
            with open(self.key_log, "a", encoding="utf-8") as handle:
                handle.write(lines)
        self.steps += 1

    # --- inside a worker ---

    def _segments(self, ranges: plan.Ranges, epoch: int) -> list[tuple[Shard, plan.Ranges]]:
        """Global index ranges -> (shard, ranges of sample numbers within it), in global order."""
        order = list(range(len(self.shards)))
        if self.layout.shuffle_buffer:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.shards)).tolist()
        segments, start, i = [], 0, 0
        for index in order:  # both in global order: one pass over each
            shard = self.shards[index]
            stop = start + shard.samples
            inside = []
            while i < len(ranges) and ranges[i][0] < stop:
                low, high = ranges[i]
                if high > start:
                    inside.append((max(low, start) - start, min(high, stop) - start))
                if high > stop:
                    break  # it goes on into the next shard
                i += 1
            if inside:
                segments.append((shard, inside))
            start = stop
        return segments

    def _raw_samples(self, segments: list[tuple[Shard, plan.Ranges]]) -> Iterator[dict[str, Any]]:
        where = Location(self.folder)
        for shard, inside in segments:
            stop = inside[-1][1]
            wanted = iter(inside)
            first, last = next(wanted)
            with where.open(shard.name) as handle:
                samples = iter_stream(handle, where.url(shard.name), required=required_members(shard.name))
                for index, sample in enumerate(samples):
                    if index >= stop:
                        break  # the rest of this shard belongs to another slot: not even read
                    while index >= last:
                        first, last = next(wanted)
                    if index >= first:
                        yield sample

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        physical = info.id if info is not None else 0
        epoch, first_worker, steps, base_id = (int(v) for v in self.control)
        if base_id and base_id != self._base_id:
            raise RuntimeError("the loader's position changed after its workers started; make a new DataLoader")
        worker = (physical + first_worker) % self.workers
        remaining = self._remaining(self._base if base_id else [])
        slot = plan.rank_slots(remaining, self.layout, self.rank)[worker]
        chunk = plan.chunk_for(self.layout, plan.steps_for(plan.size(remaining), self.layout))
        done = plan.batches_done(slot, steps)
        stream = plan.shuffled(self._raw_samples(self._segments(slot.ranges, epoch)), self.layout.shuffle_buffer,
                               plan.slot_rng(self.seed, epoch, slot))
        for _ in range(sum(slot.sizes[:done])):  # already consumed before the interruption: never decoded
            if next(stream, None) is None:
                return
        # Batches travel to the main process in chunks, aligned to the worker's batch numbering
        # so that a resumed worker cuts the same batches.
        batches: list[list[dict[str, Any]]] = []
        for size in slot.sizes[done:]:
            batch = [sample for _, sample in zip(range(size), stream)]
            if not batch:
                break
            batches.append(batch)
            done += 1
            if done % chunk == 0:
                yield self._collate(batches, worker)
                batches = []
        if batches:
            yield self._collate(batches, worker)

    def _collate(self, chunk: list[list[dict[str, Any]]], worker: int) -> dict[str, Any]:
        samples = [s for batch in chunk for s in batch]
        mels = stack_mels(samples)  # float16 as stored, or float32 decoded from uint8 codes
        # One tensor per chunk: each tensor crosses to the main process as its own shared-memory
        # segment, so labels travel as a plain list.
        batch = {"mel": torch.from_numpy(mels), "label": [int(s["cls"]) if "cls" in s else -1 for s in samples],
                 "sizes": [len(b) for b in chunk], "worker": worker}
        if self.with_keys or self.key_log:
            batch["key"] = [s["__key__"] for s in samples]
        if self.with_keys:
            batch["meta"] = [json.loads(s["json"]) if "json" in s else {} for s in samples]
        return batch


def iter_batches(loader) -> Iterator[dict[str, Any]]:
    """Split the loader's chunks into batches (views, no copies), in order.

    Each batch has `mel` `[B, M, T]`, `label` (an int64 tensor), `worker`, and `last_in_chunk`,
    which tells whether that worker's next batch comes next too (it does mid-chunk). The stream's
    position advances by one step per batch handed out.
    """
    stream = getattr(loader, "dataset", None)
    note = stream.note_batch if isinstance(stream, ShardStream) else None
    with blocked(STOPPABLE):  # workers start here, and must not meet a group's stop signal before
        chunks = iter(loader)  # they ignore it (`make_loader`)
    for chunk in chunks:
        labels = torch.as_tensor(chunk["label"], dtype=torch.int64)
        start = 0
        for index, size in enumerate(chunk["sizes"]):
            batch = {"mel": chunk["mel"][start : start + size], "label": labels[start : start + size],
                     "worker": chunk["worker"], "last_in_chunk": index == len(chunk["sizes"]) - 1}
            for name in ("key", "meta"):
                if name in chunk:
                    batch[name] = chunk[name][start : start + size]
            start += size
            if note is not None:
                note(batch)
            yield batch


class BandNorm:
    """Per-band standardisation of float16 (or float32) mels `[B, M, T]` -> float32 `[B, 1, M, T]`.

    The one copy used by training, evaluation and prediction, so the model always sees inputs
    scaled the same way. Bands with (near) zero spread are floored so they cannot blow up.
    """

    def __init__(self, mean, std, device: torch.device):
        self.mean = torch.as_tensor(mean, dtype=torch.float32).to(device).reshape(-1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).to(device).clamp_min(1e-3).reshape(-1, 1)

    def __call__(self, mel: torch.Tensor) -> torch.Tensor:
        return ((mel.to(self.mean.device, non_blocking=True).float() - self.mean) / self.std).unsqueeze(1)


def make_loader(stream: ShardStream, pin_memory: bool, prefetch_factor: int) -> DataLoader:
    """A DataLoader over a `ShardStream`: one process per logical worker, kept across epochs.
    Its workers ignore stop signals sent to the whole process group (`shared.interrupt`)."""
    return DataLoader(
        stream, batch_size=None, num_workers=stream.workers, pin_memory=pin_memory,
        persistent_workers=True, prefetch_factor=prefetch_factor, worker_init_fn=ignore_in_worker,
    )


def close_loader(loader: DataLoader | None) -> None:
    """End a loader's workers now. Left to the end of the process, a failed run's workers would
    be ended by multiprocessing's clean-up while torch still watches them, which it reports as a
    traceback ("DataLoader worker ... is killed by signal")."""
    iterator = getattr(loader, "_iterator", None)  # persistent workers live in the loader's iterator
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()


def shards_of(manifest: Manifest, split: str) -> list[Shard]:
    """A split's shards as the loader takes them (none when the folder has no such split)."""
    return [Shard(s.name, s.samples) for s in manifest.shards(split)]


def checked_shards(folder: str | Path, manifest: Manifest, split: str, policy: str,
                   **share: Any) -> tuple[list[Shard], list[BadShard]]:
    """A split's shards that match the manifest, and the damaged ones (see `shared.integrity`;
    `share` splits the hashing among processes: rank, world, combine)."""
    good, bad = check_shards(folder, manifest.shards(split), policy, **share)
    return [Shard(s.name, s.samples) for s in good], bad
