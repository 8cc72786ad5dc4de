"""Writing one shard: the work a single preprocessing worker does for one `ShardJob`.

A worker owns whole shards: it decodes each clip once, makes the original and its augmented
copies, writes them with `TarSink` (the bytes of webdataset's `TarWriter`) to a hidden
temporary file, fsyncs, renames it to its final name (or uploads it whole to an object store:
`preprocess.output`), and only then records the shard in the journal. Nothing it returns to the
parent holds audio: a few counters and per-band sums.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from preprocess.augment import make_augmentation
from preprocess.output import output
from preprocess.plan import Item, ShardJob, copy_key, job_fingerprint
from shared.atomic import json_bytes
from shared.audio import clip_to_mel, cropped_seconds, load_clip, windows
from shared.config import PreprocessConfig
from shared.decode import AudioError
from shared.melcodec import MEMBERS, decode_u8, encode_u8
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


@dataclass(frozen=True)
class Made:
    """One sample made from an input: a clip (or a window of it) or an augmented copy."""

    key: str
    copy: int
    augment: str | None
    mel: np.ndarray
    seconds: float  # before padding
    window: tuple[int, float] | None  # (segment index, offset in seconds) with --segment


def segment_key(key: str, index: int) -> str:
    """The key of window `index` of a recording: the first window keeps the recording's key."""
    return key if index == 0 else f"{key}_seg{index}"


def _item_samples(item: Item, cfg: PreprocessConfig) -> tuple[list[Made], float]:
    """The samples of a clip (each window of it with `audio.segment`) and its copies, and the
    seconds that cropping dropped. Built whole before any is written: an input that fails
    halfway leaves no sample behind."""
    audio = cfg.audio
    if audio.segment:  # a generator: one window's audio in memory at a time, only the mels are kept
        clips = ((segment_key(item.key, i), (i, offset), y) for i, (offset, y) in enumerate(windows(item.path, audio)))
        dropped = 0.0
    else:
        y = load_clip(item.path, audio)
        clips, dropped = iter([(item.key, None, y)]), cropped_seconds(item.path, y, audio)
    made = []
    for key, window, y in clips:
        made.append(Made(key, 0, None, clip_to_mel(y, audio), y.size / audio.sr, window))
        for copy in range(1, item.copies + 1):
            name, augment = make_augmentation(cfg.augment, audio.sr, cfg.seed, key, copy)
            made.append(Made(copy_key(key, copy), copy, name, clip_to_mel(y, audio, augment), y.size / audio.sr,
                             window))
    return made, dropped


def journal_name(name: str) -> str:
    """The journal record of a finished shard, relative to the output."""
    return f"{JOURNAL}/done/{name}.json"


def _sample(item: Item, made: Made, encoding: str = "float16") -> tuple[dict, np.ndarray]:
    """A WebDataset sample: `KEY.mel.npy` (or `KEY.mel.u8.npy` with `encoding` uint8: the codes,
    their offset and scale in the json, `shared.melcodec`), `KEY.json` and, when labeled,
    `KEY.cls`; and the mel a reader decodes from it (for the train statistics)."""
    meta = {"path": item.rel, "label": item.label, "copy": made.copy, "augment": made.augment,
            "duration_s": round(made.seconds, 4)}
    if item.group is not None:
        meta["group"] = item.group
    if made.window is not None:
        meta["segment"], meta["offset_s"] = made.window[0], round(made.window[1], 4)
    stored = made.mel
    if encoding == "uint8":
        codes, meta["mel_offset"], meta["mel_scale"] = encode_u8(made.mel)
        stored = decode_u8(codes, meta["mel_offset"], meta["mel_scale"])
        data = _npy_bytes(codes)
    else:
        data = _npy_bytes(made.mel)
    sample = {"__key__": made.key, MEMBERS[encoding]: data, "json": json.dumps(meta, sort_keys=True).encode("utf-8")}
    if item.cls is not None:
        sample["cls"] = str(item.cls).encode("ascii")
    return sample, stored


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


