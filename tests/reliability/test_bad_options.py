"""Bad option values end a command with one line naming the option and what it accepts, never
a traceback from deep inside (numpy refusing a seed, pandas reading an empty table)."""

from __future__ import annotations

from tests.audio_fixtures import make_corpus, run_module


def _one_line(result, *words: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert all(word in lines[0] for word in words), lines


def test_a_negative_seed_is_one_usage_line_in_preprocess_and_train(tmp_path):
    src = make_corpus(tmp_path / "src", per_class=2)
    for seed in ("-5", "4294967296"):
        _one_line(run_module("preprocess", str(src), "--out", str(tmp_path / "out"), "--seed", seed),
                  "seed", "0 to 4294967295", seed)
        _one_line(run_module("trainer", "train", str(tmp_path / "shards"), "--out", str(tmp_path / "run"),
                             "--seed", seed), "seed", "0 to 4294967295", seed)
    assert not (tmp_path / "out").exists() and not (tmp_path / "run").exists()


def test_a_labels_csv_with_only_its_header_says_it_has_no_rows(tmp_path):
    for name, header in (("labels.csv", "path,label\n"), ("labels.tsv", "path\tlabel\tsplit\n\n")):
        (tmp_path / name).write_text(header)
        _one_line(run_module("preprocess", str(tmp_path / name), "--out", str(tmp_path / "out")),
                  f"CSV {tmp_path / name} has a header but no rows")
    src = make_corpus(tmp_path / "src", per_class=2)
    (tmp_path / "test.csv").write_text("path\n")  # the --test CSV takes the same route
    _one_line(run_module("preprocess", str(src), "--out", str(tmp_path / "out2"), "--test", str(tmp_path / "test.csv")),
              f"CSV {tmp_path / 'test.csv'} has a header but no rows")
