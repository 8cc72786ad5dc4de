"""Inputs that could not be used, as CSV rows: a preprocessing run's `errors.csv`, predict's
`<out>.errors.csv` and evaluate's `report/not_evaluated.csv` all have these columns."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence

import pandas as pd

from shared.atomic import text_bytes
from shared.sources import Clip, Rejection, drop_duplicates

COLUMNS = ["path", "stage", "reason", "detail"]


def rejections_frame(rows: Iterable[Rejection | Sequence[str]], sort: bool = False) -> pd.DataFrame:
    """One row per input (a `Rejection`, or its four values), in the order given or by path."""
    frame = pd.DataFrame([[r.path, r.stage, r.reason, r.detail] if isinstance(r, Rejection) else list(r)
                          for r in rows], columns=COLUMNS)
    return frame.sort_values("path") if sort else frame


def rejections_csv(rows: Iterable[Rejection | Sequence[str]], sort: bool = False) -> bytes:
    """The CSV file of `rejections_frame(rows, sort)`: UTF-8, a path's undecodable bytes as \\xNN."""
    return text_bytes(rejections_frame(rows, sort).to_csv(index=False))


def unique_clips(clips: list[Clip], rejections: list[Rejection]) -> list[Clip]:
    """`drop_duplicates`: the first listing of each file is kept, each later one becomes a
    `duplicate_path` rejection; where the later row gives the file another label, its detail
    names both labels (the first one is the label used)."""
    start = len(rejections)
    kept = drop_duplicates(clips, rejections)
    if len(kept) == len(clips):
        return kept
    dropped, position = [], 0  # `kept` is a subsequence of `clips`, the rejections follow `dropped`'s order
    for clip in clips:
        if position < len(kept) and clip is kept[position]:
            position += 1
        else:
            dropped.append(clip)
    labeled = [(i, clip) for i, clip in enumerate(dropped) if clip.label is not None]
    if not labeled:
        return kept
    # The kept clip of each dropped one: the same real path. Only clips with a dropped one's size
    # and modification time (from the listing's stat, in memory) can be it, so a long list with a
    # few repeats costs a few path resolutions, not one per file.
    stats = {(clip.size, clip.mtime_ns) for _, clip in labeled}
    first = {}
    for clip in kept:
        if (clip.size, clip.mtime_ns) in stats:
            first.setdefault(os.path.realpath(clip.path), clip)
    for i, clip in labeled:
        earlier = first.get(os.path.realpath(clip.path))
        if earlier is not None and earlier.label != clip.label:
            row = rejections[start + i]
            rejections[start + i] = Rejection(row.path, row.stage, row.reason,
                                              f"{row.detail} with label '{earlier.label}'; this row's label "
                                              f"'{clip.label}' differs and was not used")
    return kept


def reason_counts(rows: Iterable[Rejection]) -> str:
    """How many rows have each reason, most first: "2 duplicate_path, 1 undecodable"."""
    counts = Counter(row.reason for row in rows)
    return ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items(), key=lambda item: (-item[1], item[0])))
