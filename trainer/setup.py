"""Everything a training run is made of, built once: the run folder, data and learner.

`open_session` wires them together: the device (`trainer.device`), the checkpoint to continue
and the rules it must meet (`trainer.resume`, `trainer.elastic`), the checked shards and their
loaders, and the learner (`trainer.learner`: model, optimizer, schedule, AMP, weight average).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from shared.atomic import write_json
from shared.config import AudioConfig, TrainConfig, to_dict
from shared.errors import DataError, UsageError
from shared.integrity import BadShard, describe_loss
from shared.manifest import Manifest
from shared.targets import check_output_folder
from trainer.data import KEY_LOG, BandNorm, ShardStream, checked_shards, close_loader, make_loader
from trainer.device import default_workers, pick_device
from trainer.distributed import World, any_across, join, sum_across
from trainer.elastic import relayout
from trainer.learner import Learner, args_of, build_learner
from trainer.models import check_input_size
from trainer.resume import check_resumable, check_same_damage, checkpoint_to_resume, resumed_config
from trainer.runlock import RunLock


@dataclass(kw_only=True)
class Session:
    """A training run's parts (built by `open_session`, by keyword)."""

    cfg: TrainConfig
    run: Path
    shards: Path
    manifest: Manifest
    device: torch.device
    learner: Learner
    train_stream: ShardStream
    train_loader: Any
    val_loader: Any
    norm: BandNorm
    resumed: dict[str, Any] | None
    lost: dict[str, list[BadShard]]  # split -> damaged shards left out (--on-bad-shard skip)
    world: World = World()
    writer: Any = None
    lock: RunLock | None = None  # the run folder's lock, held by the rank that writes it

    @property
    def audio(self) -> AudioConfig:
        """The shards' audio config (mel scale and filterbank for the log-mel augmentations)."""
        return self.manifest.audio

    def lost_samples(self, split: str) -> int:
        return sum(b.samples for b in self.lost.get(split, []))

    def normalise(self, mel: torch.Tensor) -> torch.Tensor:
        """float16 `[B, M, T]` -> normalised float32 `[B, 1, M, T]`, on the device."""
        x = self.norm(mel)
        return x.contiguous(memory_format=torch.channels_last) if self.cfg.channels_last else x

    def identity(self) -> dict[str, Any]:
        """What predict and resume need besides the weights."""
        labels = list(self.manifest.labels)
        return {
            "model_name": self.cfg.model,
            "model_args": args_of(self.cfg, len(labels)),
            "labels": labels, "audio": to_dict(self.manifest.audio), "train_config": to_dict(self.cfg),
            "stats": {"mel_mean": self.norm.mean.cpu().flatten(), "mel_std": self.norm.std.cpu().flatten()},
            "manifest_fingerprint": self.manifest.fingerprint(),
            "skipped_shards": sorted(b.name for bad in self.lost.values() for b in bad),
            "world_size": self.world.size,
        }

    def log_epoch(self, row: dict[str, float]) -> None:
        if self.writer is not None:
            for key, value in row.items():
                if key != "epoch":
                    self.writer.add_scalar(key, value, row["epoch"])
            self.writer.flush()

    def close(self) -> None:
        for loader in (self.train_loader, self.val_loader):
            close_loader(loader)
        if self.writer is not None:
            self.writer.close()
        if self.lock is not None:
            self.lock.release()


def _check_damage(shards: Path, manifest: Manifest, policy: str,
                  world: World) -> tuple[dict[str, list], dict[str, list[BadShard]]]:
    """The good shards of train and val, and the damaged ones (`fail` stops at the first).

    Under torchrun the ranks share the hashing (each reads 1/world of the shards) and sum their
    findings, so every rank reaches the same verdict and only rank 0 prints it."""
    good, lost = {}, {}
    for split in ("train", "val"):
        good[split], bad = checked_shards(shards, manifest, split, policy, rank=world.rank, world=world.size,
                                          combine=lambda values: sum_across(world, values))
        if bad:
            lost[split] = bad
        if bad and world.is_main:
            print(f"warning: {split}: {describe_loss(bad)}; going on without them (--on-bad-shard skip)",
                  file=sys.stderr)
    return good, lost


