"""Resuming on another layout: other process counts (`--nproc_per_node`, `--nnodes`) or loader workers.

Long runs come back on whatever is free. The loader's position is global (`trainer.plan`), so the
data side is exact on any layout: the interrupted epoch continues over exactly the samples not yet
seen. This module keeps the rest of the run meaningful:
- the global batch (per-process batch x processes) is kept: the per-process batch becomes
  global / processes, refused in one line when that does not divide. The epoch then has the same
  number of steps on any layout, so the LR schedule runs on unchanged;
- `--batch-size` given with `--resume` sets another global batch; the peak learning rate scales
  linearly with it (lr x new global / old global, Goyal et al. 2017);
- when the steps left differ from what the schedule planned (another global batch; rounding when
  a process would otherwise get an empty batch), the schedule is rebuilt over the steps left,
  starting at the same fraction of its curve, so the learning rate does not jump.
What cannot be kept is bitwise equality with an uninterrupted run: gradients are summed over
another grouping of samples, in another order.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any

from shared.config import TrainConfig, from_dict
from shared.errors import UsageError
from trainer.schedule import make_scheduler


def relayout(cfg: TrainConfig, ckpt: dict[str, Any], world: int, batch_given: bool) -> tuple[TrainConfig, str]:
    """The configuration to resume `ckpt` on `world` processes, and a line saying what changed ('' if nothing)."""
    saved = from_dict(TrainConfig, ckpt["train_config"])
    before = int(ckpt.get("world_size", 1))
    global_batch = saved.batch_size * before
    if batch_given:
        batch = cfg.batch_size
    elif global_batch % world:
        raise UsageError(f"cannot resume on {world} process(es): the global batch {global_batch} ({saved.batch_size} "
                         f"x {before} process(es)) does not divide by {world}; pass --batch-size for the "
                         "per-process batch (the learning rate then scales with the global batch)")
    else:
        batch = global_batch // world
    lr = saved.lr * batch * world / global_batch
    cfg = replace(cfg, batch_size=batch, lr=lr)
    if (before, batch) == (world, saved.batch_size):
        return cfg, ""
    scaled = f", learning rate {saved.lr:g} -> {lr:g} (linear in the global batch)" if lr != saved.lr else ""
    return cfg, (f"resuming on {world} process(es) (trained on {before}): batch {batch} per process, global batch "
                 f"{batch * world} (was {global_batch}){scaled}")


def restore_position(stream: Any, learner: Any, cfg: TrainConfig, ckpt: dict[str, Any]) -> None:
    """Put the training stream at the checkpoint's position (on this layout) and fit the
    learner's schedule to the steps left."""
    position = ckpt["position"]
    if "layout" in position:
        stream.load_state_dict(position)
    elif any(position.get("consumed", [])):
        raise UsageError("cannot resume: this checkpoint's mid-epoch data position is in an older format; "
                         "resume it with the version that wrote it, or start a new --out")
    else:
        stream.start_epoch(position["epoch"])
    _fit_schedule(learner, cfg, stream, ckpt)


def steps_left(stream: Any, cfg: TrainConfig, epoch: int) -> int:
    if epoch >= cfg.epochs:
        return 0
    return stream.epoch_steps - stream.steps_done + (cfg.epochs - epoch - 1) * stream.batches_per_epoch()


def _fit_schedule(learner: Any, cfg: TrainConfig, stream: Any, ckpt: dict[str, Any]) -> None:
    done = learner.scheduler.last_epoch  # steps the schedule has taken
    left = steps_left(stream, cfg, ckpt["epoch"])
    planned = int(ckpt.get("schedule_steps", done + left))
    learner.schedule_steps = planned
    if done + left == planned and cfg.lr == ckpt["train_config"]["lr"]:
        return  # the same schedule, step for step (always so on the same layout)
    at = round(done * left / (planned - done)) if planned > done else done
    for group in learner.optimizer.param_groups:
        group["lr"] = group["initial_lr"] = cfg.lr
    scheduler = make_scheduler(learner.optimizer, cfg, at + left)
    with warnings.catch_warnings():  # a step of the schedule before the optimizer's: intended here
        warnings.simplefilter("ignore")
        scheduler.last_epoch = at - 1
        scheduler.step()
    learner.scheduler, learner.schedule_steps = scheduler, at + left
