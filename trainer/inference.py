"""A trained model applied to new data: from shards, or from raw audio through the same
audio -> mel function (and the audio config stored in the checkpoint) that made the shards.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from rich.console import Console

from preprocess.sources import Rejection
from shared.audio import AudioError, file_to_mel
from shared.config import AudioConfig, from_dict
from shared.errors import UsageError
from shared.manifest import read_manifest
from shared.runtime import limit_threads, tune_allocator
from trainer import checkpoint
from trainer.data import BandNorm, ShardStream, checked_shards, iter_batches, make_loader, shards_of
from trainer.models import build_model
from trainer.progress import FileProgress
from trainer.setup import default_workers, pick_amp, pick_device

TTA_SHIFTS = (0.0, 0.1, -0.1)  # time shifts, as fractions of the clip, averaged by --tta
CHUNK_FILES = 64  # raw audio files per worker task and per model batch
READ_AHEAD = 2  # chunks per worker process computed ahead of the model
T = TypeVar("T")


@dataclass
class Predictor:
    model: torch.nn.Module
    labels: list[str]
    audio: AudioConfig
    norm: BandNorm
    device: torch.device
    amp_dtype: torch.dtype | None
    tta: bool = False

    @torch.no_grad()
    def probabilities(self, mel: torch.Tensor) -> torch.Tensor:
        """Class probabilities `[B, C]` for float16 mels `[B, M, T]` (averaged over shifts with TTA)."""
        x = self.norm(mel)
        shifts = TTA_SHIFTS if self.tta else (0.0,)
        total = None
        for shift in shifts:
            view = torch.roll(x, int(round(shift * x.shape[-1])), dims=-1) if shift else x
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                probs = torch.softmax(self.model(view).float(), dim=1)
            total = probs if total is None else total + probs
        return (total / len(shifts)).cpu()


def load_predictor(run: Path, device: str = "auto", which: str = "best", tta: bool = False) -> Predictor:
    """The model of `RUN/best.pt` (or `last.pt`), rebuilt from what the checkpoint records."""
    path = Path(run) / (checkpoint.BEST if which == "best" else checkpoint.LAST)
    ckpt = checkpoint.load(path)
    torch_device = pick_device(device)
    model = build_model(ckpt["model_name"], ckpt["model_args"])
    model.load_state_dict(ckpt["model"])
    model.to(torch_device).eval()
    stats = ckpt["stats"]
    return Predictor(model, list(ckpt["labels"]), from_dict(AudioConfig, ckpt["audio"], "audio"),
                     BandNorm(stats["mel_mean"], stats["mel_std"], torch_device), torch_device, pick_amp("auto", torch_device), tta)


@dataclass(frozen=True)
class Predicted:
    """Predictions for a set of inputs, with what is known about each."""

    paths: list[str]
    probs: np.ndarray  # [N, C]
    truth: list[str | None]  # label names where known
    groups: list[str | None]
    rejected: list[Rejection]


def predict_shards(p: Predictor, folder: Path, split: str, on_bad_shard: str = "fail", batch_size: int = 64,
                   workers: int = 0) -> Predicted:
    """Predict every sample of a split of a shard folder (original clips only, no augmented copies).

    Damaged shards stop it (`on_bad_shard="fail"`) or become one rejection each (`"skip"`).
    """
    manifest = read_manifest(folder)
    if from_dict(AudioConfig, manifest["audio"], "audio") != p.audio:
        raise UsageError(f"{folder} was made with another audio config than the model's; "
                         "preprocess with the model's config or predict from raw audio")
    if not shards_of(manifest, split):
        raise UsageError(f"{folder} has no '{split}' split (it has {', '.join(manifest['splits'])}); "
                         "choose one with --split")
    shards, bad = checked_shards(folder, manifest, split, on_bad_shard)
    lost = [Rejection(b.name, "shard", "damaged", f"{b.samples} samples: {b.reason}") for b in bad]
    if not shards:
        return Predicted([], np.zeros((0, len(p.labels))), [], [], lost)
    stream = ShardStream(str(folder), shards, batch_size, min(workers or default_workers(), len(shards)),
                         seed=0, with_keys=True)
    stream.start_epoch(0)
    paths, probs, truth, groups = [], [], [], []
    for batch in iter_batches(make_loader(stream, p.device.type == "cuda", 2)):
        keep = [i for i, meta in enumerate(batch["meta"]) if meta.get("copy", 0) == 0]
        if not keep:
            continue
        probs.append(p.probabilities(batch["mel"][keep]).numpy())
        for i in keep:
            meta = batch["meta"][i]
            paths.append(meta["path"])
            truth.append(meta.get("label"))
            groups.append(meta.get("group"))
    return Predicted(paths, np.concatenate(probs) if probs else np.zeros((0, len(p.labels))), truth, groups, lost)


@dataclass(frozen=True)
class Failed:
    """Why a file gave no features. Plain strings, so it crosses process boundaries as it is
    (an exception object must survive pickling to come back from a worker at all)."""

    stage: str
    reason: str
    detail: str


def _mels(paths: list[str], audio: AudioConfig) -> list[np.ndarray | Failed]:
    """Worker: the features of a chunk of files, or why each one failed."""
    tune_allocator()
    limit_threads()
    results: list[np.ndarray | Failed] = []
    for path in paths:
        try:
            results.append(file_to_mel(path, audio))
        except AudioError as exc:
            results.append(Failed("decode", exc.reason, exc.detail))
        except Exception as exc:  # noqa: BLE001 - as in preprocessing: one file never stops the rest
            results.append(Failed("features", "error", f"{type(exc).__name__}: {exc}"))
    return results


def in_processes(fn: Callable[..., T], tasks: list[tuple], jobs: int, ahead: int = READ_AHEAD) -> Iterator[T]:
    """`fn(*task)` for each task, in order, from `jobs` processes (in this one for one job or one task).

    At most `ahead` tasks per process are running or finished but not yet consumed, so memory
    stays flat however many tasks there are, also when the consumer (the model) is slower than
    the workers: joblib's `return_as="generator"` keeps dispatching and holds every result.
    """
    if jobs == 1 or len(tasks) <= 1:
        yield from (fn(*task) for task in tasks)
        return
    from joblib.externals.loky import get_reusable_executor  # joblib's own process pool

    executor = get_reusable_executor(max_workers=min(jobs, len(tasks)))
    todo = iter(tasks)
    running = deque(executor.submit(fn, *task) for task in islice(todo, ahead * jobs))
    try:
        while running:
            result = running.popleft().result()
            following = next(todo, None)
            if following is not None:  # submitted before yielding: the workers stay busy meanwhile
                running.append(executor.submit(fn, *following))
            yield result
    finally:  # stopped early (an error, Ctrl-C): drop what has not started
        for future in running:
            future.cancel()


def predict_files(p: Predictor, items: list[tuple[str, str, str | None, str | None]], jobs: int = 0,
                  chunk_size: int = CHUNK_FILES, console: Console | None = None) -> Predicted:
    """Predict raw audio files `(absolute path, reported path, label, group)` in parallel, in
    chunks of `chunk_size` files (one batch of the model each); a progress bar on a terminal."""
    chunks = [items[i : i + chunk_size] for i in range(0, len(items), chunk_size)]
    features = in_processes(_mels, [([item[0] for item in chunk], p.audio) for chunk in chunks],
                            jobs or default_workers() + 1)
    paths, probs, truth, groups, rejected = [], [], [], [], []
    with FileProgress(len(items), console, enabled=len(chunks) > 1) as progress:
        for chunk, mels in zip(chunks, features):
            good = [(item, mel) for item, mel in zip(chunk, mels) if not isinstance(mel, Failed)]
            rejected += [Rejection(item[1], mel.stage, mel.reason, mel.detail)
                         for item, mel in zip(chunk, mels) if isinstance(mel, Failed)]
            if good:
                probs.append(p.probabilities(torch.from_numpy(np.stack([m for _, m in good]))).numpy())
                for item, _ in good:
                    paths.append(item[1])
                    truth.append(item[2])
                    groups.append(item[3])
            progress.advance(len(chunk))
    return Predicted(paths, np.concatenate(probs) if probs else np.zeros((0, len(p.labels))), truth, groups,
                     rejected)


def list_inputs(source: Path, labeled: bool) -> tuple[list[tuple[str, str, str | None, str | None]], list[Rejection]]:
    """Raw audio to predict: a folder (labels from class folders when `labeled`) or a CSV."""
    from preprocess.sources import list_source

    clips, rejections = list_source(source, labeled=labeled)
    return [(c.path, c.rel, c.label, c.group) for c in clips], rejections
