"""Train/val split: seeded, stratified by label, and leak-free across groups (e.g. speakers)."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from shared.errors import UsageError
from shared.labels import fit_labels, label_index
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
    mask[val_indices(n, n_val, seed, stratify)] = True
    return mask


# `val_indices` draws exactly the test indices of scikit-learn's
# `train_test_split(np.arange(n), test_size=n_val, random_state=seed, stratify=labels)`: the same
# random calls on the same RandomState in the same order. It is copied (30 lines) because importing
# sklearn.model_selection costs about a second of every preprocessing run's start (it pulls in
# scipy.stats), which is half of a small run. tests/preprocess/test_split_properties.py holds the
# two equal on generated label lists, class counts, fractions and seeds.


def val_indices(n: int, n_val: int, seed: int, stratify: list[str] | None) -> np.ndarray:
    """The `n_val` validation indices of `n` clips: a seeded shuffle, stratified by `stratify`
    (every class at least 2 clips, and `n_val` and `n - n_val` at least the class count)."""
    rng = np.random.RandomState(seed)
    if stratify is None:
        return rng.permutation(n)[:n_val]
    _, y_indices, class_counts = np.unique(np.asarray(stratify), return_inverse=True, return_counts=True)
    class_indices = np.split(np.argsort(y_indices, kind="stable"), np.cumsum(class_counts)[:-1])
    n_i = _approximate_mode(class_counts, n - n_val, rng)
    t_i = _approximate_mode(class_counts - n_i, n_val, rng)
    val: list[int] = []
    for i in range(len(class_counts)):
        permuted = class_indices[i].take(rng.permutation(class_counts[i]), mode="clip")
        val.extend(permuted[n_i[i] : n_i[i] + t_i[i]])
    return np.asarray(val, dtype=np.intp)


def _approximate_mode(class_counts: np.ndarray, n_draws: int, rng: np.random.RandomState) -> np.ndarray:
    """Per-class draws closest to proportional, ties broken by `rng` (sklearn's _approximate_mode)."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (inds,) = np.where(remainder == value)
            add_now = min(len(inds), need_to_add)
            floored[rng.choice(inds, size=add_now, replace=False)] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)


def group_val_mask(labels: list[str], groups: list[str], fraction: float, seed: int) -> np.ndarray:
    """Whole groups to validation, as close to `fraction` of the clips as whole groups allow.

    A seeded greedy pass over the groups, largest first (ties in a seeded order): a group goes to
    validation when that brings the per-class validation counts closer to `fraction` of each
    class (stratification), ties broken by the overall count; a group that holds a class's last
    training clips stays in training. Depends on the group names and sizes, not on listing order.
    """
    names = sorted(set(groups))
    classes = fit_labels(labels)
    g_index = {name: i for i, name in enumerate(names)}
    c_index = label_index(classes)
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
        return [c if c.split else c.with_split("train") for c in clips]
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
        result[i] = clips[i].with_split("val" if mask[position] else "train")
    return result
