"""`python -m trainer train`: the epoch loop, readable top to bottom.

shards -> `ShardStream` workers -> pinned batches -> device: normalise, SpecAugment, MixUp ->
autocast forward -> scaled backward -> unscale, clip -> AdamW step -> LR schedule. Validation
after every epoch (loss, accuracy, macro-F1), early stopping, `best.pt` on improvement, `last.pt`
after every epoch and every `checkpoint_every` steps.

A step never waits for the device: the epoch's running figures (loss x samples, correct
predictions) are summed on the device (`RunningSums`) and read on the host only when the progress
bar refreshes (at most once every `EpochProgress.REFRESH_S` seconds), before a checkpoint and at
the epoch's end. A stop request is looked at after every step in a single process; under DDP,
where looking is an all-reduce, every `STOP_CHECK_EVERY` steps, at a checkpoint step and at the
epoch's end.

Under torchrun every rank runs this same loop on its share of the data (`trainer/data.py`) with
DDP averaging the gradients; the ranks agree on stopping, sum their figures, and only rank 0
writes checkpoints, metrics and progress.

Exact resume: every random draw of a step (dropout, MixUp, masks) comes from generators seeded
by (seed, epoch, step), and the loader's position (`ShardStream.state_dict()`) is saved with the
weights; a run interrupted anywhere and resumed on the same processes and loader workers ends with
the weights of one that never stopped (on CPU). On another layout the epoch continues over exactly
the samples not yet seen (`trainer/elastic.py`).
"""

from __future__ import annotations

import contextlib
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from shared.atomic import write_bytes
from shared.config import EARLY_STOP_METRICS, TrainConfig
from shared.interrupt import STOP_SIGNALS, StopRequest
from trainer import checkpoint
from trainer.augment import augment_mels, freq_mixstyle, mixup, spec_augment
from trainer.data import iter_batches
from trainer.distributed import any_across, check_in_sync, leave, sum_across, sync_buffers
from trainer.elastic import restore_position
from trainer.evaluation import evaluate_batches
from trainer.loss import cross_entropy
from trainer.plan import rng_seed
from trainer.progress import EpochProgress
from trainer.setup import Session, open_session

METRIC_COLUMNS = ["epoch", "step", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "val_f1", "val_balanced_acc",
                  "samples_per_s", "data_wait_fraction", "seconds", "train_samples", "lost_train_samples",
                  "lost_val_samples"]

# Under DDP the ranks agree on a stop request with an all-reduce, which waits for the device; they
# do so at every step that is a multiple of this (the step count is the same on every rank), at a
# checkpoint step and at the epoch's end. At 16, a stop lands within 15 steps.
STOP_CHECK_EVERY = 16


@dataclass
class State:
    """Everything that changes while training, beyond the model/optimizer/scheduler/scaler."""

    epoch: int = 0  # the epoch in progress (or next to start)
    step: int = 0  # optimizer steps over the whole run (the loader holds its own position)
    best: float | None = None  # best early-stopping metric so far
    best_epoch: int = -1
    bad_epochs: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    # running sums of the epoch in progress, so a mid-epoch resume reports the same figures
    sums: dict[str, float] = field(default_factory=lambda: {"loss": 0.0, "correct": 0.0, "n": 0.0})


