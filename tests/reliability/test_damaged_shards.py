"""Damaged shards: a cut tar, flipped bytes or a missing file is named, and never read silently.

`--on-bad-shard fail` (the default) stops with one line; `skip` trains without the shard and
reports the samples lost in metrics.csv, config.json and at the end; a rerun of preprocess
rewrites the damaged shard byte for byte.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from preprocess.pipeline import RunOptions, run
from shared.config import AugmentConfig, PreprocessConfig
from shared.manifest import read_manifest
from tests.audio_fixtures import make_corpus, run_module
from tests.conftest import TINY_AUDIO

FAST = ["--model", "cnn", "--width", "0.25", "--batch-size", "4", "--num-workers", "1", "--mixup-p", "0"]
VICTIM = "train-000001.tar"


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "cut":  # a copy that stopped half way
        path.write_bytes(data[: len(data) // 2])
    elif how == "flip":  # same size, one byte changed inside a mel
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :])
    elif how == "missing":
        path.unlink()


@pytest.fixture
def shards(tiny_shards, tmp_path) -> Path:
    copy = tmp_path / "shards"
    shutil.copytree(tiny_shards, copy)
    return copy


def samples_in(folder: Path, name: str) -> int:
    entries = read_manifest(folder)["splits"]["train"]["shards"]
    return next(s["samples"] for s in entries if s["name"] == name)


def train(shards: Path, run_dir: Path, *extra: str):
    return run_module("trainer", "train", str(shards), "--out", str(run_dir), *FAST, *extra)


@pytest.mark.parametrize("how", ["cut", "flip", "missing"])
def test_a_damaged_shard_stops_training_with_one_line_naming_it(shards, tmp_path, how):
    damage(shards / VICTIM, how)
    result = train(shards, tmp_path / "run", "--epochs", "1")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert VICTIM in lines[0] and "--on-bad-shard skip" in lines[0]
    assert not (tmp_path / "run" / "last.pt").exists()


def test_skip_trains_without_the_shard_and_reports_the_loss(shards, tmp_path):
    lost = samples_in(shards, VICTIM)
    damage(shards / VICTIM, "flip")
    run_dir = tmp_path / "run"
    result = train(shards, run_dir, "--epochs", "2", "--on-bad-shard", "skip")
    assert result.returncode == 0, result.stderr
    assert f"lost {lost} samples in 1 damaged shard ({VICTIM}: sha256 differs" in result.stderr
    assert f"trained without {lost} train and 0 val samples" in result.stderr
    with (run_dir / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["lost_train_samples"]) for r in rows] == [lost, lost]
    assert [int(r["lost_val_samples"]) for r in rows] == [0, 0]
    skipped = json.loads((run_dir / "config.json").read_text())["skipped_shards"]
    assert [s["name"] for s in skipped["train"]] == [VICTIM] and skipped["train"][0]["samples"] == lost


def test_resume_refuses_when_the_damage_changed_since_the_checkpoint(shards, tmp_path):
    run_dir = tmp_path / "run"
    assert train(shards, run_dir, "--epochs", "1").returncode == 0
    damage(shards / VICTIM, "cut")
    refused = train(shards, run_dir, "--resume")
    assert refused.returncode == 1 and VICTIM in refused.stderr
    skipped = train(shards, run_dir, "--resume", "--on-bad-shard", "skip")
    assert skipped.returncode == 2
    assert "cannot resume exactly" in skipped.stderr and VICTIM in skipped.stderr


def test_rerunning_preprocess_rewrites_a_damaged_shard_byte_for_byte(tmp_path):
    corpus = make_corpus(tmp_path / "corpus", per_class=5, labels=("low", "mid", "high"))
    cfg = PreprocessConfig(audio=TINY_AUDIO, augment=AugmentConfig(copies=0), shard_size=4)
    out = tmp_path / "shards"
    run(RunOptions(corpus, out, jobs=1), cfg)
    before = {p.name: p.read_bytes() for p in out.glob("*.tar")}
    damage(out / VICTIM, "flip")
    damage(out / "train-000000.tar", "cut")
    result = run(RunOptions(corpus, out, jobs=1), cfg)
    assert result.skipped_shards == len(before) - 2
    assert {p.name: p.read_bytes() for p in out.glob("*.tar")} == before


def test_predict_and_evaluate_name_or_report_a_damaged_shard(trained, tmp_path):
    shards = tmp_path / "shards"
    shutil.copytree(trained["shards"], shards)
    test_shards = read_manifest(shards)["splits"]["test"]["shards"]
    victim = test_shards[0]
    damage(shards / victim["name"], "cut")
    out = tmp_path / "submission.csv"
    failed = run_module("trainer", "predict", str(trained["run"]), "--input", str(shards), "--out", str(out))
    assert failed.returncode == 1 and victim["name"] in failed.stderr and not out.exists()
    skipped = run_module("trainer", "predict", str(trained["run"]), "--input", str(shards), "--out", str(out),
                         "--on-bad-shard", "skip")
    assert skipped.returncode == 1  # predictions are missing: not a success without --allow-missing
    lost = f"{victim['samples']} clips left out ({victim['samples']} in 1 damaged shard)"
    assert lost in skipped.stdout and lost in skipped.stderr, (skipped.stdout, skipped.stderr)
    errors = out.with_name("submission.errors.csv").read_text()
    assert victim["name"] in errors and f"{victim['samples']} samples" in errors
    expected = sum(s["samples"] for s in test_shards) - victim["samples"]
    assert len(out.read_text().splitlines()) == 1 + expected

    scored = read_manifest(shards)["splits"]["train"]["shards"]
    damage(shards / scored[0]["name"], "flip")
    run_copy = tmp_path / "run"
    shutil.copytree(trained["run"], run_copy)
    report = run_module("trainer", "evaluate", str(run_copy), "--shards", str(shards), "--split", "train",
                        "--on-bad-shard", "skip")
    assert report.returncode == 0, report.stderr
    metrics = json.loads((run_copy / "report" / "metrics.json").read_text())
    assert metrics["not_evaluated"] == 1  # one row of not_evaluated.csv: the shard ...
    assert metrics["not_evaluated_clips"] == scored[0]["samples"] > 1  # ... and every clip it held
    warning = [line for line in report.stderr.splitlines() if "could not be evaluated" in line]
    assert warning == [f"warning: {scored[0]['samples']} clips could not be evaluated ({scored[0]['samples']} in 1 "
                       f"damaged shard); see {run_copy / 'report' / 'not_evaluated.csv'}"], report.stderr
    assert metrics["samples"] == sum(s["samples"] for s in scored) - scored[0]["samples"]
    assert scored[0]["name"] in (run_copy / "report" / "not_evaluated.csv").read_text()


@pytest.mark.parametrize("how", ["cut", "flip", "missing"])
def test_inspect_names_a_damaged_shard_in_one_line(shards, how):
    damage(shards / VICTIM, how)
    result = run_module("preprocess", "inspect", str(shards))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr  # not fit to train on
    named = [line for line in result.stdout.splitlines() if VICTIM in line]
    assert len(named) == 1 and "damaged shard" in named[0]
    assert result.stderr.strip().splitlines() == [f"error: 1 damaged shard in {shards}; rerun the same "
                                                  f"`python -m preprocess ... --out {shards}` to rewrite it"]
    assert (shards / "inspect.png").exists()  # the rest of the report is still made


@pytest.mark.parametrize("what", ["garbage", "a key missing", "a wrong type", "errors.csv"])
def test_inspect_reports_a_damaged_manifest_or_errors_csv_in_one_line(shards, what):
    manifest = shards / "manifest.json"
    data = json.loads(manifest.read_text())
    if what == "garbage":
        manifest.write_text('{"format": "melshard/1", "audio": ')
    elif what == "a key missing":
        del data["inputs"]
    elif what == "a wrong type":
        data["splits"]["train"]["shards"] = "train-000000.tar"
    else:
        data["inputs"]["rejected"] += 1
        (shards / "errors.csv").write_bytes(b"\xff\xfe not a csv")
    if what != "garbage":
        manifest.write_text(json.dumps(data))
    result = run_module("preprocess", "inspect", str(shards))
    assert result.returncode == 1, result.stderr  # damaged data (DataError)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "rerun preprocessing" in lines[0], result.stderr
