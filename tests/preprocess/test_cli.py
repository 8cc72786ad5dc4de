"""`python -m preprocess` end to end on generated corpora, through real subprocesses."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import webdataset as wds

from tests.audio_fixtures import make_corpus, run_module, tone

SMALL = "[audio]\nsr = 8000\nduration_s = 1.0\nn_fft = 256\nhop_length = 64\nn_mels = 32\n"


@pytest.fixture
def small_config(tmp_path) -> Path:
    path = tmp_path / "small.toml"
    path.write_text(SMALL)
    return path


def _files(folder: Path) -> dict[str, bytes]:
    """Everything a run publishes (shards, manifest, errors.csv), by name."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}


def test_a_corpus_becomes_shards_readable_by_stock_webdataset_and_tar(tmp_path, small_config):
    src = make_corpus(tmp_path / "src", per_class=8)
    test = tmp_path / "unlabeled"
    test.mkdir()
    rng = np.random.default_rng(5)
    for i in range(3):
        sf.write(test / f"t{i}.flac", tone("low", rng, 16000), 16000)
    out = tmp_path / "out"
    result = run_module("preprocess", str(src), "--out", str(out), "--test", str(test),
                        "--config", str(small_config), "--shard-size", "10", "--jobs", "2")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "melshard/1"
    assert manifest["labels"] == ["high", "low", "mid"]
    inputs = manifest["inputs"]
    assert {k: inputs[k] for k in ("total", "written", "rejected")} == {"total": 27, "written": 27, "rejected": 0}
    assert 0 < inputs["cropped"] <= 27 and inputs["cropped_s"] > 0  # clips up to 1.8 s, cropped to 0.5 s
    assert manifest["audio"]["sr"] == 8000 and manifest["seed"] == 42
    splits = manifest["splits"]
    assert splits["train"]["samples"] == 2 * splits["train"]["clips"]  # one augmented copy each
    assert splits["val"]["samples"] == splits["val"]["clips"] == 5
    assert splits["test"]["samples"] == 3
    assert len(manifest["stats"]["mel_mean"]) == len(manifest["stats"]["mel_std"]) == 32

    seen = {}
    for split, info in splits.items():
        for shard in info["shards"]:
            path = out / shard["name"]
            assert path.stat().st_size == shard["bytes"]
            members = subprocess.run(["tar", "-tf", str(path)], capture_output=True, text=True, check=True)
            assert len(members.stdout.split()) == shard["samples"] * (2 if split == "test" else 3)
            samples = list(wds.WebDataset(str(path), shardshuffle=False))
            assert len(samples) == shard["samples"]
            for sample in samples:
                mel = np.load(io.BytesIO(sample["mel.npy"]), allow_pickle=False)
                assert mel.dtype == np.float16 and mel.shape == (32, 126)
                meta = json.loads(sample["json"])
                assert "." not in sample["__key__"]
                seen[sample["__key__"]] = (split, meta, sample.get("cls"))
    assert splits["train"]["clips"] == 19
    assert len(seen) == 19 * 2 + 5 + 3
    for split, meta, cls in seen.values():
        if split == "test":
            assert cls is None and meta["label"] is None and meta["augment"] is None
        else:
            assert manifest["labels"][int(cls)] == meta["label"] == meta["path"].split("/")[0]
            assert (meta["copy"] == 0) == (meta["augment"] is None)
            assert split == "train" or meta["copy"] == 0
    train_shard = list(wds.WebDataset(str(out / "train-000000.tar"), shardshuffle=False))
    assert len({json.loads(s["json"])["label"] for s in train_shard}) > 1  # shards mix classes
    assert "samples" in result.stdout and "errors.csv" in result.stdout