class TarSink:
    """Samples into an uncompressed tar stream, member for member and byte for byte as
    `webdataset.TarWriter(handle, encoder=False, mtime=TAR_MTIME)` writes them (members sorted
    by extension, mode 0444, owner "bigdata"). Written with `tarfile` directly because importing
    webdataset imports torch: over a second of every worker's start, for this loop.
    tests/preprocess/test_tar_sink.py holds the bytes equal to TarWriter's."""

    def __init__(self, handle):
        self._tar = tarfile.open(fileobj=handle, mode="w|")

    def write(self, sample: dict[str, bytes]) -> None:
        key = sample["__key__"]
        for ext in sorted(sample):
            if ext.startswith("_"):
                continue
            data = sample[ext]
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode = len(data), TAR_MTIME, 0o444
            info.uname = info.gname = "bigdata"
            self._tar.addfile(info, io.BytesIO(data))

    def __enter__(self) -> TarSink:
        return self

    def __exit__(self, *exc_info) -> None:
        self._tar.close()


@dataclass(frozen=True)
class ShardRecord:
    """What writing one shard made: the manifest's figures for it, its rejected inputs and its
    train statistics. Journaled beside the shard (`preprocess.journal`), so a rerun keeps it."""

    name: str
    split: str
    fingerprint: str  # of the job and the config (`job_fingerprint`): a changed plan rewrites the shard
    samples: int
    clips: int  # inputs written (each gave `copies + 1` samples, or one per window)
    bytes: int
    sha256: str
    per_class: dict[str, int]
    errors: list[list[str]]  # path, stage, reason, detail: one row per rejected input
    stats: dict[str, Any]  # train split: per-band sum and sum of squares, and the frame count
    cropped: int = 0  # clips longer than duration_s, cropped to it ...
    cropped_s: float = 0.0  # ... and the seconds the crop dropped
    stamp: Any = None  # the shard file's stat when written or last hashed (`Output.stamp`)

    @property
    def inputs(self) -> int:
        """Inputs the shard accounts for: clips written plus clips rejected."""
        return self.clips + len(self.errors)

    def to_json(self) -> bytes:
        return json_bytes(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ShardRecord:
        """A journaled record (a malformed one raises ValueError, KeyError or TypeError)."""
        data = json.loads(text)
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


def write_shard(job: ShardJob, cfg: PreprocessConfig, out: str, in_worker: bool = True) -> ShardRecord:
    """Write `job`'s shard under `out` (a folder or an fsspec URL) and return (and journal) its record.

    In a worker process, threads are limited to one and the allocator tuned for the clip loop;
    in the caller's own process (`in_worker=False`: a small run) its settings are left alone."""
    if in_worker:
        tune_allocator()
        limit_threads()
    target = output(out)
    stats = _BandStats(cfg.audio.n_mels)
    per_class: dict[str, int] = {}
    errors: list[list[str]] = []
    clips = samples_written = cropped = 0
    cropped_s = 0.0
    with target.open_shard(job.name) as handle:
        hashed = _HashingWriter(handle)
        with TarSink(hashed) as sink:
            for item in job.items:
                try:
                    samples, dropped = _item_samples(item, cfg)
                except AudioError as exc:
                    errors.append([item.rel, "decode", exc.reason, exc.detail])
                    continue
                except Exception as exc:  # noqa: BLE001 - no input may vanish silently
                    errors.append([item.rel, "features", "error", f"{type(exc).__name__}: {exc}"])
                    continue
                for made in samples:
                    sample, stored = _sample(item, made, cfg.mel_encoding)
                    sink.write(sample)
                    if job.split == "train":
                        stats.add(stored)
                clips += 1
                cropped += dropped > 0
                cropped_s += dropped
                samples_written += len(samples)
                if item.label is not None:
                    per_class[item.label] = per_class.get(item.label, 0) + len(samples)
    record = ShardRecord(job.name, job.split, job_fingerprint(job, cfg), samples_written, clips, hashed.size,
                         hashed.sha256.hexdigest(), dict(sorted(per_class.items())), errors, stats.to_dict(),
                         cropped, round(cropped_s, 3), target.stamp(job.name))
    target.write(journal_name(job.name), record.to_json())
    return record
