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
from collections.abc import Iterable
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


def shard_problem(path: Path, size: int, sha256: str) -> str | None:
    """Why the file at `path` is not the shard the manifest describes, or None if it is."""
    try:
        actual = path.stat().st_size
    except FileNotFoundError:
        return "missing"
    if actual != size:
        return f"{actual} bytes where the manifest says {size} (cut short or overwritten)"
    digest = hashlib.sha256()
    with path.open("rb", buffering=0) as handle:
        while block := handle.read(READ_SIZE):
            digest.update(block)
    if digest.hexdigest() != sha256:
        return "sha256 differs from the manifest (corrupted bytes)"
    return None


def check_shards(folder: str | Path, shards: Iterable[dict[str, Any]],
                 policy: str) -> tuple[list[dict[str, Any]], list[BadShard]]:
    """(the good shard entries in order, the bad ones); `fail` raises `DataError` naming the first bad one."""
    if policy not in POLICIES:
        raise ValueError(f"on-bad-shard policy must be one of {POLICIES}, got {policy!r}")
    entries = list(shards)
    if is_remote(folder):
        # Hashing remote shards up front would download everything twice; they are checked as
        # they stream instead (tar header checksums, member and array sizes: `shared.shardio`).
        return entries, []
    folder = Path(folder)
    threads = min(8, len(entries), os.cpu_count() or 1) or 1
    with ThreadPoolExecutor(threads) as pool:
        problems = list(pool.map(lambda s: shard_problem(folder / s["name"], s["bytes"], s["sha256"]), entries))
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
