"""The epoch plan: which samples every rank and loader worker reads, in which batches. Pure
arithmetic on sample indices, known before any shard is opened, so the main process can say
exactly which samples a position has consumed without reading data.

The epoch's order is a function of (seed, epoch, shard list) alone: the shards, shuffled per
epoch, laid end to end, give global indices 0 .. N-1. A *layout* (ranks x workers, per-rank
batch, chunk, shuffle buffer) takes its shares of the samples not yet consumed in the epoch
(all of them at its start; fewer when a run resumes mid-epoch on another layout):
- the remaining samples, in global order, are cut into `world` contiguous rank shares;
- every rank makes the same number of steps S = ceil(remaining / global batch) (at most
  remaining // world, so no batch is empty), its share spread over them, larger batches first;
- the rank's batch j is made by worker (j // c) % workers: workers send chunks of c batches,
  and the DataLoader takes them round-robin, so the rank sees its batches in the order 0 .. S-1;
- a worker reads a contiguous stretch of its rank's share (its own shards plus at most the tails
  of two shared ones) and shuffles it through a buffer seeded by (seed, epoch, stretch).

So a layout's position is one number, the steps it has taken (the same on every rank), and the
samples those steps consumed are computable: the first samples each worker's seeded shuffle
delivers. Resuming on the same layout continues it exactly; on another one, the consumed
samples are set aside and the rest is planned afresh: every sample is still seen once.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

Ranges = list[tuple[int, int]]  # disjoint [start, stop) intervals of global indices, sorted
T = TypeVar("T")


def rng_seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


# --- sets of sample indices as sorted ranges ---

def merge(ranges: Iterable[tuple[int, int]]) -> Ranges:
    out: Ranges = []
    for start, stop in sorted((int(a), int(b)) for a, b in ranges if b > a):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], stop))
        else:
            out.append((start, stop))
    return out


def size(ranges: Ranges) -> int:
    return sum(stop - start for start, stop in ranges)


def complement(ranges: Ranges, total: int) -> Ranges:
    out, at = [], 0
    for start, stop in merge(ranges):
        if start > at:
            out.append((at, start))
        at = max(at, stop)
    return out + [(at, total)] if at < total else out


def take(ranges: Ranges, start: int, stop: int) -> Ranges:
    """Positions [start, stop) of the sequence `ranges` form laid end to end, as global ranges."""
    out, offset = [], 0
    for low, high in ranges:
        first, last = max(start - offset, 0), min(stop - offset, high - low)
        if first < last:
            out.append((low + first, low + last))
        offset += high - low
    return out


def positions_to_ranges(ranges: Ranges, positions: Iterable[int]) -> Ranges:
    """The global indices at `positions` of the sequence `ranges` form, as ranges."""
    starts = np.cumsum([0] + [high - low for low, high in ranges]).tolist()
    points = []
    for p in sorted(positions):
        i = bisect.bisect_right(starts, p) - 1
        g = ranges[i][0] + p - starts[i]
        points.append((g, g + 1))
    return merge(points)


# --- the layout's plan ---

@dataclass(frozen=True)
class Layout:
    world: int  # ranks
    workers: int  # loader workers per rank
    batch_size: int  # per rank
    chunk_batches: int  # batches per transfer from a worker
    shuffle_buffer: int  # 0: keep the global order (validation, prediction)


@dataclass(frozen=True)
class Slot:
    """One worker's part: its stretch of global indices and its batches."""

    ranges: Ranges
    sizes: list[int]  # its batches' sizes, in its order
    steps: list[int]  # the rank step that takes each of them


def steps_for(samples: int, layout: Layout) -> int:
    """S: the steps every rank makes over `samples` remaining samples."""
    if samples == 0:
        return 0
    return min(math.ceil(samples / (layout.batch_size * layout.world)), samples // layout.world)


def chunk_for(layout: Layout, steps: int) -> int:
    """Batches per chunk: the configured count, smaller when that would leave workers idle."""
    return max(1, min(layout.chunk_batches, math.ceil(steps / layout.workers)))


def worker_of_step(step: int, chunk: int, workers: int) -> int:
    return (step // chunk) % workers


def rank_slots(remaining: Ranges, layout: Layout, rank: int) -> list[Slot]:
    """Every worker's slot on `rank`, planned over the `remaining` samples of the epoch."""
    total = size(remaining)
    steps = steps_for(total, layout)
    low, high = rank * total // layout.world, (rank + 1) * total // layout.world
    share = high - low
    sizes = [share // steps + (j < share % steps) for j in range(steps)] if steps else []
    chunk = chunk_for(layout, steps)
    slots, start = [], low
    for worker in range(layout.workers):
        mine = [j for j in range(steps) if worker_of_step(j, chunk, layout.workers) == worker]
        count = sum(sizes[j] for j in mine)
        slots.append(Slot(take(remaining, start, start + count), [sizes[j] for j in mine], mine))
        start += count
    return slots


def shuffled(items: Iterable[T], buffer: int, rng: random.Random) -> Iterator[T]:
    """`items` through a shuffle buffer of `buffer` items (0 or 1: unchanged). Its output depends
    only on the count of items and the rng, so the same call on indices tells what it delivers."""
    if buffer <= 1:
        yield from items
        return
    held: list[T] = []
    for item in items:
        held.append(item)
        if len(held) >= buffer:
            i = rng.randrange(len(held))
            held[i], held[-1] = held[-1], held[i]
            yield held.pop()
    rng.shuffle(held)
    yield from held


def slot_rng(seed: int, epoch: int, slot: Slot) -> random.Random:
    first = slot.ranges[0][0] if slot.ranges else 0
    return random.Random(rng_seed(seed, epoch, first, size(slot.ranges)))


def delivered(slot: Slot, batches: int, seed: int, epoch: int, buffer: int) -> Ranges:
    """The global indices of the samples in the first `batches` batches `slot` delivers."""
    count = sum(slot.sizes[:batches])
    order = shuffled(iter(range(size(slot.ranges))), buffer, slot_rng(seed, epoch, slot))
    return positions_to_ranges(slot.ranges, (p for _, p in zip(range(count), order)))


def batches_done(slot: Slot, steps: int) -> int:
    """How many of `slot`'s batches the first `steps` rank steps took."""
    return bisect.bisect_left(slot.steps, steps)


def consumed(remaining: Ranges, layout: Layout, steps: int, seed: int, epoch: int) -> Ranges:
    """Every global index the first `steps` steps of `layout` consumed, over all ranks and workers."""
    taken: Ranges = []
    for rank in range(layout.world):
        for slot in rank_slots(remaining, layout, rank):
            taken += delivered(slot, batches_done(slot, steps), seed, epoch, layout.shuffle_buffer)
    return merge(taken)
