"""bench/preprocess_profile.py on a handful of clips: every stage is reached in the workers, and
the table's rows add up to the pool's measured wall time."""

from __future__ import annotations

import pytest

from bench import preprocess_profile as profile
from bench.preprocess_throughput import make_clips


@pytest.mark.parametrize("jobs", [2])
def test_rows_sum_to_the_measured_wall_time(tmp_path, jobs):
    make_clips(tmp_path / "clips", 12, seed=3)
    profile.run_profiled(tmp_path / "clips", tmp_path / "out", jobs, 3, tmp_path / "logs")
    result = profile.table(tmp_path / "logs")
    assert result["clips"] == 12 and result["workers"] == jobs
    rows = result["rows"]
    for stage in profile.STAGES[:-2]:  # each timed stage ran in the workers (a renamed function would fail)
        assert rows[stage] > 0, stage
    measured = 1000 * jobs * result["pool_s"] / result["clips"]
    assert sum(rows.values()) == pytest.approx(measured, rel=0.05)
    assert not (tmp_path / "out").exists()
