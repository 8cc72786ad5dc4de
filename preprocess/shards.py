"""Writing one shard: the work a single preprocessing worker does for one `ShardJob`.

A worker owns whole shards: it decodes each clip once, makes the original and its augmented
copies, writes them with webdataset's `TarWriter` to a hidden temporary file, fsyncs, renames it
to its final name (or uploads it whole to an object store: `preprocess.output`), and only then
records the shard in the journal. Nothing it returns to the
parent holds audio: a few counters and per-band sums.
"""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any

import numpy as np

from preprocess.augment import make_augmentation
from preprocess.output import output
from preprocess.plan import Item, ShardJob, copy_key, job_fingerprint
from shared.atomic import json_bytes
from shared.audio import AudioError, clip_to_mel, load_clip
from shared.config import PreprocessConfig
from shared.runtime import limit_threads, tune_allocator

JOURNAL = ".melshard"
TAR_MTIME = 0  # fixed member mtimes: identical inputs give byte-identical shards


class _HashingWriter(io.RawIOBase):
    """A write-only stream that hashes and counts bytes on their way to the file."""

    def __init__(self, handle):
        self.handle = handle
        self.sha256 = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.handle.write(data)


def _npy_bytes(mel: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, mel, allow_pickle=False)
    return buffer.getvalue()


def _item_samples(item: Item, cfg: PreprocessConfig) -> list[tuple[str, str | None, np.ndarray, float]]:
    """(key, augment name, mel, seconds before padding) for a clip and its copies."""
    y = load_clip(item.path, cfg.audio)
    samples = [(item.key, None, clip_to_mel(y, cfg.audio), y.size / cfg.audio.sr)]
    for copy in range(1, item.copies + 1):
        key = copy_key(item.key, copy)
        name, augment = make_augmentation(cfg.augment, cfg.audio.sr, cfg.seed, item.key, copy)
        samples.append((key, name, clip_to_mel(y, cfg.audio, augment), y.size / cfg.audio.sr))
    return samples


def journal_name(name: str) -> str:
    """The journal record of a finished shard, relative to the output."""
    return f"{JOURNAL}/done/{name}.json"


def _sample(item: Item, copy: int, key: str, augment: str | None, mel: np.ndarray, seconds: float) -> dict:
    """A WebDataset sample: `KEY.mel.npy`, `KEY.json` and, when labeled, `KEY.cls`."""
    meta = {"path": item.rel, "label": item.label, "copy": copy, "augment": augment,
            "duration_s": round(seconds, 4)}
    if item.group is not None:
        meta["group"] = item.group
    sample = {"__key__": key, "mel.npy": _npy_bytes(mel), "json": json.dumps(meta, sort_keys=True).encode("utf-8")}
    if item.cls is not None:
        sample["cls"] = str(item.cls).encode("ascii")
    return sample


class _BandStats:
    """Per-band sums of the train split's mels (float64), merged across shards in plan order."""

    def __init__(self, n_mels: int):
        self.sum = np.zeros(n_mels)
        self.sumsq = np.zeros(n_mels)
        self.frames = 0

    def add(self, mel: np.ndarray) -> None:
        values = mel.astype(np.float64)
        self.sum += values.sum(axis=1)
        self.sumsq += np.square(values).sum(axis=1)
        self.frames += values.shape[1]

    def to_dict(self) -> dict:
        return {"sum": self.sum.tolist(), "sumsq": self.sumsq.tolist(), "frames": self.frames}


def write_shard(job: ShardJob, cfg: PreprocessConfig, out: str) -> dict[str, Any]:
    """Write `job`'s shard under `out` (a folder or an fsspec URL) and return (and journal) its record."""
    import webdataset as wds  # imported here: the parent never needs it

    tune_allocator()
    limit_threads()
    target = output(out)
    stats = _BandStats(cfg.audio.n_mels)
    per_class: dict[str, int] = {}
    errors: list[list[str]] = []
    clips = samples_written = 0
    with target.open_shard(job.name) as handle:
        hashed = _HashingWriter(handle)
        with wds.TarWriter(hashed, encoder=False, mtime=TAR_MTIME) as sink:
            for item in job.items:
                try:
                    samples = _item_samples(item, cfg)
                except AudioError as exc:
                    errors.append([item.rel, "decode", exc.reason, exc.detail])
                    continue
                except Exception as exc:  # noqa: BLE001 - no input may vanish silently
                    errors.append([item.rel, "features", "error", f"{type(exc).__name__}: {exc}"])
                    continue
                for copy, (key, augment, mel, seconds) in enumerate(samples):
                    sink.write(_sample(item, copy, key, augment, mel, seconds))
                    if job.split == "train":
                        stats.add(mel)
                clips += 1
                samples_written += len(samples)
                if item.label is not None:
                    per_class[item.label] = per_class.get(item.label, 0) + len(samples)
    record = {
        "name": job.name, "split": job.split, "fingerprint": job_fingerprint(job, cfg),
        "samples": samples_written, "clips": clips, "bytes": hashed.size, "sha256": hashed.sha256.hexdigest(),
        "per_class": dict(sorted(per_class.items())), "errors": errors, "stats": stats.to_dict(),
    }
    target.write(journal_name(job.name), json_bytes(record))
    return record
