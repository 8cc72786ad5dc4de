"""`DIR/manifest.json`: what a shard folder holds and how it was made.

The preprocessor writes it last (`preprocess/pipeline.py`, `build_manifest`); everything that
reads it goes through `Manifest`, a frozen, typed view checked once, when it is loaded:

    format      "melshard/1"
    audio       the AudioConfig the mels were made with
    augment     the AugmentConfig of the stored copies
    seed        the seed of the split, the shard order and the augmentation
    preprocess  the remaining PreprocessConfig fields (val_fraction, shard_size, max_rejected, and
                mel_encoding when not float16: absent means float16)
    labels      class names; label index i is labels[i]
    splits      per split (train, val, test): samples, clips, per_class samples, shards (name,
                samples, bytes, sha256) and, for train, copies_per_class (augmented copies)
    stats       per-band mel_mean and mel_std of the train split
    inputs      total, written, rejected; cropped clips and the seconds of audio cropped; hidden
                files rejected unread (within rejected)
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.atomic import json_bytes
from shared.config import AudioConfig, AugmentConfig, PreprocessConfig, from_dict, to_dict
from shared.errors import ConfigError, DataError, UsageError, one_line
from shared.location import Location

FORMAT = "melshard/1"
MANIFEST = "manifest.json"
ERRORS = "errors.csv"

SHARD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\.tar")  # plain names only: no paths, no shell syntax


def config_fields(cfg: PreprocessConfig) -> dict[str, Any]:
    """The manifest's config part: `audio`, `augment`, `seed` and the remaining options."""
    data = to_dict(cfg)
    if data["mel_encoding"] == PreprocessConfig.mel_encoding:  # the default is not written (older manifests lack it)
        del data["mel_encoding"]
    return {
        "audio": data.pop("audio"),
        "augment": data.pop("augment"),
        "seed": data.pop("seed"),
        "preprocess": data,
    }


@dataclass(frozen=True)
class ShardEntry:
    """One shard as the manifest records it."""

    name: str  # a plain file name in the shard folder
    samples: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Split:
    """One split's counts and shards."""

    samples: int  # augmented copies included
    clips: int  # inputs the samples came from
    per_class: dict[str, int]  # samples per label (unlabeled test clips are in no class)
    shards: tuple[ShardEntry, ...]
    copies_per_class: dict[str, int] | None = None  # train: augmented copies per label


@dataclass(frozen=True)
class Inputs:
    """What happened to every input: `written + rejected == total`."""

    total: int
    written: int
    rejected: int
    cropped: int = 0  # clips longer than duration_s, cropped to it (without audio.segment) ...
    cropped_s: float = 0.0  # ... and the seconds of audio the crop dropped
    hidden: int = 0  # rejected as hidden files (names starting with "."): never read, not a failure


@dataclass(frozen=True)
class Stats:
    """Per-band statistics of the train split's mels (what training normalises with)."""

    mel_mean: tuple[float, ...]
    mel_std: tuple[float, ...]


@dataclass(frozen=True)
class Manifest:
    config: PreprocessConfig
    labels: tuple[str, ...]
    splits: dict[str, Split]  # in the order train, val, test; only those that have samples
    stats: Stats
    inputs: Inputs

    @property
    def audio(self) -> AudioConfig:
        return self.config.audio

    @property
    def augment(self) -> AugmentConfig:
        return self.config.augment

    @property
    def seed(self) -> int:
        return self.config.seed

    def shards(self, split: str) -> tuple[ShardEntry, ...]:
        """The shards of `split` (none when the folder has no such split)."""
        info = self.splits.get(split)
        return info.shards if info is not None else ()

    @property
    def counts(self) -> dict[str, int]:
        """Samples per split, e.g. {"train": 640, "val": 32}."""
        return {name: split.samples for name, split in self.splits.items()}

    def fingerprint(self) -> str:
        """Identifies the data a run trains on: shard contents, labels and audio config."""
        shards = {name: [(s.name, s.sha256) for s in split.shards] for name, split in self.splits.items()}
        payload = json.dumps([shards, list(self.labels), to_dict(self.audio)], sort_keys=True)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    # --- the file ---

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of `manifest.json`."""
        splits = {}
        for name, split in self.splits.items():
            data = {"samples": split.samples, "clips": split.clips, "per_class": dict(split.per_class),
                    "shards": [to_dict(s) for s in split.shards]}
            if split.copies_per_class is not None:
                data["copies_per_class"] = dict(split.copies_per_class)
            splits[name] = data
        return {"format": FORMAT, **config_fields(self.config), "labels": list(self.labels), "splits": splits,
                "stats": to_dict(self.stats), "inputs": to_dict(self.inputs)}

    def to_json(self) -> bytes:
        """The bytes of `manifest.json` (sorted keys, as the preprocessor writes them)."""
        return json_bytes(self.to_dict())

    @classmethod
    def from_dict(cls, data: Any, where: str = MANIFEST) -> Manifest:
        """Check and type a manifest's JSON object; anything wrong is a `DataError` naming `where`."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise DataError(f"{where} is not a {FORMAT} manifest; rerun preprocessing with this version")
        try:
            config = from_dict(PreprocessConfig, {"audio": data["audio"], "augment": data["augment"],
                                                  "seed": data["seed"], **data.get("preprocess", {})})
            labels = tuple(_of(str, name, "labels") for name in _of(list, data["labels"], "labels"))
            splits = {name: _split(info, name, where) for name, info in _of(dict, data["splits"], "splits").items()}
            stats = _of(dict, data["stats"], "stats")
            stats = Stats(tuple(_numbers(stats["mel_mean"], "stats.mel_mean")),
                          tuple(_numbers(stats["mel_std"], "stats.mel_std")))
            inputs = Inputs(**{key: _of((int, float) if key == "cropped_s" else int, value, f"inputs.{key}")
                               for key, value in _of(dict, data["inputs"], "inputs").items()})
        except ConfigError as exc:
            raise DataError(f"{where} is damaged or from another version ({one_line(exc)}); rerun preprocessing") \
                from None
        except KeyError as exc:
            raise DataError(f"{where} is damaged or incomplete (no {exc.args[0]!r}); rerun preprocessing") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise DataError(f"{where} is damaged ({one_line(exc)}); rerun preprocessing") from None
        return cls(config, labels, splits, stats, inputs)

    @classmethod
    def from_json(cls, text: str | bytes, where: str = MANIFEST) -> Manifest:
        return cls.from_dict(_parse(text, where), where)

    @classmethod
    def read(cls, folder: str | Path) -> Manifest:
        """The manifest of a shard folder (local or remote, see `shared.location`)."""
        text, where = _fetch(folder)
        return cls.from_json(text, where)


