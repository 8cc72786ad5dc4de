"""The shard plan: which sample goes into which shard, fixed before any audio is read.

The plan is a pure function of the listed inputs and the config. That is what makes the output
independent of `--jobs` and lets an interrupted run redo exactly the shards it had not finished.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass

import numpy as np

from shared.config import AudioConfig, PreprocessConfig, to_dict
from shared.decode import recording_seconds
from shared.labels import label_index
from shared.sources import SPLITS, Clip


@dataclass(frozen=True, slots=True)  # slots: a million of them in the parent
class Item:
    """One input clip in a shard, with how many augmented copies follow it."""

    key: str
    path: str
    rel: str
    label: str | None
    cls: int | None
    group: str | None
    copies: int
    size: int | None = None  # the input file's size and mtime when listed: in the fingerprint only
    mtime_ns: int | None = None


@dataclass(frozen=True)
class ShardJob:
    """One unit of parallel work: a whole shard, written by a single worker."""

    split: str
    index: int
    items: tuple[Item, ...]

    @property
    def name(self) -> str:
        return shard_name(self.split, self.index)

    @property
    def samples(self) -> int:
        return sum(1 + item.copies for item in self.items)


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}.tar"


def _short_hash(text: str) -> str:
    # surrogateescape: a name that is not UTF-8 hashes as its own bytes (valid names are unchanged)
    return hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=4).hexdigest()


# Longest key kept as it is. Member names (key + "_augN.mel.npy") then stay within the 255 bytes
# a file name may have, so `tar -x` works on every shard; the JSON `path` keeps the full path.
MAX_KEY = 160


def sanitize_key(rel: str) -> str:
    """A WebDataset key from a relative path: no extension, no dots, only [A-Za-z0-9_-]; one
    longer than MAX_KEY keeps its start and ends with a 64-bit hash of the whole, so it stays unique."""
    stem = rel.rsplit(".", 1)[0] if "." in rel.rsplit("/", 1)[-1] else rel
    key = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_") or "clip"
    if len(key) > MAX_KEY:
        digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).hexdigest()
        key = f"{key[:MAX_KEY - len(digest) - 1]}_{digest}"
    return key


def copy_key(key: str, copy: int) -> str:
    return key if copy == 0 else f"{key}_aug{copy}"


# With --segment, a recording's windows after the first are KEY_segN (and KEY_segN_augM): a key
# of that shape could meet another recording's window, so it gets a hash too.
_WINDOW_LIKE = re.compile(r"_seg\d+(_aug\d+)?$")


def assign_keys(clips: list[Clip], copies: dict[str, int], segmented: bool = False) -> dict[str, str]:
    """Unique keys for all clips (and their copies); clashes get a hash of the path appended."""
    base = {clip.path: sanitize_key(("test/" if clip.split == "test" else "") + clip.rel)
            for clip in clips}
    owners: dict[str, str | None] = {}  # key -> the one path that claims it; None: claimed twice
    for clip in clips:
        for copy in range(1 + copies[clip.path]):
            key = copy_key(base[clip.path], copy)
            owner = owners.get(key, clip.path)
            owners[key] = clip.path if owner == clip.path else None
    keys = {}
    for clip in clips:
        key = base[clip.path]
        family = (copy_key(key, c) for c in range(1 + copies[clip.path]))
        if any(owners[k] is None for k in family) or (segmented and _WINDOW_LIKE.search(key)):
            key = f"{key}_{_short_hash(clip.rel + chr(0) + (clip.split or ''))}"
        keys[clip.path] = key
    return keys


def augment_copies(clips: list[Clip], cfg: PreprocessConfig) -> dict[str, int]:
    """Augmented copies per clip: `augment.copies` for each training clip, none elsewhere.

    With `balance_classes`, a smaller class's clips get more copies so that every class reaches
    the largest class's sample count: the copies it needs are spread over its clips (in path
    order, so the plan stays a pure function of the inputs), at most `balance_cap` per clip.
    """
    copies = {c.path: cfg.augment.copies if c.split == "train" else 0 for c in clips}
    if not cfg.augment.balance_classes:
        return copies
    by_class: dict[str, list[Clip]] = {}
    for clip in clips:
        if clip.split == "train" and clip.label is not None:
            by_class.setdefault(clip.label, []).append(clip)
    if not by_class:
        return copies
    target = max(len(members) for members in by_class.values()) * (1 + cfg.augment.copies)
    for members in by_class.values():
        members.sort(key=lambda c: (c.rel, c.path))
        each, extra = divmod(target - len(members), len(members))
        for i, clip in enumerate(members):
            copies[clip.path] = min(cfg.augment.balance_cap, max(cfg.augment.copies, each + (i < extra)))
    return copies


def expected_windows(clip: Clip, audio: AudioConfig) -> int:
    """How many samples one copy of `clip` makes: 1, or with `segment` its windows as the file's
    header gives its length (a bound: silent windows are left out later); 1 when it does not say."""
    if not audio.segment:
        return 1
    seconds = recording_seconds(clip.path)
    if seconds is None or seconds <= audio.duration_s:
        return 1
    return 1 + math.ceil((seconds - audio.duration_s) * audio.sr / audio.hop_samples)


def plan_shards(clips: list[Clip], labels: list[str], cfg: PreprocessConfig) -> list[ShardJob]:
    """Shuffle each split with the seed and cut it into shards of at most `shard_size` samples.

    A clip and its augmented copies always share a shard, so it is decoded once; so do a long
    recording's windows (`--segment`), counted from its header's length.
    """
    index = label_index(labels)
    copies = augment_copies(clips, cfg)
    keys = assign_keys(clips, copies, cfg.audio.segment)
    jobs: list[ShardJob] = []
    for split_id, split in enumerate(SPLITS):
        members = sorted((c for c in clips if c.split == split), key=lambda c: keys[c.path])
        order = np.random.default_rng([cfg.seed, split_id]).permutation(len(members))
        shards: list[list[Item]] = [[]]
        filled = 0
        for position in order:
            clip = members[position]
            item = Item(keys[clip.path], clip.path, clip.rel, clip.label,
                        index.get(clip.label) if clip.label is not None else None,
                        clip.group, copies[clip.path], clip.size, clip.mtime_ns)
            samples = expected_windows(clip, cfg.audio) * (1 + item.copies)
            if shards[-1] and filled + samples > cfg.shard_size:
                shards.append([])
                filled = 0
            shards[-1].append(item)
            filled += samples
        jobs.extend(ShardJob(split, i, tuple(s)) for i, s in enumerate(shards) if s)
    return jobs


# The feature code's version: raised when the same config gives other mel values, so that a run
# killed under one version is not finished under another (the rerun is refused and says so).
# 2: the mel product sums re^2 and im^2 through a sparse filterbank (a float16 value can move
# by one step, about 0.02% of them).
FEATURES = 2


def job_fingerprint(job: ShardJob, cfg: PreprocessConfig) -> str:
    """Identifies a shard's exact content: its items, each input file's size and modification
    time, and the config that turns them into mels.

    Absolute paths are left out, so a corpus that moved (same relative layout, times kept, as by
    `mv`, `cp -p` or `rsync -a`) still matches; a file replaced under the same name does not.
    """
    content = to_dict(cfg)
    recipe = {"audio": content["audio"], "augment": content["augment"], "seed": cfg.seed, "features": FEATURES}
    if cfg.mel_encoding != PreprocessConfig.mel_encoding:  # the default leaves earlier fingerprints as they were
        recipe["mel_encoding"] = cfg.mel_encoding
    items = [[i.key, i.rel, i.label, i.cls, i.group, i.copies, i.size, i.mtime_ns] for i in job.items]
    payload = json.dumps([recipe, job.name, items], sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()
