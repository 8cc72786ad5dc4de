"""A trained model applied to new data: from shards, or from raw audio through the same
audio -> mel function (and the audio config stored in the checkpoint) that made the shards.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from rich.console import Console

from shared.audio import file_to_mels
from shared.config import AGGREGATES, DEFAULT_AGGREGATE, AudioConfig, from_dict
from shared.decode import AudioError
from shared.errors import UsageError
from shared.manifest import Manifest
from shared.runtime import limit_threads, tune_allocator
from shared.sources import Rejection
from trainer import checkpoint
from trainer.adapt import ADAPT_CLIPS, adapt_batchnorm, rebatch
from trainer.augment import centre_crop, shift_crop_by, warp_by, warp_index
from trainer.data import BandNorm, ShardStream, checked_shards, iter_batches, make_loader, shards_of
from trainer.device import default_workers, pick_amp, pick_device
from trainer.models import build_model
from trainer.progress import FileProgress

TTA = ("shift", "warp")  # --tta's choices: the views averaged
TTA_SHIFTS = (0.0, 0.1, -0.1)  # --tta shift: time shifts, as fractions of the clip
TTA_WARPS = (1.0, 0.9, 1.1)  # --tta warp: frequency warps f -> alpha f (training's freq_warp at fixed alphas)
CHUNK_FILES = 64  # raw audio files per worker task (8 with segmented recordings: many windows each)
MODEL_BATCH = 256  # mels per forward pass
ADAPT_BATCH = 64  # mels per forward pass while adapting BatchNorm (one size: each weighs the same)
READ_AHEAD = 2  # chunks per worker process computed ahead of the model
# --aggregate confidence weighs a window by (1 - entropy / log C) ** this. Of 1, 2, 4 and 8, 4 and 8
# scored best on the validation files of bench/long_recordings.py and of its test; 4 stays nearer
# the mean, whose every window votes, when windows are about as sure as one another.
CONFIDENCE_POWER = 4
T = TypeVar("T")


@dataclass
class Predictor:
    model: torch.nn.Module
    labels: list[str]
    audio: AudioConfig
    norm: BandNorm
    device: torch.device
    amp_dtype: torch.dtype | None
    tta: str = ""  # "" (one view), or one of TTA: the views whose probabilities are averaged
    frames: int = 0  # the training crop (`train_frames`): predict on the centre this long; 0: all
    adapted: int = 0  # clips the BatchNorm statistics were re-estimated on (`adapt`); 0: training's
    shape: tuple[int, int] | None = None  # (n_mels, frames) of every mel it takes (the checkpoint's audio config)

    def inputs(self, mel: torch.Tensor) -> torch.Tensor:
        """The model's input `[B, 1, M, T']` for float16 mels `[B, M, T]`."""
        return self.norm(centre_crop(mel, self.frames))

    def views(self, mel: torch.Tensor) -> Iterator[torch.Tensor]:
        """The views of `[B, M, T]` mels that TTA averages: the clips as they are, then moved by a
        tenth of their length either way with their floor filling in, as the training shift does
        (a wrapped-around word is no recording's sound), or warped along frequency by 10% either
        way, as a shorter or longer vocal tract would (the training's frequency warp)."""
        yield mel
        batch, _, frames = mel.shape
        if self.tta == "shift":
            for shift in TTA_SHIFTS[1:]:
                moved = torch.full((batch,), int(round(shift * frames)))
                yield shift_crop_by(mel, torch.zeros(batch, dtype=torch.long), moved, frames)
        elif self.tta == "warp":
            for alpha in TTA_WARPS[1:]:
                yield warp_by(mel, warp_index(np.full(batch, alpha), self.audio))

    @torch.no_grad()
    def probabilities(self, mel: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Class probabilities `[B, C]` for mels `[B, M, T]`, averaged over the TTA views (`[C]` for
        one mel `[M, T]`). A numpy array or a tensor of any float dtype, rounded to float16 as the
        shards store mels; `shape` is the `(M, T)` it must have: `UsageError` otherwise."""
        mel = self._checked(mel)
        if mel.ndim == 2:
            return self.probabilities(mel[None])[0]
        total, count = None, 0
        for view in self.views(centre_crop(mel, self.frames)):
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                probs = torch.softmax(self.model(self.norm(view)).float(), dim=1)
            total, count = (probs if total is None else total + probs), count + 1
        return (total / count).cpu()

    def _checked(self, mel: torch.Tensor | np.ndarray) -> torch.Tensor:
        """`mel` as a float16 tensor `[B, M, T]` or `[M, T]`, or a `UsageError` naming the shape it needs."""
        if not isinstance(mel, torch.Tensor):
            array = np.asarray(mel)
            if array.dtype.kind != "f":
                raise self._refused(f"an array of {array.dtype}")
            mel = torch.from_numpy(array if array.flags.writeable else array.copy())
        if not mel.is_floating_point():
            raise self._refused(f"a tensor of {mel.dtype}")
        if mel.ndim not in (2, 3) or (self.shape is not None and tuple(mel.shape[-2:]) != self.shape):
            raise self._refused(f"shape {tuple(mel.shape)}")
        return mel.to(torch.float16)

    def _refused(self, got: str) -> UsageError:
        bands, frames = self.shape or ("n_mels", "frames")
        return UsageError(f"probabilities() takes float mels [batch, {bands}, {frames}] or one mel [{bands}, "
                          f"{frames}] (this model's audio config: n_mels x n_frames), got {got}; make them with "
                          "melshard.features(path_or_array, model.audio)")

    def adapt(self, mels: Iterable[torch.Tensor]) -> int:
        """Re-estimate the BatchNorm statistics on these float16 mels (batches of any size; at
        most `ADAPT_CLIPS` clips are used): see trainer/adapt.py. The number of clips used."""
        self.adapted = adapt_batchnorm(self.model, (self.inputs(b) for b in rebatch(mels, ADAPT_BATCH, ADAPT_CLIPS)),
                                       self.amp_dtype)
        return self.adapted


def tta_mode(tta: bool | str | None) -> str:
    """"" or one of `TTA` from what a user passed (True, as `--tta` alone, means "shift")."""
    mode = "shift" if tta is True else (tta or "")
    if mode not in ("", *TTA):
        raise UsageError(f"tta must be one of {', '.join(TTA)} (or off), got {tta!r}")
    return mode


def load_predictor(run: Path, device: str = "auto", which: str = "best", tta: bool | str = "") -> Predictor:
    """The model of `RUN/best.pt` (or `last.pt`), rebuilt from what the checkpoint records."""
    return predictor_at(Path(run) / (checkpoint.BEST if which == "best" else checkpoint.LAST), device, tta)


def predictor_at(path: Path, device: str = "auto", tta: bool | str = "") -> Predictor:
    """The model of the checkpoint file `path`, rebuilt from what it records."""
    tta = tta_mode(tta)
    ckpt = checkpoint.load(path)
    torch_device = pick_device(device)
    model = build_model(ckpt["model_name"], ckpt["model_args"])
    model.load_state_dict(ckpt.get("ema", ckpt["model"]))  # the weight average, when the run kept one
    model.to(torch_device).eval()
    stats = ckpt["stats"]
    audio = from_dict(AudioConfig, ckpt["audio"], "audio")
    return Predictor(model, list(ckpt["labels"]), audio,
                     BandNorm(stats["mel_mean"], stats["mel_std"], torch_device), torch_device,
                     pick_amp("auto", torch_device), tta,
                     int(ckpt.get("train_config", {}).get("train_frames", 0)), shape=(audio.n_mels, audio.n_frames))


@dataclass(frozen=True)
class Predicted:
    """Predictions for a set of inputs, with what is known about each."""

    paths: list[str]
    probs: np.ndarray  # [N, C]
    truth: list[str | None]  # label names where known
    groups: list[str | None]
    rejected: list[Rejection]
    offsets: list[float | None] | None = None  # per row: the window's start (segmented recordings)
    shard_samples: int = 0  # the samples of the damaged shards among `rejected`

    @property
    def lost(self) -> int:
        """The clips the rejected rows stand for: one per input, a damaged shard's samples."""
        return sum(row.stage != "shard" for row in self.rejected) + self.shard_samples


def aggregate(probs: np.ndarray, how: str = DEFAULT_AGGREGATE) -> np.ndarray:
    """One file's class probabilities `[C]` from its windows' `[W, C]` (see `AGGREGATES`).

    - `mean`: the mean of the window probabilities; every window has one vote.
    - `max`: each class's largest window probability, renormalised: an event anywhere in a long
      recording.
    - `confidence`: the mean weighted by each window's confidence, 1 - its entropy over log C
      (0 for a uniform window, 1 for a one-hot one), to the power `CONFIDENCE_POWER`. A window
      the training gave every label (a background, the silence around an event) learns to
      answer nearly uniformly, so it hardly counts, where `mean` lets the many background
      windows of a long recording outvote the few that hear the event. With every window
      equally sure (each carries the label) it is `mean`.
    """
    if how == "mean":
        return probs.mean(axis=0)
    if how == "max":
        peaks = probs.max(axis=0)
        return peaks / peaks.sum()
    classes = probs.shape[1]
    if classes < 2:
        return probs.mean(axis=0)
    clipped = np.clip(probs, 1e-12, 1.0)
    confidence = 1.0 - (-(clipped * np.log(clipped)).sum(axis=1) / math.log(classes))
    weights = np.clip(confidence, 0.0, None) ** CONFIDENCE_POWER + 1e-9  # all-uniform windows: the plain mean
    return (weights[:, None] * probs).sum(axis=0) / weights.sum()


def by_file(predicted: Predicted, how: str = DEFAULT_AGGREGATE) -> tuple[Predicted, Predicted | None]:
    """(one row per file, the per-window rows or None): the windows of a segmented recording
    (rows sharing a path) combined by `aggregate(probs, how)`."""
    if how not in AGGREGATES:
        raise UsageError(f"--aggregate must be one of {', '.join(AGGREGATES)}, got {how!r}")
    rows: dict[str, list[int]] = {}
    for i, path in enumerate(predicted.paths):
        rows.setdefault(path, []).append(i)
    if len(rows) == len(predicted.paths):
        return predicted, None
    first = [members[0] for members in rows.values()]
    probs = np.stack([aggregate(predicted.probs[m], how) for m in rows.values()])
    files = Predicted(list(rows), probs, [predicted.truth[i] for i in first], [predicted.groups[i] for i in first],
                      predicted.rejected, shard_samples=predicted.shard_samples)
    return files, predicted


def predict_shards(p: Predictor, folder: Path, split: str, on_bad_shard: str = "fail", batch_size: int = 64,
                   workers: int = 0, adapt: bool = False, manifest: Manifest | None = None) -> Predicted:
    """Predict every sample of a split of a shard folder (original clips only, no augmented copies).

    Damaged shards stop it (`on_bad_shard="fail"`) or become one rejection each (`"skip"`).
    `adapt`: first re-estimate the model's BatchNorm statistics on the split (`Predictor.adapt`).
    `manifest`: the folder's, when the caller has read it already.
    """
    if manifest is None:
        manifest = Manifest.read(folder)
    if manifest.audio != p.audio:
        raise UsageError(f"{folder} was made with another audio config than the model's; "
                         "preprocess with the model's config or predict from raw audio")
    if not shards_of(manifest, split):
        raise UsageError(f"{folder} has no '{split}' split (it has {', '.join(manifest.splits)}); "
                         "choose one with --split")
    shards, bad = checked_shards(folder, manifest, split, on_bad_shard)
    lost = [Rejection(b.name, "shard", "damaged", f"{b.samples} samples: {b.reason}") for b in bad]
    lost_samples = sum(b.samples for b in bad)
    if not shards:
        return Predicted([], np.zeros((0, len(p.labels))), [], [], lost, shard_samples=lost_samples)
    stream = ShardStream(str(folder), shards, batch_size, min(workers or default_workers(), len(shards)),
                         seed=0, with_keys=True)
    loader = make_loader(stream, p.device.type == "cuda", 2)

    def originals() -> Iterator[tuple[dict, list[int]]]:
        stream.start_epoch(0)
        for batch in iter_batches(loader):
            keep = [i for i, meta in enumerate(batch["meta"]) if meta.get("copy", 0) == 0]
            if keep:
                yield batch, keep

    if adapt:  # a first pass over the split (its first ADAPT_CLIPS clips, when it is larger)
        p.adapt(batch["mel"][keep] for batch, keep in originals())
    paths, probs, truth, groups, offsets = [], [], [], [], []
    for batch, keep in originals():
        probs.append(p.probabilities(batch["mel"][keep]).numpy())
        for i in keep:
            meta = batch["meta"][i]
            paths.append(meta["path"])
            truth.append(meta.get("label"))
            groups.append(meta.get("group"))
            offsets.append(meta.get("offset_s"))
    return Predicted(paths, np.concatenate(probs) if probs else np.zeros((0, len(p.labels))), truth, groups, lost,
                     offsets, lost_samples)


@dataclass(frozen=True)
class Failed:
    """Why a file gave no features. Plain strings, so it crosses process boundaries as it is
    (an exception object must survive pickling to come back from a worker at all)."""

    stage: str
    reason: str
    detail: str


def _mels(paths: list[str], audio: AudioConfig) -> list[list[tuple[float, np.ndarray]] | Failed]:
    """Worker: the features of a chunk of files ((offset, mel) per window: one for an unsegmented
    config), or why each one failed."""
    tune_allocator()
    limit_threads()
    results: list[list[tuple[float, np.ndarray]] | Failed] = []
    for path in paths:
        try:
            results.append(file_to_mels(path, audio))
        except AudioError as exc:
            results.append(Failed("decode", exc.reason, exc.detail))
        except Exception as exc:  # noqa: BLE001 - as in preprocessing: one file never stops the rest
            results.append(Failed("features", "error", f"{type(exc).__name__}: {exc}"))
    return results


def _result(future: Future) -> T:
    """The future's result, waited for in short slices: a stop signal (raised in this thread by
    `shared.interrupt`'s watcher) takes effect between them, where one long wait would hold it
    until the chunk in flight is done."""
    while True:
        try:
            return future.result(timeout=0.1)
        except TimeoutError:
            continue


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
            result = _result(running.popleft())
            following = next(todo, None)
            if following is not None:  # submitted before yielding: the workers stay busy meanwhile
                running.append(executor.submit(fn, *following))
            yield result
    finally:
        if running:  # stopped early (an error, Ctrl-C, SIGTERM): end the work in flight now, not at exit
            for future in running:
                future.cancel()
            executor.shutdown(wait=False, kill_workers=True)


def predict_files(p: Predictor, items: list[tuple[str, str, str | None, str | None]], jobs: int = 0,
                  chunk_size: int = CHUNK_FILES, console: Console | None = None, adapt: bool = False) -> Predicted:
    """Predict raw audio files `(absolute path, reported path, label, group)` in parallel, in
    chunks of `chunk_size` files (one batch of the model each); a progress bar on a terminal.
    `adapt`: first re-estimate the model's BatchNorm statistics (`Predictor.adapt`) on up to
    `ADAPT_CLIPS` files spread evenly over the list (their features are computed twice)."""
    chunk_size = min(chunk_size, 8) if p.audio.segment else chunk_size
    jobs = jobs or default_workers() + 1
    if adapt:
        p.adapt(_file_mels(p, items[:: max(1, math.ceil(len(items) / ADAPT_CLIPS))], chunk_size, jobs))
    chunks, features = _chunk_features(p, items, chunk_size, jobs)
    paths, probs, truth, groups, offsets, rejected = [], [], [], [], [], []
    with FileProgress(len(items), console, enabled=len(chunks) > 1) as progress:
        for chunk, results in zip(chunks, features):
            rejected += [Rejection(item[1], result.stage, result.reason, result.detail)
                         for item, result in zip(chunk, results) if isinstance(result, Failed)]
            rows = [(item, offset, mel) for item, result in zip(chunk, results) if not isinstance(result, Failed)
                    for offset, mel in result]
            for start in range(0, len(rows), MODEL_BATCH):  # a long recording's windows in bounded batches
                batch = rows[start : start + MODEL_BATCH]
                probs.append(p.probabilities(torch.from_numpy(np.stack([mel for _, _, mel in batch]))).numpy())
                for item, offset, _ in batch:
                    paths.append(item[1])
                    truth.append(item[2])
                    groups.append(item[3])
                    offsets.append(offset if p.audio.segment else None)
            progress.advance(len(chunk))
    return Predicted(paths, np.concatenate(probs) if probs else np.zeros((0, len(p.labels))), truth, groups,
                     rejected, offsets)


def _chunk_features(p: Predictor, items: list, chunk_size: int, jobs: int) -> tuple[list[list], Iterator[list]]:
    """The items in chunks, and each chunk's `_mels` results computed ahead in `jobs` processes."""
    chunks = [items[i : i + chunk_size] for i in range(0, len(items), chunk_size)]
    return chunks, in_processes(_mels, [([item[0] for item in chunk], p.audio) for chunk in chunks], jobs)


def _file_mels(p: Predictor, items: list[tuple[str, str, str | None, str | None]], chunk_size: int,
               jobs: int) -> Iterator[torch.Tensor]:
    """The mels of the files (every window of a segmented recording) that give features, a
    chunk at a time; the ones that fail are left out (the prediction pass reports them)."""
    for results in _chunk_features(p, items, chunk_size, jobs)[1]:
        mels = [mel for result in results if not isinstance(result, Failed) for _, mel in result]
        if mels:
            yield torch.from_numpy(np.stack(mels))


def list_inputs(source: Path, labeled: bool) -> tuple[list[tuple[str, str, str | None, str | None]], list[Rejection]]:
    """Raw audio to predict: a folder (labels from class folders when `labeled`) or a CSV. As in
    preprocessing, a file listed twice is predicted once (each later row is a `duplicate_path`
    rejection) and a folder's hidden audio files are `hidden` rejections."""
    from shared.sources import drop_duplicates, list_source

    clips, rejections = list_source(source, labeled=labeled)
    clips = drop_duplicates(clips, rejections)
    return [(c.path, c.rel, c.label, c.group) for c in clips], rejections
