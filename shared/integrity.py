"""Checking shards against their manifest before anything trains on or predicts from them.

Each shard's size and sha256 are compared with what `manifest.json` recorded when the shard was
written. A damaged shard (cut short, bytes flipped, missing) is never read silently: by policy
the command stops with one line naming it (`fail`, the default), or goes on without it and says
how many samples that costs (`skip`). Hashing runs in threads (hashlib releases the GIL), so
checking is bounded by the disk, not by one core.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.errors import DataError
from shared.location import is_remote

POLICIES = ("fail", "skip")
READ_SIZE = 1 << 20


@dataclass(frozen=True)
class BadShard:
    name: str
    samples: int
    reason: str


# What is wrong with a shard, as integers: ranks that share the hashing combine them with a sum.
OK, MISSING, WRONG_SIZE, WRONG_HASH = 0, 1, 2, 3


def shard_status(path: Path, size: int, sha256: str) -> tuple[int, int]:
    """(problem code, the file's size in bytes) for the file at `path` against its manifest entry."""
    try:
        actual = path.stat().st_size
    except FileNotFoundError:
        return MISSING, 0
    if actual != size:
        return WRONG_SIZE, actual
    digest = hashlib.sha256()
    with path.open("rb", buffering=0) as handle:
        while block := handle.read(READ_SIZE):
            digest.update(block)
    return (OK if digest.hexdigest() == sha256 else WRONG_HASH), actual


def describe(code: int, actual: int, size: int) -> str | None:
    """The reason for a problem code, in words (None for OK)."""
    if code == MISSING:
        return "missing"
    if code == WRONG_SIZE:
        return f"{actual} bytes where the manifest says {size} (cut short or overwritten)"
    if code == WRONG_HASH:
        return "sha256 differs from the manifest (corrupted bytes)"
    return None


def shard_problem(path: Path, size: int, sha256: str) -> str | None:
    """Why the file at `path` is not the shard the manifest describes, or None if it is."""
    return describe(*shard_status(path, size, sha256), size)


def check_shards(folder: str | Path, shards: Iterable[dict[str, Any]], policy: str, rank: int = 0, world: int = 1,
                 combine: Callable[[list[float]], list[float]] | None = None,
                 ) -> tuple[list[dict[str, Any]], list[BadShard]]:
    """(the good shard entries in order, the bad ones); `fail` raises `DataError` naming the first bad one.

    With `world` > 1, this process hashes only every `world`-th shard from `rank`, and `combine`
    (an element-wise sum over all processes) gathers everyone's findings: each shard is read once
    however many processes check, and all of them reach the same verdict.
    """
    if policy not in POLICIES:
        raise ValueError(f"on-bad-shard policy must be one of {POLICIES}, got {policy!r}")
    entries = list(shards)
    if is_remote(folder):
        # Hashing remote shards up front would download everything twice; they are checked as
        # they stream instead (tar header checksums, member and array sizes: `shared.shardio`).
        return entries, []
    folder = Path(folder)
    mine = entries[rank::world]
    threads = min(8, len(mine), os.cpu_count() or 1) or 1
    with ThreadPoolExecutor(threads) as pool:
        found = list(pool.map(lambda s: shard_status(folder / s["name"], s["bytes"], s["sha256"]), mine))
    flat = [0.0] * (2 * len(entries))
    for i, (code, actual) in zip(range(rank, len(entries), world), found):
        flat[2 * i], flat[2 * i + 1] = code, actual
    if world > 1:
        if combine is None:
            raise ValueError("check_shards: world > 1 needs `combine` to gather the other processes' findings")
        flat = combine(flat)
    problems = [describe(int(flat[2 * i]), int(flat[2 * i + 1]), s["bytes"]) for i, s in enumerate(entries)]
    good = [s for s, problem in zip(entries, problems) if problem is None]
    bad = [BadShard(s["name"], s["samples"], problem) for s, problem in zip(entries, problems) if problem]
    if bad and policy == "fail":
        first = bad[0]
        more = f" (and {len(bad) - 1} more bad shards)" if len(bad) > 1 else ""
        raise DataError(f"shard {folder / first.name} is damaged: {first.reason}{more}; rerun the same "
                        f"`python -m preprocess ... --out {folder}` to rewrite it, or pass --on-bad-shard skip "
                        f"to go on without its {first.samples} samples")
    return good, bad


def describe_loss(bad: list[BadShard]) -> str:
    """'lost 16 samples in 2 damaged shards (train-000001.tar: missing; ...)'."""
    samples = sum(b.samples for b in bad)
    names = "; ".join(f"{b.name}: {b.reason}" for b in bad)
    return f"lost {samples} samples in {len(bad)} damaged shard{'s' if len(bad) != 1 else ''} ({names})"
