"""Reports and figures with nothing to show: a corpus whose only train shard is damaged, one
where no sample was written, a run with no validation split, an empty split, a metrics.csv with
no epoch. Each ends in lines naming what is missing, never a matplotlib or pandas traceback."""

from __future__ import annotations

import shutil

from tests.audio_fixtures import make_corpus, run_module

SMALL = ("--sr", "8000", "--duration", "1.0", "--n-mels", "16", "--augment-copies", "0", "--jobs", "1")


def _no_traceback(result) -> None:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr


def test_inspect_names_the_only_train_shard_when_it_is_damaged(tmp_path):
    make_corpus(tmp_path / "src", per_class=2, sr=8000)
    out = tmp_path / "shards"
    made = run_module("preprocess", str(tmp_path / "src"), "--out", str(out), "--val-fraction", "0", *SMALL)
    assert made.returncode == 0, made.stderr
    assert sorted(p.name for p in out.glob("*.tar")) == ["train-000000.tar"]
    shard = out / "train-000000.tar"
    data = bytearray(shard.read_bytes())
    data[2000] ^= 0xFF
    shard.write_bytes(bytes(data))
    result = run_module("preprocess", "inspect", str(out))
    _no_traceback(result)
    assert result.returncode == 1
    assert "train-000000.tar" in result.stdout and "none: every train shard" in result.stdout, result.stdout
    assert len(result.stderr.strip().splitlines()) == 1 and "1 damaged shard" in result.stderr
    assert (out / "inspect.png").stat().st_size > 0


def test_a_corpus_with_no_sample_written_is_summarised_and_inspected(tmp_path):
    for label in ("low", "high"):
        (tmp_path / "src" / label).mkdir(parents=True)
        (tmp_path / "src" / label / "a.wav").write_text("not audio")
    out = tmp_path / "shards"
    made = run_module("preprocess", str(tmp_path / "src"), "--out", str(out), *SMALL)
    _no_traceback(made)
    assert made.returncode == 1 and "no sample was written" in made.stderr
    result = run_module("preprocess", "inspect", str(out))
    _no_traceback(result)
    assert result.returncode == 0, result.stderr
    assert "none: the train split has no sample" in result.stdout
    assert (out / "inspect.png").stat().st_size > 0
    # no class and no split at all: every CSV row names a missing file
    (tmp_path / "none.csv").write_text("path,label\nnope1.wav,a\nnope2.wav,b\n")
    made = run_module("preprocess", str(tmp_path / "none.csv"), "--out", str(tmp_path / "none"), *SMALL)
    _no_traceback(made)
    assert made.returncode == 1 and "every shard was verified" not in made.stdout, made.stdout
    result = run_module("preprocess", "inspect", str(tmp_path / "none"))
    _no_traceback(result)
    assert result.returncode == 0 and "none: the train split has no sample" in result.stdout, result.stdout


def test_evaluate_with_no_validation_split_an_empty_split_and_no_epoch_in_metrics(tmp_path):
    make_corpus(tmp_path / "src", per_class=2, sr=8000)
    shards = tmp_path / "shards"
    made = run_module("preprocess", str(tmp_path / "src"), "--out", str(shards), "--val-fraction", "0", *SMALL)
    assert made.returncode == 0, made.stderr
    run = tmp_path / "run"
    trained = run_module("trainer", "train", str(shards), "--out", str(run), "--epochs", "1", "--width", "0.25",
                         "--batch-size", "2", "--num-workers", "1")
    assert trained.returncode == 0, trained.stderr
    # no validation split: the curves have no val points, the report is still made
    result = run_module("trainer", "evaluate", str(run), "--shards", str(shards), "--split", "train")
    _no_traceback(result)
    assert result.returncode == 0, result.stderr
    assert (run / "report" / "training_curves.png").exists()
    # a metrics.csv with no epoch (cut before its header): no curves, the rest of the report
    (run / "metrics.csv").write_text("")
    shutil.rmtree(run / "report")
    result = run_module("trainer", "evaluate", str(run), "--shards", str(shards), "--split", "train")
    _no_traceback(result)
    assert result.returncode == 0, result.stderr
    assert (run / "report" / "metrics.json").exists() and not (run / "report" / "training_curves.png").exists()
    # a split with no sample at all (every input rejected): one line saying so, not 'no labels'
    for label in ("low", "mid", "high"):
        (tmp_path / "bad" / label).mkdir(parents=True)
        (tmp_path / "bad" / label / "a.wav").write_text("not audio")
    empty = tmp_path / "empty"
    run_module("preprocess", str(tmp_path / "bad"), "--out", str(empty), "--val-fraction", "0", *SMALL)
    result = run_module("trainer", "evaluate", str(run), "--shards", str(empty), "--split", "train")
    _no_traceback(result)
    assert result.returncode == 2 and "has no sample to evaluate" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


