"""Long recordings with file-level labels, end to end: seconds of loud background, then the
class's sound in the last third (bench/long_recordings.py's generator). Every window of a
recording trains with its label, so the background windows learn to answer nearly uniformly;
per file, `--aggregate confidence` (the default) discounts them where `mean` lets them outvote
the one or two windows that hear the class."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.long_recordings import write_corpus
from tests.audio_fixtures import run_module, tone, write_tiny_config

SR = 8000
LABELS = ("low", "mid", "high", "chirp")


def _events(per_class: int, rng: np.random.Generator):
    for label in LABELS:
        for i in range(per_class):
            split = ("train", "train", "val")[i % 3]
            yield f"{label}{i}", tone(label, rng, SR, rng.uniform(0.3, 0.6)), label, f"g{i}", split


@pytest.fixture(scope="module")
def long_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("long")
    corpus = write_corpus(root, _events(12, np.random.default_rng(5)), seed=3, seconds=6.0, background_s=4.0)
    config = write_tiny_config(root / "audio.toml", head="segment = true")
    shards, run = root / "shards", root / "run"
    result = run_module("preprocess", str(corpus), "--out", str(shards), "--config", str(config),
                        "--augment-copies", "0", "--jobs", "1")
    assert result.returncode == 0, result.stderr
    result = run_module("trainer", "train", str(shards), "--out", str(run), "--model", "cnn", "--width", "0.25",
                        "--batch-size", "16", "--num-workers", "1", "--epochs", "12", "--lr", "3e-3",
                        "--mixup-p", "0", "--seed", "1")
    assert result.returncode == 0, result.stderr
    return {"shards": shards, "run": run}


def _accuracy(long_run, *aggregate: str) -> float:
    result = run_module("trainer", "evaluate", str(long_run["run"]), "--shards", str(long_run["shards"]),
                        "--split", "val", *aggregate)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((long_run["run"] / "report" / "metrics.json").read_text())
    assert metrics["samples"] == 16 and metrics["windows"]["samples"] == 16 * 6
    return metrics["accuracy"]


def test_confidence_is_the_default_and_beats_the_mean_on_long_recordings(long_run):
    default, mean = _accuracy(long_run), _accuracy(long_run, "--aggregate", "mean")
    print(f"per-file accuracy, 16 held-out recordings: default (confidence) {default:.3f}, mean {mean:.3f}")
    # On this machine: 0.500 against 0.438 (the mean lets the background outvote one more file);
    # the mechanism itself is held exactly by tests/trainer/test_aggregate.py.
    assert default > mean