def test_jobs_one_and_two_write_byte_identical_output(tmp_path, small_config):
    src = make_corpus(tmp_path / "src", per_class=10)
    for jobs in ("1", "2"):
        result = run_module("preprocess", str(src), "--out", str(tmp_path / jobs), "--config",
                            str(small_config), "--shard-size", "6", "--jobs", jobs)
        assert result.returncode == 0, result.stderr
    one, two = _files(tmp_path / "1"), _files(tmp_path / "2")
    assert len(one) > 6 and one.keys() == two.keys()
    assert all(one[name] == two[name] for name in one)


def test_an_out_made_with_another_config_is_refused_unless_overwrite(tmp_path, small_config):
    src = make_corpus(tmp_path / "src", per_class=3)
    out = tmp_path / "out"
    base = ["preprocess", str(src), "--out", str(out), "--config", str(small_config), "--jobs", "1"]
    assert run_module(*base).returncode == 0
    again = run_module(*base)
    assert again.returncode == 0 and "resumed: " in again.stdout
    said = " ".join(again.stdout.split())  # a rerun that only verified reports no rate
    assert "clips/s" not in said and "nothing to process: every shard was verified and kept" in said
    refused = run_module(*base, "--seed", "7")
    assert refused.returncode == 2
    assert refused.stderr.strip().count("\n") == 0
    assert "seed" in refused.stderr and "--overwrite" in refused.stderr
    replaced = run_module(*base, "--seed", "7", "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    assert json.loads((out / "manifest.json").read_text())["seed"] == 7


def test_usage_errors_exit_2_with_one_line_naming_the_fix(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("file,class\na.wav,x\n")
    blocker = tmp_path / "file"
    blocker.write_text("")
    corpus = make_corpus(tmp_path / "src", per_class=2)
    cases = [
        ([str(tmp_path / "nope"), "--out", str(tmp_path / "o1")], "does not exist"),
        ([str(empty), "--out", str(tmp_path / "o2")], "no audio found"),
        ([str(bad_csv), "--out", str(tmp_path / "o3")], "no column path, label"),
        ([str(corpus), "--out", str(blocker / "sub")], "cannot write to --out"),
        ([str(corpus), "--out", str(tmp_path / "o5"), "--val-fraction", "2"], "val_fraction"),
        ([str(corpus), "--out", str(tmp_path / "o7"), "--val-fraction", "0.99"], "every class needs at least one"),
        ([str(corpus), "--out", str(tmp_path / "o6"), "--config", str(tmp_path / "none.toml")], "config file"),
    ]
    for args, message in cases:
        result = run_module("preprocess", *args)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], lines


def test_no_sample_written_exits_1(tmp_path):
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "a" / "x.wav").write_bytes(b"")
    result = run_module("preprocess", str(src), "--out", str(tmp_path / "out"), "--jobs", "1")
    assert result.returncode == 1
    assert "no sample was written" in result.stderr
    assert (tmp_path / "out" / "errors.csv").read_text().count("empty_file") == 1


def test_a_live_lock_refuses_a_second_run_and_a_stale_one_is_taken_over(tmp_path, small_config):
    src = make_corpus(tmp_path / "src", per_class=2)
    out = tmp_path / "out"
    lock = out / ".melshard" / "lock"
    lock.parent.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.write_text(f"{holder.pid}\n")
        refused = run_module("preprocess", str(src), "--out", str(out), "--config", str(small_config))
        assert refused.returncode == 2 and str(holder.pid) in refused.stderr
    finally:
        holder.kill()
        holder.wait()
    taken = run_module("preprocess", str(src), "--out", str(out), "--config", str(small_config))
    assert taken.returncode == 0, taken.stderr
    assert not lock.exists()


