"""Inputs that could not be used, as CSV rows: a preprocessing run's `errors.csv`, predict's
`<out>.errors.csv` and evaluate's `report/not_evaluated.csv` all have these columns."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import pandas as pd

from shared.atomic import text_bytes
from shared.sources import Rejection

COLUMNS = ["path", "stage", "reason", "detail"]


def rejections_frame(rows: Iterable[Rejection | Sequence[str]], sort: bool = False) -> pd.DataFrame:
    """One row per input (a `Rejection`, or its four values), in the order given or by path."""
    frame = pd.DataFrame([[r.path, r.stage, r.reason, r.detail] if isinstance(r, Rejection) else list(r)
                          for r in rows], columns=COLUMNS)
    return frame.sort_values("path") if sort else frame


def rejections_csv(rows: Iterable[Rejection | Sequence[str]], sort: bool = False) -> bytes:
    """The CSV file of `rejections_frame(rows, sort)`: UTF-8, a path's undecodable bytes as \\xNN."""
    return text_bytes(rejections_frame(rows, sort).to_csv(index=False))


def reason_counts(rows: Iterable[Rejection]) -> str:
    """How many rows have each reason, most first: "2 duplicate_path, 1 undecodable"."""
    counts = Counter(row.reason for row in rows)
    return ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items(), key=lambda item: (-item[1], item[0])))
