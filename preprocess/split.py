"""Train/val split: seeded, stratified by label, and leak-free across groups (e.g. speakers)."""

from __future__ import annotations

import dataclasses
import warnings
from collections import Counter

import numpy as np
from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold, train_test_split

from preprocess.sources import Clip


def _val_mask(labels: list[str], groups: list[str] | None, fraction: float, seed: int) -> np.ndarray:
    n = len(labels)
    mask = np.zeros(n, dtype=bool)
    index = np.arange(n)
    if groups is not None:
        n_groups = len(set(groups))
        if n_groups < 2:
            return mask
        folds = max(2, round(1.0 / fraction))
        if n_groups >= folds:
            # One fold of a stratified group k-fold: about `fraction` of the clips, classes
            # balanced as far as whole groups allow, no group on both sides.
            splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "least populated class" notices
                _, val = next(splitter.split(index, labels, groups))
        else:
            splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
            _, val = next(splitter.split(index, labels, groups))
        mask[val] = True
        return mask
    counts = Counter(labels)
    n_val = int(round(n * fraction))
    if n_val == 0:
        return mask
    stratify = labels if min(counts.values()) >= 2 and n_val >= len(counts) else None
    _, val = train_test_split(index, test_size=n_val, random_state=seed, stratify=stratify)
    mask[val] = True
    return mask


def assign_splits(clips: list[Clip], val_fraction: float, seed: int) -> list[Clip]:
    """Give every labeled clip without a split `train` or `val`; clips with a split keep it.

    Stratified by label; when any clip has a group, clips are split by whole groups (a clip
    without a group is a group of its own).
    """
    todo = [i for i, clip in enumerate(clips) if clip.split is None]
    if not todo or val_fraction <= 0:
        return [c if c.split else dataclasses.replace(c, split="train") for c in clips]
    # Sorting makes the split independent of listing order.
    todo.sort(key=lambda i: clips[i].rel)
    labels = [clips[i].label for i in todo]
    has_groups = any(clips[i].group for i in todo)
    groups = [clips[i].group or f"\0{clips[i].rel}" for i in todo] if has_groups else None
    mask = _val_mask(labels, groups, val_fraction, seed)
    result = list(clips)
    for position, i in enumerate(todo):
        result[i] = dataclasses.replace(clips[i], split="val" if mask[position] else "train")
    return result
