"""Every command's output paths are checked before any work: a folder where a file goes, a file
where a folder goes, a place that cannot be written (/proc takes no new files, even from root),
shards inside their own source folder. One line, exit 2, nothing created."""

from __future__ import annotations

import shutil

import pytest

from tests.audio_fixtures import make_corpus, run_module

UNWRITABLE = "/proc/melshard-out"  # no process, root included, can create a file there


def _refused(result, *words: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert all(word in lines[0] for word in words), lines[0]


@pytest.mark.parametrize("target,words", [("folder", ("is a folder", "submission.csv")),
                                          ("under a file", ("is a file, not a folder",)),
                                          ("unwritable", ("cannot write to --out", "in /proc"))])
def test_predict_refuses_an_output_it_cannot_write_before_predicting(trained, tmp_path, target, words):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("x")
    out = {"folder": tmp_path, "under a file": blocker / "s.csv", "unwritable": f"{UNWRITABLE}.csv"}[target]
    result = run_module("trainer", "predict", str(trained["run"]), "--input", str(trained["raw"]), "--out", str(out))
    _refused(result, *words)
    assert not list(tmp_path.glob("*.csv")) and blocker.read_text() == "x"


def test_evaluate_refuses_a_report_folder_it_cannot_write(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained["run"], run)
    shutil.rmtree(run / "report", ignore_errors=True)
    (run / "report").write_text("a file where the report folder goes")
    result = run_module("trainer", "evaluate", str(run), "--shards", str(trained["shards"]))
    _refused(result, "the report folder", "is a file")


@pytest.mark.parametrize("target,words", [("file", ("is a file",)),
                                          ("unwritable", ("cannot write to --out", "in /proc"))])
def test_train_refuses_a_run_folder_it_cannot_write(tiny_shards, tmp_path, target, words):
    out = tmp_path / "run.txt" if target == "file" else UNWRITABLE
    if target == "file":
        out.write_text("x")
    result = run_module("trainer", "train", str(tiny_shards), "--out", str(out), "--epochs", "1")
    _refused(result, *words)


def test_preprocess_refuses_shards_inside_its_source_folder_or_on_a_file(tmp_path):
    src = make_corpus(tmp_path / "corpus", per_class=2, labels=("low", "high"))
    before = sorted(p.relative_to(src) for p in src.rglob("*"))
    result = run_module("preprocess", str(src), "--out", str(src / "shards"))
    _refused(result, "inside the source folder", str(tmp_path / "shards" / "corpus"))
    result = run_module("preprocess", str(src), "--out", str(src))
    _refused(result, "inside the source folder")
    assert sorted(p.relative_to(src) for p in src.rglob("*")) == before  # nothing made in the user's audio
    (tmp_path / "taken").write_text("x")
    _refused(run_module("preprocess", str(src), "--out", str(tmp_path / "taken")), "is a file")
    _refused(run_module("preprocess", str(src), "--out", UNWRITABLE), "cannot write to --out", "in /proc")
