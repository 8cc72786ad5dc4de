"""Running a model over a loader: loss, accuracy, macro-F1 and the raw predictions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score
from torch.nn import functional as F

from trainer.augment import centre_crop
from trainer.data import iter_batches


@dataclass(frozen=True)
class Evaluation:
    loss: float
    accuracy: float
    macro_f1: float
    balanced_accuracy: float
    y_true: np.ndarray
    y_pred: np.ndarray


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Macro-F1 over every class of the manifest (`0 .. n_classes - 1`), as training's `val_f1`,
    early stopping and `evaluate`'s report all define it: a class with no clip in the scored data
    counts as 0, so the figure never looks better for classes it could not see."""
    return float(f1_score(y_true, y_pred, labels=list(range(n_classes)), average="macro", zero_division=0))


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """The mean of the per-class recalls over the classes present in `y_true` (scikit-learn's
    `balanced_accuracy_score`): answering the majority class always scores 1 / classes."""
    classes = np.unique(y_true)
    if classes.size == 0:
        return float("nan")
    return float(np.mean([np.mean(y_pred[y_true == c] == c) for c in classes]))


def majority_baseline(y_true: np.ndarray, n_classes: int) -> dict[str, float]:
    """Accuracy, macro-F1 and balanced accuracy of always answering the most frequent class of `y_true`."""
    majority = int(np.bincount(y_true, minlength=n_classes).argmax())
    constant = np.full_like(y_true, majority)
    return {"class_index": majority, "accuracy": float(np.mean(y_true == majority)),
            "macro_f1": macro_f1(y_true, constant, n_classes),
            "balanced_accuracy": balanced_accuracy(y_true, constant)}


@torch.no_grad()
def evaluate_batches(session: Any, loader, model: torch.nn.Module | None = None) -> Evaluation:
    """Evaluate `model` (default `session.learner.model`) on labeled batches; never mixes, never augments,
    and takes the centre `train_frames` of each clip (the view prediction takes too)."""
    if model is None:  # under DDP, the bare module: scoring needs no gradient sync, no rank waits on another
        model = session.learner.raw_model if session.world.distributed else session.learner.model
    model.eval()
    total, truths, preds = 0.0, [], []
    for batch in iter_batches(loader):
        x = session.normalise(centre_crop(batch["mel"], session.cfg.train_frames).to(session.device, non_blocking=True))
        y = batch["label"].to(session.device, non_blocking=True)
        amp = session.learner.amp_dtype
        with torch.autocast(session.device.type, dtype=amp, enabled=amp is not None):
            logits = model(x)
        total += float(F.cross_entropy(logits.float(), y, reduction="sum"))
        truths.append(y.cpu().numpy())
        preds.append(logits.argmax(dim=1).cpu().numpy())
    model.train()
    y_true, y_pred = np.concatenate(truths), np.concatenate(preds)
    return Evaluation(total / max(len(y_true), 1), float(accuracy_score(y_true, y_pred)),
                      macro_f1(y_true, y_pred, len(session.manifest.labels)), balanced_accuracy(y_true, y_pred),
                      y_true, y_pred)
