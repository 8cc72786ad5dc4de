"""Class names <-> integer labels: class `i` is the `i`-th name in sorted order."""

from __future__ import annotations

from collections.abc import Iterable


def fit_labels(names: Iterable[str]) -> list[str]:
    """The label list: class `i` is `labels[i]`, names in sorted order (what scikit-learn's
    LabelEncoder gives, without importing scikit-learn: a second of every run's start)."""
    return sorted({str(name) for name in names})


def label_index(labels: list[str]) -> dict[str, int]:
    """Name -> index for a label list from `fit_labels` (or a manifest / checkpoint)."""
    return {name: index for index, name in enumerate(labels)}