def test_inspect_summarises_a_shard_folder_and_draws_examples(tmp_path, small_config):
    src = make_corpus(tmp_path / "src", per_class=3)
    (src / "low" / "broken.wav").write_bytes(b"")
    out = tmp_path / "out"
    result = run_module("preprocess", str(src), "--out", str(out), "--config", str(small_config), "--jobs", "1")
    assert result.returncode == 0
    result = run_module("preprocess", "inspect", str(out))
    assert result.returncode == 0, result.stderr
    for text in ("n_mels", "train", "empty_file", "inspect.png"):
        assert text in result.stdout
    png = (out / "inspect.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    missing = run_module("preprocess", "inspect", str(tmp_path / "nothing"))
    assert missing.returncode == 2 and "manifest.json not found" in missing.stderr


def test_a_file_replaced_under_the_same_name_is_refused_not_kept_stale(tmp_path, small_config):
    src = make_corpus(tmp_path / "src", per_class=3)
    rows = ["path,label"] + [f"{p.relative_to(src).as_posix()},{p.parent.name}" for p in sorted(src.rglob("*.wav"))]
    (src / "list.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    base = ["preprocess", str(src / "list.csv"), "--out", str(out), "--config", str(small_config), "--jobs", "1"]
    assert run_module(*base).returncode == 0
    replaced = src / "mid" / "mid_001.wav"
    before = replaced.stat()
    sf.write(replaced, tone("high", np.random.default_rng(99), 16000, seconds=0.9), 16000, subtype="PCM_16")
    os.utime(replaced, ns=(before.st_atime_ns, before.st_mtime_ns + 2_000_000_000))
    refused = run_module(*base)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr.strip().count("\n") == 0
    assert "modified" in refused.stderr and "--overwrite" in refused.stderr
    redone = run_module(*base, "--overwrite")
    assert redone.returncode == 0, redone.stderr
    fresh = run_module("preprocess", str(src / "list.csv"), "--out", str(tmp_path / "fresh"), "--config",
                       str(small_config), "--jobs", "1")
    assert fresh.returncode == 0, fresh.stderr
    assert _files(out) == _files(tmp_path / "fresh")
    again = run_module(*base)  # nothing changed since: verified and kept
    assert again.returncode == 0 and "resumed: " in again.stdout


def test_labels_in_a_test_csv_never_lose_test_clips(tmp_path, small_config):
    src = make_corpus(tmp_path / "src", per_class=3)
    test = tmp_path / "test"
    test.mkdir()
    rng = np.random.default_rng(3)
    rows = ["path,label"]
    for i in range(4):
        sf.write(test / f"t{i}.wav", tone("low", rng, 16000), 16000)
        rows.append(f"t{i}.wav,{'low' if i == 0 else 'unknown'}")  # a sample-submission placeholder
    (test / "test.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    result = run_module("preprocess", str(src), "--out", str(out), "--test", str(test / "test.csv"),
                        "--config", str(small_config), "--jobs", "1")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["splits"]["test"]["clips"] == 4 and manifest["inputs"]["rejected"] == 0
    assert manifest["splits"]["test"]["per_class"] == {"low": 1}  # a known label is kept for scoring
    notes = [line for line in result.stderr.splitlines() if "test clip" in line]
    assert len(notes) == 1 and "3 test clip(s)" in notes[0] and "'unknown'" in notes[0]
    assert "unseen_label" not in (out / "errors.csv").read_text()


def test_backend_and_scheduler_come_from_toml_too(tmp_path):
    from melshard.cli import command_parser
    from melshard.commands import preprocess_options as resolve
    from shared.errors import UsageError

    (tmp_path / "src").mkdir()
    config = tmp_path / "p.toml"
    config.write_text('backend = "dask"\nscheduler = "tcp://127.0.0.1:8786"\n')
    opts, _ = resolve(command_parser("preprocess").parse_args([str(tmp_path / "src"), "--config", str(config)]))
    assert (opts.backend, opts.scheduler) == ("dask", "tcp://127.0.0.1:8786")
    opts, _ = resolve(command_parser("preprocess").parse_args([str(tmp_path / "src"), "--config", str(config),
                                                               "--backend", "local"]))
    assert (opts.backend, opts.scheduler) == ("local", None)  # the command line wins
    config.write_text('backend = "dask"\n')
    with pytest.raises(UsageError, match="needs --scheduler"):
        resolve(command_parser("preprocess").parse_args([str(tmp_path / "src"), "--config", str(config)]))
