"""bench/suite.py's machinery on tiny generated corpora: folds and carved selection groups are
group-disjoint, and results append and resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from bench import suite
from tests.audio_fixtures import tone

LABELS = ("low", "mid", "high")


def listing(groups: int, seed: int = 0, loose: int = 0) -> pd.DataFrame:
    """path,label,group rows: `groups` speakers of 2-9 clips each, plus `loose` clips of group 'noise'."""
    rng = np.random.default_rng(seed)
    rows = [(f"g{g}/{i}.wav", LABELS[i % 3], f"g{g}") for g in range(groups) for i in range(rng.integers(2, 10))]
    rows += [(f"noise/{i}.wav", LABELS[i % 3], "noise") for i in range(loose)]
    return pd.DataFrame(rows, columns=["path", "label", "group"])


def corpus(frame: pd.DataFrame, folds: int, features: dict | None = None) -> suite.Corpus:
    return suite.Corpus("tiny", lambda: frame, folds, features or {}, loose_groups=("noise",))


@pytest.mark.parametrize("folds", [0, 3])
def test_folds_and_carved_groups_are_disjoint(folds):
    frame = listing(30 if folds else 6, loose=40)
    if not folds:
        frame = frame[frame["group"] != "noise"].reset_index(drop=True)
    c = corpus(frame, folds)
    fold_of, names = suite.assign_folds(frame, c)
    assert len(names) == (folds or 6)
    speakers = frame[frame["group"] != "noise"]
    assert (speakers.groupby("group")[[]].size() > 0).all()
    assert speakers.assign(fold=fold_of).groupby("group")["fold"].nunique().eq(1).all()  # a group in one fold
    if folds:
        sizes = fold_of.value_counts()
        assert sizes.max() - sizes.min() <= 9  # balanced within one group's size
        assert fold_of[frame["group"] == "noise"].nunique() == folds  # noise clips spread over the folds
    carved_by_fold = []
    for fold in range(len(names)):
        held_out = set(frame["path"][fold_of == fold])
        test = suite.split_table(frame, c, fold, "test")
        assert set(test["path"][test["split"] == "test"]) == held_out
        assert set(test["path"]) == set(frame["path"])
        select = suite.split_table(frame, c, fold, "select")
        assert not held_out & set(select["path"])  # the outer test fold is not in the selection shards at all
        for table in (test, select):
            by_split = {s: set(rows["group"]) - {"noise"} for s, rows in table.groupby("split")}
            assert not by_split["test"] & (by_split["train"] | by_split.get("val", set()))
            assert by_split.get("val", set()) <= by_split["train"]  # early stopping: clips of training groups
        carved = select[select["split"] == "test"]
        assert 0 < len(carved) < len(select)
        carved_by_fold.append(set(carved["path"]))
    everything = [p for paths in carved_by_fold for p in paths]
    assert len(everything) == len(set(everything))  # each fold's selection groups are different ones
    if not folds:
        assert sorted(len({p.split("/")[0] for p in paths}) for paths in carved_by_fold) == [1] * 6


def tiny_corpus(root: Path, groups: int = 4, per_label: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for g in range(groups):
        for label in LABELS:
            for i in range(per_label):
                path = root / f"g{g}_{label}_{i}.wav"
                sf.write(path, tone(label, rng, 8000, 0.4), 8000, subtype="PCM_16")
                rows.append((str(path), label, f"g{g}"))
    return pd.DataFrame(rows, columns=["path", "label", "group"])


def test_results_append_and_resume(tmp_path):
    (tmp_path / "audio").mkdir()
    frame = tiny_corpus(tmp_path / "audio")
    features = {"audio": {"sr": 8000, "duration_s": 0.5, "n_fft": 256, "hop_length": 64, "n_mels": 32},
                "augment": {"copies": 0}}
    recipe = suite.Recipe("tiny", {"model": "cnn", "width": 0.25, "epochs": 1, "batch_size": 8}, {})
    results = tmp_path / "recipes.jsonl"

    def opts(seeds):
        return suite.Options("select", recipe, {"tiny": corpus(frame, 0, features)}, seeds, [0], tmp_path / "cache",
                             results, device="cpu")

    first = suite.run_suite(opts([0]), say=lambda line: None)
    assert len(first) == 1 and len(results.read_text().splitlines()) == 1
    record = json.loads(results.read_text())
    assert record["fold"] == "g0" and record["seed"] == 0 and record["mode"] == "select"
    assert 0 <= record["accuracy"] <= 1 and record["clips"] == 15  # one carved group of 3 x 5 clips
    assert record["scored_groups"] == 1 and record["scored"] != ["g0"]
    assert set(record) >= {"macro_f1", "balanced_accuracy", "train", "features", "commit", "wall_s"}
    # each test-time option scored on the same clips, but --adapt-bn, which refuses 15 clips and says so
    tested = record["test_time"]
    assert set(tested) == set(suite.TEST_TIME) and "at least 32 clips" in tested["adapt_bn"]["skipped"]
    assert all(0 <= tested[name]["macro_f1"] <= 1 and tested[name]["clips"] == 15 for name in ("tta_shift", "tta_warp"))

    again = suite.run_suite(opts([0, 1]), say=lambda line: None)  # seed 0 is recorded: only seed 1 trains
    lines = results.read_text().splitlines()
    assert len(lines) == 2 and [r["seed"] for r in again] == [0, 1]
    assert again[0] == first[0]
    assert len(list((tmp_path / "cache" / "shards" / "tiny").glob("*/manifest.json"))) == 1  # made once
    assert "g0" in suite.summary(again)


def test_the_suite_mean_counts_every_corpus_equally():
    record = {"mode": "select", "scored": ["x"], "scored_groups": 1, "balanced_accuracy": 0.5, "wall_s": 1.0,
              "seed": 0}
    records = [{**record, "corpus": "a", "fold": f"f{i}", "accuracy": 0.9, "macro_f1": 0.9} for i in range(5)]
    records.append({**record, "corpus": "b", "fold": "f0", "accuracy": 0.5, "macro_f1": 0.3})
    line = suite.summary(records).splitlines()[-1].split()
    assert line[:4] == ["suite", "mean", "2", "corpora"]
    assert line[5] == "70.00%" and line[8] == "0.6000", line  # (0.9 + 0.5) / 2 and (0.9 + 0.3) / 2, not 5:1


def test_test_time_options_are_compared_with_every_corpus_counted_equally():
    record = {"mode": "select", "scored": ["x"], "scored_groups": 1, "balanced_accuracy": 0.5, "wall_s": 1.0,
              "seed": 0, "accuracy": 0.5}

    def with_tta(corpus, fold, plain, tta):
        return {**record, "corpus": corpus, "fold": fold, "macro_f1": plain,
                "test_time": {"tta_shift": {"macro_f1": tta, "accuracy": 0.5, "balanced_accuracy": 0.5}}}

    records = [with_tta("a", f"f{i}", 0.9, 0.8) for i in range(5)] + [with_tta("b", "f0", 0.3, 0.6)]
    records.append({**record, "corpus": "b", "fold": "f1", "macro_f1": 0.3})  # recorded before the option was
    line = suite.summary(records).splitlines()[-1]
    # corpus means: a 0.8 against 0.9, b 0.6 against 0.3; the suite's: 0.7 against 0.6, not 5:1
    assert line.split()[:2] == ["test-time", "tta_shift"], line
    assert "0.7000 against 0.6000" in line and "+0.1000" in line and "6 runs" in line, line
