"""Checking shards against their manifest before anything trains on or predicts from them.

Each shard's size and sha256 are compared with what `manifest.json` recorded when the shard was
written, and, in the same pass over its bytes, the shard is read as the loader will read it
(`shared.shardio`): every sample has its members and there are as many as recorded. A damaged
shard (cut short, bytes flipped, missing) is never read silently: by policy
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

from shared.errors import DataError
from shared.location import is_remote
from shared.manifest import ShardEntry
from shared.shardio import ShardError, iter_stream, required_members

POLICIES = ("fail", "skip")
READ_SIZE = 1 << 20


@dataclass(frozen=True)
class BadShard:
    name: str
    samples: int
    reason: str


# What is wrong with a shard, as integers: ranks that share the hashing combine them with a sum.
OK, MISSING, WRONG_SIZE, WRONG_HASH, UNREADABLE, WRONG_COUNT = 0, 1, 2, 3, 4, 5


class _Hashing:
    """A file read through a sha256: the tar reader's reads (it cannot seek) are what is hashed."""

    def __init__(self, handle):
        self.handle = handle
        self.digest = hashlib.sha256()

    def seekable(self) -> bool:
        return False

    def read(self, size: int) -> bytes:
        data = self.handle.read(size)
        self.digest.update(data)
        return data


def shard_status(path: Path, size: int, sha256: str, samples: int | None = None) -> tuple[int, int]:
    """(problem code, a figure for its description) for the file at `path` against its manifest
    entry: the file's size, or for WRONG_COUNT the samples read. With `samples`, the shard is
    also read as the loader reads it, in the same pass as the hash."""
    try:
        actual = path.stat().st_size
    except FileNotFoundError:
        return MISSING, 0
    if actual != size:
        return WRONG_SIZE, actual
    with path.open("rb", buffering=READ_SIZE) as handle:
        hashing = _Hashing(handle)
        read: int | None = None
        if samples is not None:
            try:
                stream = iter_stream(hashing, path.name, wanted=(), required=required_members(path.name))
                read = sum(1 for _ in stream)
            except ShardError:
                read = -1
        while hashing.read(READ_SIZE):  # the end-of-archive padding, or everything
            pass
    if hashing.digest.hexdigest() != sha256:
        return WRONG_HASH, actual
    if read == -1:
        return UNREADABLE, actual
    if read is not None and read != samples:
        return WRONG_COUNT, read
    return OK, actual


def describe(code: int, actual: int, size: int, samples: int | None = None) -> str | None:
    """The reason for a problem code, in words (None for OK)."""
    if code == MISSING:
        return "missing"
    if code == WRONG_SIZE:
        return f"{actual} bytes where the manifest says {size} (cut short or overwritten)"
    if code == WRONG_HASH:
        return "sha256 differs from the manifest (corrupted bytes)"
    if code == UNREADABLE:
        return "its tar cannot be read as melshard samples"
    if code == WRONG_COUNT:
        return f"{actual} samples read where the manifest says {samples}"
    return None


def unreadable_reason(path: Path) -> str:
    """What the tar reader says of a shard whose hash matched but whose samples cannot be read
    (read again for the words: the ranks that share the check exchange only codes)."""
    try:
        with path.open("rb") as handle:
            for _ in iter_stream(handle, path.name, wanted=(), required=required_members(path.name)):
                pass
    except ShardError as exc:
        return f"its tar cannot be read ({str(exc).removeprefix(path.name + ': ')})"
    return describe(UNREADABLE, 0, 0) or ""


def shard_problem(path: Path, size: int, sha256: str, samples: int | None = None) -> str | None:
    """Why the file at `path` is not the shard the manifest describes, or None if it is."""
    code, figure = shard_status(path, size, sha256, samples)
    return unreadable_reason(path) if code == UNREADABLE else describe(code, figure, size, samples)


def check_shards(folder: str | Path, shards: Iterable[ShardEntry], policy: str, rank: int = 0, world: int = 1,
                 combine: Callable[[list[float]], list[float]] | None = None,
                 ) -> tuple[list[ShardEntry], list[BadShard]]:
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
        found = list(pool.map(lambda s: shard_status(folder / s.name, s.bytes, s.sha256, s.samples), mine))
    flat = [0.0] * (2 * len(entries))
    for i, (code, actual) in zip(range(rank, len(entries), world), found):
        flat[2 * i], flat[2 * i + 1] = code, actual
    if world > 1:
        if combine is None:
            raise ValueError("check_shards: world > 1 needs `combine` to gather the other processes' findings")
        flat = combine(flat)
    problems = [unreadable_reason(folder / s.name) if int(flat[2 * i]) == UNREADABLE
                else describe(int(flat[2 * i]), int(flat[2 * i + 1]), s.bytes, s.samples)
                for i, s in enumerate(entries)]
    good = [s for s, problem in zip(entries, problems) if problem is None]
    bad = [BadShard(s.name, s.samples, problem) for s, problem in zip(entries, problems) if problem]
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