def open_session(shards: Path, run: Path, cfg: TrainConfig, resume: bool | str, explicit: set[str],
                 on_bad_shard: str = "fail") -> Session:
    """Everything a run needs, with its folder locked against a second training process
    (`trainer/runlock.py`; `Session.close` unlocks it)."""
    world = join(pick_device(cfg.device).type)
    lock, refusal = None, None
    if world.is_main:  # the one rank that writes the run folder
        try:
            check_output_folder(run)
            check_resumable(run, resume)  # before the lock makes the folder
            lock = RunLock.take(run)
        except UsageError as exc:
            refusal = exc
    if any_across(world, refusal is not None):  # every rank stops, none waits at a collective
        raise refusal or UsageError(f"rank 0 refused the run folder {run}; see its message")
    try:
        session = _open_session(shards, run, cfg, resume, explicit, on_bad_shard, world)
    except BaseException:
        if lock is not None:
            lock.release(started=False)
        raise
    session.lock = lock
    return session


def _open_session(shards: Path, run: Path, cfg: TrainConfig, resume: bool | str, explicit: set[str],
                  on_bad_shard: str, world: World) -> Session:
    manifest = Manifest.read(shards)
    if not manifest.shards("train"):
        raise UsageError(f"{shards} has no train split; preprocess a labeled corpus first")
    trained = sorted(manifest.splits["train"].per_class)
    if len(trained) < 2:
        raise UsageError(f"{shards} has {len(trained)} class(es) in its train split ({', '.join(trained) or 'none'}); "
                         "a classifier needs at least two: preprocess a corpus with more classes")
    resumed = checkpoint_to_resume(run, resume)
    if resumed is not None:
        cfg, change = relayout(resumed_config(resumed, manifest, cfg, explicit), resumed, world.size,
                               "batch_size" in explicit)
        if change and world.is_main:
            print(change, file=sys.stderr)
    frames = manifest.audio.n_frames
    if cfg.train_frames > frames:
        raise UsageError(f"train_frames {cfg.train_frames} is longer than the stored mels ({frames} frames); "
                         f"use at most {frames} or preprocess with a longer duration_s")
    check_input_size(cfg.model, manifest.audio, cfg.train_frames or frames)
    good, lost = _check_damage(shards, manifest, on_bad_shard, world)
    if resumed is not None:
        check_same_damage(resumed, lost, shards)
    train_shards, val_shards = good["train"], good["val"]
    if not train_shards:
        raise DataError(f"every train shard of {shards} is damaged; rerun preprocessing")
    if cfg.num_workers == 0:
        cfg = TrainConfig(**{**to_dict(cfg), "num_workers": default_workers()})
    if world.is_main:
        run.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    if device.type == "cuda" and world.distributed:
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    stream = ShardStream(str(shards), train_shards, cfg.batch_size, cfg.num_workers, cfg.seed,
                         cfg.shuffle_buffer, rank=world.rank, world=world.size, key_log=os.environ.get(KEY_LOG))
    learner = build_learner(cfg, manifest, device, world, sum(stream.batches_per_epoch(e) for e in range(cfg.epochs)))
    pin = device.type == "cuda"  # page-locked batches copy to the GPU asynchronously
    val_loader = None
    if val_shards:
        val_stream = ShardStream(str(shards), val_shards, cfg.batch_size, min(cfg.num_workers, len(val_shards)),
                                 cfg.seed)
        val_loader = make_loader(val_stream, pin, cfg.prefetch_factor)
    norm = BandNorm(manifest.stats.mel_mean, manifest.stats.mel_std, device)
    if world.is_main:
        write_json(run / "config.json", {"train": to_dict(cfg), "shards": str(shards), "world_size": world.size,
                                         "manifest_fingerprint": manifest.fingerprint(),
                                         "skipped_shards": {split: [vars(b) for b in bad]
                                                            for split, bad in lost.items()},
                                         "device": str(device),
                                         "amp": str(learner.amp_dtype) if learner.amp_dtype else "off"})
    writer = None
    try:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run / "tensorboard")) if world.is_main else None
    except ImportError:  # tensorboard is optional
        pass
    return Session(cfg=cfg, run=run, shards=shards, manifest=manifest, device=device, learner=learner,
                   train_stream=stream, train_loader=make_loader(stream, pin, cfg.prefetch_factor),
                   val_loader=val_loader, norm=norm, resumed=resumed, lost=lost, world=world, writer=writer)
