"""predict and evaluate on a tiny trained run; the demo end to end; hostile checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import accuracy_score, f1_score

from tests.audio_fixtures import run_module


def _predict(trained, source, out, *extra):
    return run_module("trainer", "predict", str(trained["run"]), "--input", str(source), "--out", str(out), *extra)


def test_predictions_from_shards_and_from_raw_audio_agree(trained, tmp_path):
    from_shards = _predict(trained, trained["shards"], tmp_path / "a.csv")
    from_audio = _predict(trained, trained["test"], tmp_path / "b.csv", "--jobs", "2")
    assert from_shards.returncode == 0, from_shards.stderr
    assert from_audio.returncode == 0, from_audio.stderr
    a, b = pd.read_csv(tmp_path / "a.csv"), pd.read_csv(tmp_path / "b.csv")
    assert list(a.columns) == ["filename", "label"]
    assert a["filename"].tolist() == sorted(trained["answers"]) == b["filename"].tolist()
    assert a["label"].tolist() == b["label"].tolist()
    labels = set(torch.load(trained["run"] / "best.pt", weights_only=True)["labels"])
    assert set(a["label"]) <= labels
    assert not (tmp_path / "a.errors.csv").exists()


def test_probabilities_and_tta_columns(trained, tmp_path):
    result = _predict(trained, trained["test"], tmp_path / "p.csv", "--probabilities", "--tta", "--jobs", "1")
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(tmp_path / "p.csv")
    classes = ["chirp", "high", "low", "mid"]
    assert list(table.columns) == ["filename", "label", *classes]
    np.testing.assert_allclose(table[classes].sum(axis=1), 1.0, atol=1e-4)
    assert (table[classes].idxmax(axis=1) == table["label"]).all()


def test_an_undecodable_input_goes_to_the_errors_file_and_exit_1(trained, tmp_path):
    out = tmp_path / "s.csv"
    failed = _predict(trained, trained["raw"], out)
    assert failed.returncode == 1 and "--allow-missing" in failed.stderr
    errors = pd.read_csv(tmp_path / "s.errors.csv")
    assert errors["path"].tolist() == ["broken.wav"] and errors["reason"].tolist() == ["undecodable"]
    assert len(pd.read_csv(out)) == len(trained["answers"])
    allowed = _predict(trained, trained["raw"], out, "--allow-missing")
    assert allowed.returncode == 0


def test_evaluate_writes_every_report_file_and_matches_sklearn(trained):
    result = run_module("trainer", "evaluate", str(trained["run"]), "--shards", str(trained["shards"]), "--split", "val")
    assert result.returncode == 0, result.stderr
    report = trained["run"] / "report"
    for name in ("metrics.json", "per_class.csv", "confusion_matrix.csv", "confusion_matrix.png",
                 "training_curves.png", "predictions.csv"):
        assert (report / name).stat().st_size > 0, name
    metrics = json.loads((report / "metrics.json").read_text())
    predictions = pd.read_csv(report / "predictions.csv")
    assert metrics["samples"] == len(predictions) == 8
    assert metrics["accuracy"] == accuracy_score(predictions["label"], predictions["predicted"])
    assert np.isclose(metrics["macro_f1"], f1_score(predictions["label"], predictions["predicted"],
                                                    labels=["chirp", "high", "low", "mid"], average="macro",
                                                    zero_division=0))
    matrix = pd.read_csv(report / "confusion_matrix.csv", index_col=0)
    assert matrix.values.sum() == 8 and list(matrix.columns) == ["chirp", "high", "low", "mid"]
    assert "accuracy" in result.stdout


def test_evaluate_on_labeled_audio_reports_groups(trained, tmp_path):
    rows = ["path,label,group"] + [f"{p.relative_to(trained['corpus'])},{p.parent.name},g{i % 2}"
                                   for i, p in enumerate(sorted(trained["corpus"].rglob("*.wav")))]
    (trained["corpus"] / "labeled.csv").write_text("\n".join(rows) + "\n")
    result = run_module("trainer", "evaluate", str(trained["run"]), "--input", str(trained["corpus"] / "labeled.csv"))
    assert result.returncode == 0, result.stderr
    per_group = pd.read_csv(trained["run"] / "report" / "per_group.csv")
    assert per_group["group"].tolist() == ["g0", "g1"] and per_group["samples"].sum() == 40


def test_the_demo_runs_end_to_end(tmp_path):
    result = run_module("trainer", "demo", "--quick", "--work", str(tmp_path / "demo"), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test accuracy:" in result.stdout
    accuracy = float(result.stdout.split("test accuracy:")[1].split("%")[0])
    assert accuracy >= 80.0
    assert (tmp_path / "demo" / "submission.csv").exists()
    assert (tmp_path / "demo" / "run" / "report" / "confusion_matrix.png").exists()
