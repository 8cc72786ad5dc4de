"""Train/val split: seeded, stratified by label, and leak-free across groups (e.g. speakers)."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

import numpy as np
from sklearn.model_selection import train_test_split

from shared.errors import UsageError
from shared.sources import Clip


def _check_fraction(n: int, n_classes: int, fraction: float) -> int:
    """The validation clip count `fraction` asks for; a usage error when it would leave fewer
    training clips than classes (some class would have nothing to learn from)."""
    if not 0 <= fraction < 1:
        raise UsageError(f"--val-fraction must be in [0, 1), got {fraction}")
    n_val = int(round(n * fraction))
    if n - n_val >= n_classes:
        return n_val
    limit = math.floor((n - n_classes) / n * 100) / 100  # round(n * limit) <= n - n_classes
    fix = f"use at most {limit:.2f}" if limit > 0 else "use 0 (or list more clips)"
    raise UsageError(f"--val-fraction {fraction} leaves {n - n_val} training clip(s) of {n} for {n_classes} "
                     f"classes, and every class needs at least one: {fix}")


def _val_mask(labels: list[str], fraction: float, seed: int, n_val: int) -> np.ndarray:
    n = len(labels)
    mask = np.zeros(n, dtype=bool)
    if n_val == 0:
        return mask
    counts = Counter(labels)
    stratify = labels if min(counts.values()) >= 2 and n_val >= len(counts) else None
    _, val = train_test_split(np.arange(n), test_size=n_val, random_state=seed, stratify=stratify)
    mask[val] = True
    return mask


def group_val_mask(labels: list[str], groups: list[str], fraction: float, seed: int) -> np.ndarray:
    """Whole groups to validation, as close to `fraction` of the clips as whole groups allow.

    A seeded greedy pass over the groups, largest first (ties in a seeded order): a group goes to
    validation when that brings the per-class validation counts closer to `fraction` of each
    class (stratification), ties broken by the overall count; a group that holds a class's last
    training clips stays in training. Depends on the group names and sizes, not on listing order.
    """
    names = sorted(set(groups))
    classes = sorted(set(labels))
    g_index = {name: i for i, name in enumerate(names)}
    c_index = {name: i for i, name in enumerate(classes)}
    counts = np.zeros((len(names), len(classes)), dtype=np.int64)
    for label, group in zip(labels, groups):
        counts[g_index[group], c_index[label]] += 1
    sizes = counts.sum(axis=1)
    per_class = counts.sum(axis=0)
    target, total_target = fraction * per_class, fraction * len(labels)
    tiebreak = np.random.default_rng([seed, len(names)]).permutation(len(names))
    order = sorted(range(len(names)), key=lambda g: (-int(sizes[g]), int(tiebreak[g])))
    val, val_total = np.zeros(len(classes)), 0
    train_left = per_class.copy()
    chosen = np.zeros(len(names), dtype=bool)
    for g in order:
        c = counts[g]
        if np.any((c > 0) & (train_left - c <= 0)):  # a class would lose its last training clip
            continue
        before = np.abs(val - target).sum(), abs(val_total - total_target)
        after = np.abs(val + c - target).sum(), abs(val_total + sizes[g] - total_target)
        if after[0] < before[0] - 1e-9 or (abs(after[0] - before[0]) <= 1e-9 and after[1] < before[1] - 1e-9):
            chosen[g] = True
            val += c
            val_total += int(sizes[g])
            train_left -= c
    return np.array([chosen[g_index[group]] for group in groups], dtype=bool)


def assign_splits(clips: list[Clip], val_fraction: float, seed: int, notes: list[str] | None = None) -> list[Clip]:
    """Give every labeled clip without a split `train` or `val`; clips with a split keep it.

    Stratified by label; when any clip has a group, clips are split by whole groups (a clip
    without a group is a group of its own) and a line saying the fraction obtained goes to
    `notes`. A fraction that leaves fewer training clips than classes is a `UsageError`.
    """
    if not 0 <= val_fraction < 1:
        raise UsageError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    todo = [i for i, clip in enumerate(clips) if clip.split is None]
    if not todo or val_fraction <= 0:
        return [c if c.split else dataclasses.replace(c, split="train") for c in clips]
    # Sorting makes the split independent of listing order.
    todo.sort(key=lambda i: clips[i].rel)
    labels = [clips[i].label for i in todo]
    n_val = _check_fraction(len(todo), len(set(labels)), val_fraction)
    has_groups = any(clips[i].group for i in todo)
    if has_groups:
        groups = [clips[i].group or f"\0{clips[i].rel}" for i in todo]
        mask = group_val_mask(labels, groups, val_fraction, seed)
        if notes is not None:
            val_groups = len({g for g, m in zip(groups, mask) if m})
            notes.append(f"split by group: {val_groups} of {len(set(groups))} groups, {int(mask.sum())} of "
                         f"{len(todo)} clips ({mask.mean():.3f}) to validation for --val-fraction {val_fraction} "
                         "(as close as whole groups allow)")
    else:
        mask = _val_mask(labels, val_fraction, seed, n_val)
    result = list(clips)
    for position, i in enumerate(todo):
        result[i] = dataclasses.replace(clips[i], split="val" if mask[position] else "train")
    return result
