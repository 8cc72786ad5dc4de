"""A CI-sized FSDD check: the `cnn` for a few epochs on the official split, through the CLI."""

from __future__ import annotations

import json

import pytest

from bench.fsdd import CONFIGS, write_csv
from tests.audio_fixtures import FSDD, run_module

pytestmark = pytest.mark.skipif(not FSDD.is_dir(), reason=f"{FSDD} is absent")


def test_cnn_reaches_90_percent_on_the_official_test_split(tmp_path):
    table = tmp_path / "fsdd.csv"
    write_csv(table, test_speaker=None)
    shards, run = tmp_path / "shards", tmp_path / "run"
    prep = run_module("preprocess", str(table), "--out", str(shards), "--config", str(CONFIGS / "fsdd_preprocess.toml"),
                      "--augment-copies", "0", timeout=600)
    assert prep.returncode == 0, prep.stderr
    # Six plain epochs (no MixUp, no augmented copies) keep this under two minutes on 2 cores.
    train = run_module("trainer", "train", str(shards), "--out", str(run), "--model", "cnn", "--width", "0.5",
                       "--epochs", "6", "--lr", "3e-3", "--mixup-p", "0", timeout=900)
    assert train.returncode == 0, train.stderr
    evaluate = run_module("trainer", "evaluate", str(run), "--shards", str(shards), "--split", "test")
    assert evaluate.returncode == 0, evaluate.stderr
    metrics = json.loads((run / "report" / "metrics.json").read_text())
    assert metrics["samples"] == 300
    assert metrics["accuracy"] >= 0.90, metrics
