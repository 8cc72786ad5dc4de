"""An exponential moving average of the weights (`--ema-decay`), for validation and prediction.

The averaged weights sit in a flatter part of the loss than the last step's, which usually
scores better on speakers or rooms training never saw; they cost one copy of the model and one
`lerp` per step. BatchNorm buffers are copied, not averaged: running statistics are already an
average. With decay d the average after step n is `w_avg <- w_avg + (1 - d_n) (w - w_avg)`,
`d_n = min(d, (1 + n) / (10 + n))`, so the first steps are not dominated by the random initial
weights. Everything is a function of the weights and the step count, so a resumed run holds the
same average as one that never stopped (the average itself is saved in `last.pt`), and ranks
whose weights DDP keeps equal hold equal averages.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class WeightAverage:
    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)

    def decay_at(self, step: int) -> float:
        return min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Fold `model`'s weights after optimizer step `step` (0-based, over the run) in."""
        averaged = list(self.model.parameters())
        current = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(averaged, current, 1.0 - self.decay_at(step))
        self.copy_buffers(model)

    @torch.no_grad()
    def copy_buffers(self, model: nn.Module) -> None:
        for mine, theirs in zip(self.model.buffers(), model.buffers()):
            mine.copy_(theirs)

    def state_dict(self) -> dict[str, Any]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state)
