"""A 40:1 imbalanced corpus: the defaults lean to the majority, the balanced options do not.

Three learnable classes (tones), 120 / 3 / 3 training clips and a balanced validation split
(10 each, from a CSV `split` column). Each option trains the same small cnn for the same steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from tests.audio_fixtures import run_module, tone, write_tiny_config

pytestmark = pytest.mark.slow

COUNTS = {"low": 120, "mid": 3, "high": 3}
FEATURES = ["--augment-copies", "0", "--jobs", "1"]
TRAIN = ["--model", "cnn", "--width", "0.25", "--batch-size", "16", "--num-workers", "1", "--epochs", "3",
         "--lr", "3e-3", "--mixup-p", "0", "--seed", "1"]


def _corpus(root: Path) -> Path:
    rng = np.random.default_rng(5)
    rows = []
    for label, count in COUNTS.items():
        (root / label).mkdir(parents=True)
        for i in range(count + 10):
            name = f"{label}/{i:03d}.wav"
            sf.write(root / name, tone(label, rng, 8000, seconds=0.5), 8000, subtype="PCM_16")
            rows.append((name, label, "train" if i < count else "val"))
    pd.DataFrame(rows, columns=["path", "label", "split"]).to_csv(root / "list.csv", index=False)
    return root / "list.csv"


def _evaluate(run: Path, shards: Path) -> dict:
    result = run_module("trainer", "evaluate", str(run), "--shards", str(shards), "--split", "val")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((run / "report" / "metrics.json").read_text())
    recall = pd.read_csv(run / "report" / "per_class.csv").set_index("class")["recall"]
    return {**metrics, "minority_recall": float(recall[["mid", "high"]].mean())}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("imbalance")
    listing = _corpus(root / "corpus")
    write_tiny_config(root / "audio.toml", duration_s=0.5)
    plain, balanced = root / "plain", root / "balanced"
    for out, extra in ((plain, []), (balanced, ["--balance-classes", "--balance-cap", "40"])):
        result = run_module("preprocess", str(listing), "--out", str(out), "--config", str(root / "audio.toml"),
                            *FEATURES, *extra)
        assert result.returncode == 0, result.stderr
    assert "imbalanced 40:1" in " ".join(result.stderr.split()) or "imbalanced 40:1" in " ".join(
        run_module("preprocess", "inspect", str(plain)).stdout.split())
    found = {}
    for name, shards, extra in (("defaults", plain, []), ("class_weights", plain, ["--class-weights", "balanced"]),
                                ("balance_classes", balanced, [])):
        run = root / f"run-{name}"
        result = run_module("trainer", "train", str(shards), "--out", str(run), *TRAIN, *extra)
        assert result.returncode == 0, result.stderr
        found[name] = _evaluate(run, shards)
        found[name]["history"] = pd.read_csv(run / "metrics.csv")
    print({k: (round(v["balanced_accuracy"], 3), round(v["minority_recall"], 3)) for k, v in found.items()})
    return found


def test_the_report_shows_balanced_accuracy_and_the_majority_baseline(outcomes):
    base = outcomes["defaults"]["majority_baseline"]
    # The validation split is balanced: always answering one class scores a third.
    assert base["accuracy"] == pytest.approx(1 / 3) and base["balanced_accuracy"] == pytest.approx(1 / 3)
    assert "val_balanced_acc" in outcomes["defaults"]["history"].columns


@pytest.mark.parametrize("option", ["class_weights", "balance_classes"])
def test_a_balanced_option_lifts_the_minority_classes(outcomes, option):
    """Measured (2026-11-22, this machine): the defaults answer 'low' for every clip (minority
    recall 0.0, balanced accuracy 0.333); class weights give 1.0 and 0.667, balanced copies 1.0
    and 1.0. The margins asserted are half of the smaller gain."""
    plain, balanced = outcomes["defaults"], outcomes[option]
    assert plain["minority_recall"] <= 0.2  # the collapse this guards against is real here
    assert balanced["minority_recall"] >= plain["minority_recall"] + 0.5
    assert balanced["balanced_accuracy"] >= plain["balanced_accuracy"] + 0.15
