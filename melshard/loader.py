"""A shard folder from Python: its manifest, and a resumable loader for any training loop.

    shards = Shards("shards/mydata")
    loader = shards.loader("train", batch_size=32, num_workers=2)
    for epoch in range(10):
        loader.set_epoch(epoch)
        for mel, label in loader:        # float32 [B, 1, M, T] (normalised), int64 [B]
            ...
        state = loader.state_dict()      # save it with the model, mid-epoch included

The loader wraps the trainer's `ShardStream`, so it reads shards exactly as `python -m trainer
train` does: the epoch's order depends only on (seed, epoch, shards), and `state_dict()` is a
global position that `load_state_dict()` continues from, skipping what was consumed before
decoding it, on the same or another number of workers or processes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from shared.config import AudioConfig, PreprocessConfig
from shared.errors import UsageError
from shared.location import location
from shared.manifest import Manifest
from trainer.data import BandNorm, ShardStream, checked_shards, iter_batches, shards_of


class Shards:
    """A finished shard folder (a path, or a URL such as `s3://bucket/shards`).

    Reading it reads only `manifest.json` (`.manifest`, a `shared.manifest.Manifest`); a missing
    one raises `UsageError`, a damaged or foreign one `DataError`.
    """

    def __init__(self, path_or_url: str | Path):
        self.location: str | Path = location(str(path_or_url))
        self.manifest = Manifest.read(self.location)

    @property
    def labels(self) -> list[str]:
        """Class names; a batch's label `i` is `labels[i]` (-1: an unlabeled test clip)."""
        return list(self.manifest.labels)

    @property
    def counts(self) -> dict[str, int]:
        """Samples per split (augmented copies included), e.g. {"train": 640, "val": 32}."""
        return self.manifest.counts

    @property
    def audio(self) -> AudioConfig:
        """The feature settings the shards were made with (pass it to `melshard.features`)."""
        return self.manifest.audio

    @property
    def config(self) -> PreprocessConfig:
        """The whole preprocessing config recorded in the manifest."""
        return self.manifest.config

    @property
    def stats(self) -> dict[str, np.ndarray]:
        """Per-band mel mean and std of the train split (`mel_mean`, `mel_std`, each [n_mels])."""
        stats = self.manifest.stats
        return {"mel_mean": np.asarray(stats.mel_mean, dtype=np.float32),
                "mel_std": np.asarray(stats.mel_std, dtype=np.float32)}

    def __repr__(self) -> str:
        return f"Shards({str(self.location)!r}: {len(self.labels)} classes, {self.counts})"

    def loader(self, split: str, batch_size: int, *, shuffle: bool = True, num_workers: int = 0, seed: int = 0,
               rank: int = 0, world: int = 1, normalise: bool = True, device: str | torch.device = "cpu",
               shuffle_buffer: int = 1000, verify: bool = True) -> ShardLoader:
        """A resumable loader of `(mel, label)` batches of one split; see `ShardLoader`.

        `batch_size` is per process (`world` processes, this one `rank`). `verify` checks every
        shard of the split against the manifest's size and sha256 first (one read of each);
        a damaged one raises `DataError` naming it.
        """
        if split not in self.manifest.splits:
            raise UsageError(f"{self.location} has no '{split}' split (it has {', '.join(self.counts)})")
        if batch_size < 1 or num_workers < 0 or not 0 <= rank < world:
            raise UsageError(f"need batch_size >= 1, num_workers >= 0 and 0 <= rank < world; got {batch_size}, "
                             f"{num_workers}, {rank}, {world}")
        if verify:
            good, _ = checked_shards(self.location, self.manifest, split, "fail")
        else:
            good = shards_of(self.manifest, split)
        stream = ShardStream(str(self.location), good, batch_size, num_workers, seed,
                             shuffle_buffer if shuffle else 0, rank=rank, world=world)
        stats = self.manifest.stats
        norm = BandNorm(stats.mel_mean, stats.mel_std, torch.device(device)) if normalise else None
        return ShardLoader(stream, num_workers, norm, torch.device(device))


class ShardLoader:
    """An iterable of `(mel, label)` batches, one epoch per iteration, with an exact position.

    - `mel`: float32 `[B, 1, n_mels, frames]`, standardised per band with the train split's
      statistics (as the trainer does), or the stored float16 `[B, n_mels, frames]` with
      `normalise=False` (float32, decoded, from shards preprocessed with `mel_encoding = "uint8"`);
      `label`: int64 `[B]` (-1 for an unlabeled test clip).
    - `set_epoch(e)` picks the epoch (its shuffle), as with `DistributedSampler`; iterating again
      after a finished epoch goes on with the next one.
    - `state_dict()` after any batch, `load_state_dict()` on a fresh loader: the remaining batches
      are exactly those an uninterrupted iteration would have given (same workers and processes;
      on others, exactly the samples not yet seen).
    """

    def __init__(self, stream: ShardStream, num_workers: int, norm: BandNorm | None, device: torch.device):
        self.stream = stream
        self.num_workers = num_workers
        self.norm = norm
        self.device = device
        self._loader: DataLoader | None = None

    @property
    def batch_size(self) -> int:
        return self.stream.batch_size

    @property
    def epoch(self) -> int:
        return self.stream.epoch

    def __len__(self) -> int:
        """Batches of this process in one whole epoch."""
        return self.stream.epoch_steps

    def set_epoch(self, epoch: int) -> None:
        """Start `epoch` from its beginning, unless the loader is part-way through it (a restored
        position): then the epoch goes on from there."""
        if epoch != self.stream.epoch or self._finished():
            self.stream.start_epoch(epoch)

    def state_dict(self) -> dict[str, Any]:
        """The position after the last batch handed out: plain values, safe for `torch.save`."""
        return self.stream.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state` (see the class doc)."""
        self.stream.load_state_dict(state)
        self._loader = None  # workers hold the position they started with: start new ones

    def _finished(self) -> bool:
        return self.stream.steps_done >= self.stream.epoch_steps

    def _data_loader(self) -> DataLoader:
        if self._loader is None:
            workers = self.num_workers
            self._loader = DataLoader(self.stream, batch_size=None, num_workers=workers,
                                      pin_memory=self.device.type == "cuda", persistent_workers=workers > 0,
                                      prefetch_factor=2 if workers else None)
        return self._loader

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self._finished():
            self.stream.start_epoch(self.stream.epoch + 1)
        else:
            # Workers read where to start when an iteration begins; an iteration left part-way (a
            # `break`) has moved the position since they last looked.
            self.stream._publish()
        for batch in iter_batches(self._data_loader()):
            mel = self.norm(batch["mel"]) if self.norm is not None else batch["mel"].to(self.device)
            yield mel, batch["label"].to(self.device)
