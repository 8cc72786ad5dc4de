"""The learning-rate schedule: linear warm-up then cosine decay to zero, or one-cycle."""

from __future__ import annotations

import math

import torch

from shared.config import TrainConfig


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int):
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=cfg.lr, total_steps=max(total_steps, 2),
            pct_start=cfg.warmup_fraction or 0.25)
    warmup = int(total_steps * cfg.warmup_fraction)

    def factor(step: int) -> float:  # linear warm-up, then cosine decay to zero
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total_steps - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