def _rng_states() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    states = {"python": random.getstate(), "torch": torch.get_rng_state(),
              "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                        "has_gauss": has_gauss, "cached": cached}}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def checkpoint_payload(s: Session, state: State) -> dict[str, Any]:
    """What `last.pt` holds. Under DDP every rank must call this (it sums the epoch's running
    figures across ranks); only rank 0 saves the result."""
    loss, correct, n = sum_across(s.world, [state.sums["loss"], state.sums["correct"], state.sums["n"]])
    return {
        **s.identity(), **s.learner.state_dict(),
        "epoch": state.epoch, "step": state.step, "position": s.train_stream.state_dict(),
        "early_stop": {"best": state.best, "best_epoch": state.best_epoch, "bad_epochs": state.bad_epochs},
        "epoch_sums": {"loss": loss, "correct": correct, "n": n}, "history": state.history, "rng": _rng_states(),
    }


def save(s: Session, state: State, name: str, payload: dict[str, Any] | None = None) -> None:
    payload = payload if payload is not None else checkpoint_payload(s, state)
    if s.world.is_main:
        checkpoint.save(s.run / name, payload, keep_backup=name == checkpoint.LAST)


def restore(s: Session, ckpt: dict[str, Any]) -> State:
    s.learner.load_state_dict(ckpt)
    _set_rng_states(ckpt["rng"])
    restore_position(s.train_stream, s.learner, s.cfg, ckpt)
    stop = ckpt["early_stop"]
    return State(epoch=ckpt["epoch"], step=ckpt["step"], best=stop["best"],
                 best_epoch=stop["best_epoch"], bad_epochs=stop["bad_epochs"],
                 history=list(ckpt["history"]),
                 # the saved sums are over all ranks: rank 0 carries them on, the others start at zero
                 sums=dict(ckpt["epoch_sums"]) if s.world.is_main else {"loss": 0.0, "correct": 0.0, "n": 0.0})


def write_metrics(run: Path, history: list[dict[str, float]]) -> None:
    """One row per epoch; floats to 6 significant digits, empty where there is no validation split."""
    table = pd.DataFrame(history, columns=METRIC_COLUMNS)
    text = table.to_csv(index=False, float_format="%.6g", na_rep="", lineterminator="\n")
    write_bytes(run / "metrics.csv", text.encode("utf-8"))


class RunningSums:
    """The epoch's running training figures, summed on the device so that a step never waits for it.

    The loss is summed as `float64(mean loss) * samples`, one step after another from the
    checkpointed start: the very additions of Python floats, so the figures equal those of reading
    every step on the host bit for bit. `read` is the one host read (a sync on a GPU).
    """

    def __init__(self, start: dict[str, float], device: torch.device) -> None:
        # `full` writes the value on the device (no copy from the host, so no wait)
        self.loss = torch.full((), start["loss"], dtype=torch.float64, device=device)
        self.correct = torch.full((), start["correct"], dtype=torch.float64, device=device)
        self.n = start["n"]  # the batch sizes are known on the host

    def add(self, loss: torch.Tensor, correct: torch.Tensor, n: int) -> None:
        # multiply, then add: two roundings, as in Python (a fused multiply-add would round once)
        self.loss += loss.double() * n
        self.correct += correct
        self.n += n

    def read(self) -> dict[str, float]:
        loss, correct = torch.stack([self.loss, self.correct]).tolist()
        return {"loss": loss, "correct": correct, "n": self.n}


def train_step(s: Session, batch: dict[str, Any], state: State) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One optimizer step, queued on the device without waiting for it; returns (mean loss,
    correct predictions) as device tensors, and the samples."""
    cfg, device, learner = s.cfg, s.device, s.learner
    # Under DDP each rank draws differently (its own dropout masks, MixUp pairs) but reproducibly.
    parts = (cfg.seed, state.epoch, state.step) + ((s.world.rank,) if s.world.distributed else ())
    seed = rng_seed(*parts)
    torch.manual_seed(seed)  # dropout: a pure function of (seed, epoch, step)
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    x = s.normalise(augment_mels(batch["mel"].to(device, non_blocking=True), cfg, generator, s.audio))
    y = batch["label"].to(device, non_blocking=True)
    x = spec_augment(freq_mixstyle(x, cfg, generator, rng), cfg, generator)
    x, y_a, y_b, lam = mixup(x, y, cfg, generator, rng)
    with torch.autocast(device.type, dtype=learner.amp_dtype, enabled=learner.amp_dtype is not None):
        logits = learner.model(x)
        # MixUp mixes the two targets' losses, each clip weighted by its target's class.
        weight, smoothing = learner.class_weights, cfg.label_smoothing
        loss = lam * cross_entropy(logits, y_a, weight, smoothing) + \
            (1.0 - lam) * cross_entropy(logits, y_b, weight, smoothing)
    learner.step(loss, cfg.grad_clip)
    correct = (logits.argmax(dim=1) == y_a).sum()
    return loss.detach(), correct, y.shape[0]


def _stop_check_due(s: Session, step: int, checkpoint_due: bool) -> bool:
    """Whether the ranks look at the stop flag after run step `step` (the same steps on every rank)."""
    return not s.world.distributed or checkpoint_due or step % STOP_CHECK_EVERY == 0


def train_epoch(s: Session, state: State, stop: StopRequest, progress: EpochProgress) -> dict[str, float] | None:
    """Train until the epoch ends (returns its figures) or a stop is requested (returns None)."""
    stream = s.train_stream
    if stream.epoch != state.epoch:
        stream.start_epoch(state.epoch)
    progress.start(state.epoch, stream.epoch_steps, done=stream.steps_done)
    sums = RunningSums(state.sums, s.device)
    wait = busy = 0.0
    samples = 0
    tick = time.perf_counter()
    for batch in iter_batches(s.train_loader):
        fetched = time.perf_counter()
        loss, correct, n = train_step(s, batch, state)
        if s.learner.ema is not None:
            s.learner.ema.update(s.learner.raw_model, state.step)
        state.step += 1
        sums.add(loss, correct, n)
        samples += n
        now = time.perf_counter()
        wait += fetched - tick
        busy += now - tick
        tick = now
        if progress.advance():  # a few times a second, on rank 0 only
            shown = sums.read()
            progress.show(shown["loss"] / shown["n"], shown["correct"] / shown["n"], s.learner.lr,
                          samples / max(busy, 1e-9))
        checkpoint_due = bool(s.cfg.checkpoint_every) and state.step % s.cfg.checkpoint_every == 0
        if _stop_check_due(s, state.step, checkpoint_due) and any_across(s.world, stop.signal is not None):
            state.sums = sums.read()
            return None  # every rank stops at the same step
        if checkpoint_due:
            state.sums = sums.read()
            save(s, state, checkpoint.LAST)
    ended = time.perf_counter()
    state.sums = sums.read()
    busy += time.perf_counter() - ended  # the last steps, which the device may still be running
    progress.finish()
    # one all-reduce for the figures and the stop flag
    loss, correct, n, seen, stopping = sum_across(s.world, [state.sums["loss"], state.sums["correct"],
                                                            state.sums["n"], samples, float(stop.signal is not None)])
    if stopping:
        return None
    return {"train_loss": loss / max(n, 1), "train_acc": correct / max(n, 1),
            "samples_per_s": seen / max(busy, 1e-9), "data_wait_fraction": wait / max(busy, 1e-9),
            "seconds": busy, "train_samples": int(n)}


def _improved(cfg: TrainConfig, state: State, value: float) -> bool:
    if math.isnan(value):
        return False
    if state.best is None:
        return True
    if EARLY_STOP_METRICS[cfg.early_stop_metric] == "min":
        return value < state.best - cfg.min_delta
    return value > state.best + cfg.min_delta


def train(shards: Path, run: Path, cfg: TrainConfig, resume: bool | str, explicit: set[str],
          on_bad_shard: str = "fail", stop: StopRequest | None = None) -> int:
    """Train (or resume) a run; returns the exit status.

    Each of the `stop` request's signals (default `STOP_SIGNALS`; a request entered by the caller
    also counts what came before this call), from the moment this is called (while the run sets
    up, trains, validates or saves), makes it save a checkpoint at the next point where it can
    and return 128 + the signal's number."""
    with contextlib.nullcontext(stop) if stop is not None else StopRequest(STOP_SIGNALS) as stop:
        s = open_session(shards, run, cfg, resume, explicit, on_bad_shard)
        try:
            return _train(s, shards, run, stop)
        finally:
            s.close()
            leave(s.world)