def _of(kind: type | tuple[type, ...], value: Any, what: str) -> Any:
    """`value` when it is of `kind` (a bool is no number), else a TypeError naming `what`."""
    if not isinstance(value, kind) or isinstance(value, bool):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise TypeError(f"{what} must be {names}, not {type(value).__name__}")
    return value


def _numbers(values: Any, what: str) -> list[float]:
    return [_of((int, float), v, what) for v in _of(list, values, what)]


def _counts(values: Any, what: str) -> dict[str, int]:
    return {_of(str, k, what): _of(int, v, what) for k, v in _of(dict, values, what).items()}


def _split(info: Any, name: str, where: str) -> Split:
    info = _of(dict, info, f"splits.{name}")
    shards = []
    for entry in _of(list, info["shards"], f"splits.{name}.shards"):
        entry = _of(dict, entry, f"splits.{name}.shards")
        shard = entry.get("name", "")
        if not isinstance(shard, str) or not SHARD_NAME.fullmatch(shard) or ".." in shard:
            raise DataError(f"{where} lists shard '{shard}' outside its folder; refusing it")
        shards.append(ShardEntry(shard, _of(int, entry["samples"], "samples"), _of(int, entry["bytes"], "bytes"),
                                 _of(str, entry["sha256"], "sha256")))
    copies = info.get("copies_per_class")
    return Split(_of(int, info["samples"], "samples"), _of(int, info["clips"], "clips"),
                 _counts(info["per_class"], "per_class"), tuple(shards),
                 None if copies is None else _counts(copies, "copies_per_class"))


def _fetch(folder: str | Path) -> tuple[bytes, str]:
    """The bytes of `manifest.json` in a shard folder, and its path or URL for messages."""
    where = Location(folder)
    path = where.url(MANIFEST)
    try:
        if where.local is not None:
            return (where.local / MANIFEST).read_bytes(), path
        return where.read_bytes(MANIFEST), path
    except (FileNotFoundError, NotADirectoryError):  # no folder, no manifest in it, or a file (a CSV)
        run = [name for name in ("config.json", "best.pt", "last.pt") if (where.local / name).is_file()] \
            if where.local is not None else []
        if run:
            raise UsageError(f"{folder} is a training run folder (it holds {', '.join(run)}), not a shard folder; "
                             "point at the folder preprocess wrote (its --out) instead") from None
        if where.local is not None and _holds_audio(where.local):
            shards = Path("shards") / where.local.resolve().stem  # preprocess's own default --out
            raise UsageError(f"{folder} holds audio, not shards: preprocess it first, `python -m preprocess {folder} "
                             f"--out {shards}`, then point at {shards}") from None
        raise UsageError(f"{path} not found; run `python -m preprocess SRC --out {folder}` "
                         "first, or point at a finished shard folder") from None
    except (OSError, DataError) as exc:
        raise UsageError(f"cannot read {path} ({one_line(exc)}); check the shard location") from None


def _holds_audio(path: Path) -> bool:
    """Whether `path` is a corpus rather than shards: a CSV, or a folder with audio files in it or
    in its subfolders (class folders), looked at two levels deep."""
    from shared.decode import AUDIO_EXTENSIONS  # only here: a missing manifest is the rare path

    def is_audio(name: str) -> bool:
        return Path(name).suffix.lower() in AUDIO_EXTENSIONS

    if path.is_file():
        return path.suffix.lower() in (".csv", ".tsv", ".txt") or is_audio(path.name)
    try:
        for entry in path.iterdir():
            if entry.is_file() and is_audio(entry.name):
                return True
            if entry.is_dir() and any(is_audio(name.name) for name in entry.iterdir()):
                return True
    except OSError:
        return False
    return False


def _parse(text: str | bytes, where: str) -> Any:
    try:
        return json.loads(text.decode("utf-8") if isinstance(text, bytes) else text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{where} is not valid JSON ({exc}); rerun preprocessing") from None


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The JSON object of a shard folder's `manifest.json`, checked as `Manifest.read` checks it
    (for tools that look at the file itself; code that uses a manifest takes a `Manifest`)."""
    text, where = _fetch(folder)
    data = _parse(text, where)
    Manifest.from_dict(data, where)
    return data
