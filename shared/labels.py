"""Class names <-> integer labels: sorted names, encoded with scikit-learn's LabelEncoder."""

from __future__ import annotations

from collections.abc import Iterable

from sklearn.preprocessing import LabelEncoder


def fit_labels(names: Iterable[str]) -> list[str]:
    """The label list: class `i` is `labels[i]`, names in sorted order."""
    return [str(name) for name in LabelEncoder().fit(list(names)).classes_]


def label_index(labels: list[str]) -> dict[str, int]:
    """Name -> index for a label list from `fit_labels` (or a manifest / checkpoint)."""
    return {name: index for index, name in enumerate(labels)}