def _stopped(s: Session, state: State, stop: StopRequest, shards: Path, run: Path, saved: bool) -> int:
    """Save where the run stands (unless `last.pt` holds it already) and say how to go on."""
    if not saved:
        save(s, state, checkpoint.LAST)
    if s.world.is_main:
        print(f"\nstopped by {stop.name} at epoch {state.epoch + 1}, step {state.step}; checkpoint saved. "
              f"Resume with: melshard train {shards} --out {run} --resume", file=sys.stderr)
    return stop.status


def _train(s: Session, shards: Path, run: Path, stop: StopRequest) -> int:
    cfg, main = s.cfg, s.world.is_main
    state = restore(s, s.resumed) if s.resumed else State()
    if s.resumed and main:
        print(f"resuming {run} at epoch {state.epoch + 1}, step {state.step}", file=sys.stderr)
    if main:
        write_metrics(run, state.history)
    progress = EpochProgress(cfg.epochs, enabled=main)
    if s.val_loader is None and main:
        print(f"no validation split in {shards}: early stopping is off, all {cfg.epochs} epochs run and best.pt "
              "is the last epoch's weights", file=sys.stderr)
    saved = s.resumed is not None  # last.pt holds `state` as it is now
    while state.epoch < cfg.epochs and state.bad_epochs < cfg.patience:  # a finished run stays finished
        # A stop that came while setting up or validating, or while the last checkpoint was written
        if any_across(s.world, stop.signal is not None):
            return _stopped(s, state, stop, shards, run, saved)
        figures = train_epoch(s, state, stop, progress)
        saved = False
        if figures is None:
            return _stopped(s, state, stop, shards, run, saved)
        # Every rank scores the whole validation split with the same weights, so all reach the
        # same early-stopping decision without exchanging predictions.
        sync_buffers(s.world, s.learner.raw_model)
        if s.learner.ema is not None:
            s.learner.ema.copy_buffers(s.learner.raw_model)
        val = evaluate_batches(s, s.val_loader, s.learner.scored_model) if s.val_loader is not None else None
        row = {"epoch": state.epoch + 1, "step": state.step, "lr": s.learner.lr,
               **{k: figures[k] for k in ("train_loss", "train_acc")},
               "val_loss": val.loss if val else float("nan"),
               "val_acc": val.accuracy if val else float("nan"),
               "val_f1": val.macro_f1 if val else float("nan"),
               "val_balanced_acc": val.balanced_accuracy if val else float("nan"),
               **{k: figures[k] for k in ("samples_per_s", "data_wait_fraction", "seconds", "train_samples")},
               "lost_train_samples": s.lost_samples("train"), "lost_val_samples": s.lost_samples("val")}
        state.history.append(row)
        progress.summary(row)
        metric = row[cfg.early_stop_metric]
        improved = _improved(cfg, state, metric) or val is None
        state.epoch += 1
        s.train_stream.start_epoch(state.epoch)
        state.sums = {"loss": 0.0, "correct": 0.0, "n": 0.0}
        if improved:
            state.best, state.best_epoch, state.bad_epochs = metric, row["epoch"], 0
        else:
            state.bad_epochs += 1
        payload = checkpoint_payload(s, state)
        if improved:
            save(s, state, checkpoint.BEST, payload)
        save(s, state, checkpoint.LAST, payload)
        saved = True
        if main:
            write_metrics(run, state.history)
            s.log_epoch(row)
        if state.bad_epochs >= cfg.patience and main:
            print(f"early stopping: no {cfg.early_stop_metric} improvement for {cfg.patience} epochs "
                  f"(best {state.best:.4f} at epoch {state.best_epoch})", file=sys.stderr)
    ema = s.learner.ema
    sync_buffers(s.world, s.learner.raw_model)
    models = [s.learner.raw_model] + ([ema.model] if ema is not None else [])
    if ema is not None:
        ema.copy_buffers(s.learner.raw_model)
    in_sync = [check_in_sync(s.world, m) for m in models]  # every rank joins every collective
    if not all(in_sync):
        raise RuntimeError("the ranks ended with different weights (or weight averages); DDP lost synchronisation")
    if not main:
        return 0
    if s.world.distributed:
        print(f"ranks in sync: weights identical on all {s.world.size} ranks"
              + (", weight averages too" if ema is not None else ""), file=sys.stderr)
    if s.val_loader is None:
        print(f"done: no validation split, so no best epoch: {run / checkpoint.BEST} is the last epoch "
              f"({state.best_epoch})")
    else:
        print(f"done: best {cfg.early_stop_metric} {state.best if state.best is not None else float('nan'):.4f} "
              f"at epoch {state.best_epoch}; {run / checkpoint.BEST}")
    if s.lost:
        print(f"warning: trained without {s.lost_samples('train')} train and {s.lost_samples('val')} val samples "
              f"of damaged shards ({', '.join(b.name for bad in s.lost.values() for b in bad)}); "
              f"see {run / 'config.json'}", file=sys.stderr)
    return 0
