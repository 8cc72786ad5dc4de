"""The weights and what moves them: the model (wrapped for DDP and torch.compile when on), AdamW,
the LR schedule, the AMP scaler and the weight average, built once per run; one optimizer step;
and their part of a checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from shared.config import TrainConfig
from shared.manifest import Manifest
from trainer.device import pick_amp
from trainer.distributed import World
from trainer.ema import WeightAverage
from trainer.models import build_model, model_args
from trainer.schedule import make_scheduler


def args_of(cfg: TrainConfig, n_classes: int) -> dict[str, Any]:
    """The model's constructor arguments from a training config: what the model is built with
    and what checkpoints record, from one place."""
    return model_args(n_classes, cfg.width, cfg.dropout, cfg.centre_bands)


def class_weights(manifest: Manifest, rule: str, device: torch.device) -> torch.Tensor | None:
    """Cross-entropy weights per class for `rule` "balanced": total / (classes x count) from the
    train split's per-class sample counts, rescaled to mean 1 over the classes trained on (a class
    with no train sample gets 0: it is never a target). None for "none"."""
    if rule == "none":
        return None
    counts = manifest.splits["train"].per_class
    n = torch.tensor([float(counts.get(label, 0)) for label in manifest.labels], dtype=torch.float64)
    present = n > 0
    weights = torch.where(present, n.sum() / n.clamp_min(1.0), torch.zeros_like(n))
    weights = weights / weights[present].mean()
    return weights.to(torch.float32).to(device)


@dataclass(kw_only=True)
class Learner:
    raw_model: nn.Module  # the bare module, whose state checkpoints hold
    model: nn.Module  # what a step runs: raw_model, wrapped by DDP and torch.compile when on
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler  # on for fp16 only
    amp_dtype: torch.dtype | None
    schedule_steps: int  # the steps the LR schedule spans (an elastic resume re-plans them)
    class_weights: torch.Tensor | None = None  # cross-entropy weights per class (--class-weights)
    ema: WeightAverage | None = None  # averaged weights (--ema-decay): validated, saved in best.pt, predicted with

    @property
    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    @property
    def scored_model(self) -> nn.Module | None:
        """The weights validation scores: the average when on, else None (the model itself)."""
        return self.ema.model if self.ema is not None else None

    def step(self, loss: torch.Tensor, grad_clip: float) -> None:
        """Backpropagate `loss` and take one optimizer and schedule step, without waiting for the device."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if grad_clip > 0:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
            nn.utils.clip_grad_norm_(self.model.parameters(), grad_clip)
        # fp16 only: GradScaler.step reads its inf/NaN flag on the host (a sync that skipping a step
        # needs); with bf16 or without AMP the scaler is off and this is the optimizer's step.
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        """The learner's part of `last.pt` and `best.pt`."""
        return {"model": self.raw_model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "schedule_steps": self.schedule_steps,
                **({"ema": self.ema.state_dict()} if self.ema is not None else {})}

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        """Back to a checkpoint's weights and optimizer state (the schedule's length is fitted to
        the resumed layout by `trainer.elastic`)."""
        self.raw_model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(ckpt["ema"])


def build_learner(cfg: TrainConfig, manifest: Manifest, device: torch.device, world: World,
                  total_steps: int) -> Learner:
    """Seed, build the model on `device` (the same initial weights on every rank: DDP broadcasts
    rank 0's), and the optimizer and schedule over `total_steps`."""
    torch.manual_seed(cfg.seed)
    amp_dtype = pick_amp(cfg.amp, device)
    raw_model = build_model(cfg.model, args_of(cfg, len(manifest.labels))).to(device)
    if cfg.channels_last:
        raw_model = raw_model.to(memory_format=torch.channels_last)
    model = raw_model
    if world.distributed:
        device_ids = [device.index] if device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(raw_model, device_ids=device_ids)
    model = torch.compile(model) if cfg.compile else model
    ema = WeightAverage(raw_model, cfg.ema_decay) if cfg.ema_decay > 0 else None  # after DDP's broadcast
    optimizer = torch.optim.AdamW(raw_model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return Learner(raw_model=raw_model, model=model, optimizer=optimizer,
                   scheduler=make_scheduler(optimizer, cfg, total_steps),
                   scaler=torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16),
                   amp_dtype=amp_dtype, schedule_steps=total_steps,
                   class_weights=class_weights(manifest, cfg.class_weights, device), ema=ema)
