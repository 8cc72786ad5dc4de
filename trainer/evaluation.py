"""Running a model over a loader: loss, accuracy, macro-F1 and the raw predictions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score
from torch.nn import functional as F

from trainer.data import iter_batches


@dataclass(frozen=True)
class Evaluation:
    loss: float
    accuracy: float
    macro_f1: float
    y_true: np.ndarray
    y_pred: np.ndarray


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Macro-F1 over every class of the manifest (`0 .. n_classes - 1`), as training's `val_f1`,
    early stopping and `evaluate`'s report all define it: a class with no clip in the scored data
    counts as 0, so the figure never looks better for classes it could not see."""
    return float(f1_score(y_true, y_pred, labels=list(range(n_classes)), average="macro", zero_division=0))


@torch.no_grad()
def evaluate_batches(session: Any, loader) -> Evaluation:
    """Evaluate `session.model` on labeled batches; never mixes, never augments."""
    # Under DDP, the bare module: scoring needs no gradient sync, and no rank waits on another.
    model = session.raw_model if session.world.distributed else session.model
    model.eval()
    total, truths, preds = 0.0, [], []
    for batch in iter_batches(loader):
        x = session.normalise(batch["mel"].to(session.device, non_blocking=True))
        y = batch["label"].to(session.device, non_blocking=True)
        with torch.autocast(session.device.type, dtype=session.amp_dtype, enabled=session.amp_dtype is not None):
            logits = model(x)
        total += float(F.cross_entropy(logits.float(), y, reduction="sum"))
        truths.append(y.cpu().numpy())
        preds.append(logits.argmax(dim=1).cpu().numpy())
    model.train()
    y_true, y_pred = np.concatenate(truths), np.concatenate(preds)
    return Evaluation(total / max(len(y_true), 1), float(accuracy_score(y_true, y_pred)),
                      macro_f1(y_true, y_pred, len(session.manifest["labels"])), y_true, y_pred)
