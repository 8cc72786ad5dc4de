"""Validation edge cases: a class without validation clips, no validation split, one class."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score

from tests.audio_fixtures import make_corpus, run_module

AUDIO = "[audio]\nsr = 8000\nduration_s = 0.5\nn_fft = 256\nhop_length = 64\nn_mels = 32\n"
FAST = ["--model", "cnn", "--width", "0.25", "--batch-size", "4", "--num-workers", "1", "--epochs", "1",
        "--mixup-p", "0"]


def _small(tmp_path: Path) -> list[str]:
    (tmp_path / "small.toml").write_text(AUDIO)
    return ["--config", str(tmp_path / "small.toml"), "--jobs", "1"]


def _metrics(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_val_f1_in_training_is_evaluates_macro_f1_when_a_class_has_no_validation_clip(tmp_path):
    corpus = make_corpus(tmp_path / "corpus", per_class=6, labels=("low", "mid", "high", "chirp"))
    rows = ["path,label,split"]
    for path in sorted(corpus.rglob("*.wav")):
        label, index = path.parent.name, int(path.stem.rsplit("_", 1)[1])
        split = "val" if index < 2 and label != "chirp" else "train"  # chirp has no validation clip
        rows.append(f"{path.relative_to(corpus).as_posix()},{label},{split}")
    (corpus / "list.csv").write_text("\n".join(rows) + "\n")
    shards = tmp_path / "shards"
    made = run_module("preprocess", str(corpus / "list.csv"), "--out", str(shards), *_small(tmp_path))
    assert made.returncode == 0, made.stderr
    warned = [line for line in made.stderr.splitlines() if "no validation clip" in line]
    assert len(warned) == 1 and "(chirp)" in warned[0]
    run = tmp_path / "run"
    trained = run_module("trainer", "train", str(shards), "--out", str(run), *FAST, "--early-stop-metric", "val_f1")
    assert trained.returncode == 0, trained.stderr
    val_f1 = float(_metrics(run)[0]["val_f1"])
    scored = run_module("trainer", "evaluate", str(run), "--shards", str(shards), "--split", "val")
    assert scored.returncode == 0, scored.stderr
    report = json.loads((run / "report" / "metrics.json").read_text())
    predictions = pd.read_csv(run / "report" / "predictions.csv")
    labels = ["chirp", "high", "low", "mid"]
    assert np.isclose(report["macro_f1"], f1_score(predictions["label"], predictions["predicted"], labels=labels,
                                                   average="macro", zero_division=0))
    assert np.isclose(val_f1, report["macro_f1"], rtol=1e-5, atol=1e-6), (val_f1, report["macro_f1"])


def test_no_validation_split_says_so_and_keeps_the_last_epoch(tmp_path):
    corpus = make_corpus(tmp_path / "corpus", per_class=4)
    shards = tmp_path / "shards"
    made = run_module("preprocess", str(corpus), "--out", str(shards), "--val-fraction", "0", *_small(tmp_path))
    assert made.returncode == 0, made.stderr
    run = tmp_path / "run"
    trained = run_module("trainer", "train", str(shards), "--out", str(run), *FAST[:-4], "--epochs", "2")
    assert trained.returncode == 0, trained.stderr
    assert "nan" not in trained.stdout
    assert "no validation split" in trained.stdout and "last epoch (2)" in trained.stdout
    notice = [line for line in trained.stderr.splitlines() if line.startswith("no validation split")]
    assert len(notice) == 1 and "early stopping is off" in notice[0]
    rows = _metrics(run)
    assert len(rows) == 2 and all(row[c] == "" for row in rows for c in ("val_loss", "val_acc", "val_f1"))
    assert (run / "best.pt").exists()


def test_a_single_class_is_refused_by_training_with_one_line(tmp_path):
    corpus = make_corpus(tmp_path / "corpus", per_class=4, labels=("low",))
    shards = tmp_path / "shards"
    made = run_module("preprocess", str(corpus), "--out", str(shards), *_small(tmp_path))
    assert made.returncode == 0, made.stderr
    assert "needs at least two" in made.stderr
    refused = run_module("trainer", "train", str(shards), "--out", str(tmp_path / "run"), *FAST)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "at least two" in lines[0] and "(low)" in lines[0], lines
    assert not (tmp_path / "run" / "best.pt").exists()
