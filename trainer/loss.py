"""The training loss: cross-entropy with label smoothing, each clip weighted by its class."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None,
                  smoothing: float) -> torch.Tensor:
    """Mean label-smoothed cross-entropy; with `weight` (one per class) each clip's whole loss is
    weighted by its own class's weight and the mean is taken over those weights.

    Not `F.cross_entropy(weight=..., label_smoothing=...)`: PyTorch weights the smoothing term's
    every class by that class's weight, on every clip, so under 50:1 balanced weights the smoothed
    share of a majority clip pulls it toward the minority classes harder than its own label pulls
    it back, and the majority class collapses (recall 0). Without smoothing both are the same.
    """
    if weight is None:
        return F.cross_entropy(logits, target, label_smoothing=smoothing)
    per_clip = F.cross_entropy(logits, target, reduction="none", label_smoothing=smoothing)
    w = weight[target]
    return (per_clip * w).sum() / w.sum()
