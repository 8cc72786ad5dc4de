"""A file listed twice in `predict --input` / `evaluate --input` (the same row again, or the same
path with another label): the first listing is used, each later one is a `duplicate_path` row
of the errors file, as preprocessing reports it, and every figure counts each clip once."""

from __future__ import annotations

import json
import os
import shutil

import pandas as pd
import pytest

import melshard
from shared.sources import drop_duplicates, list_source
from tests.audio_fixtures import run_module


@pytest.fixture()
def listed_twice(trained, tmp_path):
    """A CSV of 5 rows over 3 clips: one row repeated exactly, one path given another label."""
    folder = tmp_path / "clips"
    folder.mkdir()
    names = {}
    for label in ("low", "mid", "high"):
        source = sorted((trained["corpus"] / label).glob("*.wav"))[0]
        shutil.copy(source, folder / f"{label}.wav")
        names[label] = f"{label}.wav"
    rows = ["path,label", "low.wav,low", "mid.wav,mid", "high.wav,high", "low.wav,low", "mid.wav,chirp"]
    csv = folder / "list.csv"
    csv.write_text("\n".join(rows) + "\n")
    return csv


def _check_duplicates(errors: pd.DataFrame) -> None:
    assert errors["reason"].tolist() == ["duplicate_path", "duplicate_path"]
    assert sorted(errors["path"]) == ["low.wav", "mid.wav"]
    detail = dict(zip(errors["path"], errors["detail"]))
    assert "label" not in detail["low.wav"]  # the same row again: nothing differs
    assert "'mid'" in detail["mid.wav"] and "'chirp'" in detail["mid.wav"] and "differs" in detail["mid.wav"]


def test_evaluate_counts_each_clip_once_and_reports_every_repeat(trained, listed_twice, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained["run"], run, ignore=shutil.ignore_patterns("report"))
    result = run_module("trainer", "evaluate", str(run), "--input", str(listed_twice), "--jobs", "1")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    report = run / "report"
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["samples"] == 3 and metrics["not_evaluated"] == 2
    assert "windows" not in metrics  # an unsegmented run: one prediction per file, no windows to score
    predictions = pd.read_csv(report / "predictions.csv")
    assert predictions["path"].tolist() == ["high.wav", "low.wav", "mid.wav"]
    assert predictions.set_index("path")["label"].to_dict() == {"high.wav": "high", "low.wav": "low",
                                                                 "mid.wav": "mid"}  # the first label is used
    _check_duplicates(pd.read_csv(report / "not_evaluated.csv"))
    warning = [line for line in result.stderr.splitlines() if "could not be evaluated" in line]
    assert len(warning) == 1 and "2 inputs" in warning[0] and "2 duplicate_path" in warning[0], result.stderr


def test_predict_reports_every_repeat_and_exits_1_unless_allowed(trained, listed_twice, tmp_path):
    out = tmp_path / "s.csv"
    args = ("trainer", "predict", str(trained["run"]), "--input", str(listed_twice), "--out", str(out), "--jobs", "1")
    failed = run_module(*args)
    assert failed.returncode == 1 and "--allow-missing" in failed.stderr and "Traceback" not in failed.stderr
    assert "2 inputs left out (2 duplicate_path)" in failed.stdout, failed.stdout
    assert pd.read_csv(out)["filename"].tolist() == ["high.wav", "low.wav", "mid.wav"]
    _check_duplicates(pd.read_csv(tmp_path / "s.errors.csv"))
    allowed = run_module(*args, "--allow-missing")
    assert allowed.returncode == 0, allowed.stderr
    assert len(pd.read_csv(out)) + len(pd.read_csv(tmp_path / "s.errors.csv")) == 5  # every row accounted for


def test_a_link_to_a_listed_file_with_another_label_names_both(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.wav").write_bytes(b"RIFF")
    os.symlink(tmp_path / "a" / "x.wav", tmp_path / "y.wav")
    (tmp_path / "list.csv").write_text("path,label\na/x.wav,a\ny.wav,b\ny.wav,a\n")
    clips, rejections = list_source(tmp_path / "list.csv")
    kept = drop_duplicates(clips, rejections)
    assert [c.rel for c in kept] == ["a/x.wav"]
    assert [(r.path, r.reason) for r in rejections] == [("y.wav", "duplicate_path")] * 2
    assert "'a'" in rejections[0].detail and "'b'" in rejections[0].detail
    assert "label" not in rejections[1].detail  # the same file with the same label


def test_the_api_predicts_a_file_given_twice_once(trained):
    wav = str(sorted(trained["test"].glob("*.wav"))[0])
    with pytest.raises(melshard.DataError, match="duplicate_path"):
        melshard.predict(trained["run"], [wav, wav], device="cpu")
    frame = melshard.predict(trained["run"], [wav, wav], device="cpu", allow_missing=True)
    assert frame["filename"].tolist() == [wav]
    assert frame.attrs["errors"]["reason"].tolist() == ["duplicate_path"]


def test_evaluate_has_no_allow_missing_warns_and_exits_0_or_1_when_nothing_is_scored(trained, tmp_path):
    """What README's Evaluate section and reliability table say evaluate does with inputs it cannot use."""
    run = tmp_path / "run"
    shutil.copytree(trained["run"], run, ignore=shutil.ignore_patterns("report"))
    folder = tmp_path / "clips"
    folder.mkdir()
    shutil.copy(sorted((trained["corpus"] / "low").glob("*.wav"))[0], folder / "good.wav")
    (folder / "broken.wav").write_bytes(b"RIFF....not really")
    (folder / "some.csv").write_text("path,label\ngood.wav,low\nbroken.wav,mid\n")
    (folder / "none.csv").write_text("path,label\nbroken.wav,mid\n")
    refused = run_module("trainer", "evaluate", str(run), "--input", str(folder / "some.csv"), "--allow-missing")
    assert refused.returncode == 2 and "unrecognized arguments: --allow-missing" in refused.stderr
    some = run_module("trainer", "evaluate", str(run), "--input", str(folder / "some.csv"), "--jobs", "1")
    assert some.returncode == 0, some.stderr[-3000:]
    warnings = [line for line in some.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "1 input could not be evaluated (1 undecodable)" in warnings[0], some.stderr
    assert pd.read_csv(run / "report" / "not_evaluated.csv")["path"].tolist() == ["broken.wav"]
    none = run_module("trainer", "evaluate", str(run), "--input", str(folder / "none.csv"), "--jobs", "1")
    assert none.returncode == 1 and "nothing in" in none.stderr and "Traceback" not in none.stderr, none.stderr


def test_predicts_listing_reports_a_folders_hidden_audio_files(tmp_path):
    from trainer.inference import list_inputs

    for rel in ("x.wav", "._x.wav", ".old/y.wav", "notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"RIFF")
    rows, rejections = list_inputs(tmp_path, labeled=False)
    assert [rel for _, rel, _, _ in rows] == ["x.wav"]
    assert sorted((r.path, r.reason) for r in rejections) == [("._x.wav", "hidden"), (".old/y.wav", "hidden")]
