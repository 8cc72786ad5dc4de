"""errors.csv, predict's errors and evaluate's not_evaluated.csv: one writer, one set of columns."""

from __future__ import annotations

import io

import pandas as pd

from shared.rejections import COLUMNS, rejections_csv, rejections_frame
from shared.sources import Rejection

ROWS = [Rejection("b.wav", "decode", "undecodable", "av: Invalid data"),
        Rejection("a, \"odd\".wav", "listing", "empty_file", "0 bytes")]


def test_rejections_and_their_values_write_the_same_csv():
    as_values = [[r.path, r.stage, r.reason, r.detail] for r in ROWS]
    assert rejections_csv(ROWS) == rejections_csv(as_values)
    back = pd.read_csv(io.BytesIO(rejections_csv(ROWS)))
    assert list(back.columns) == COLUMNS and back["path"].tolist() == ["b.wav", "a, \"odd\".wav"]
    assert rejections_frame(ROWS, sort=True)["path"].tolist() == ["a, \"odd\".wav", "b.wav"]


def test_no_rejection_is_a_header_only():
    assert rejections_csv([]) == b"path,stage,reason,detail\n"
