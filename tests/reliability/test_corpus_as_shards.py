"""A corpus of audio given where shards belong (`melshard train CORPUS --out RUN`) is refused in
one line suggesting a shards path for preprocess's --out, never the corpus folder itself."""

from __future__ import annotations

from tests.audio_fixtures import make_corpus, run_module


def test_train_on_an_audio_folder_suggests_preprocessing_it_into_a_shards_folder(tmp_path):
    corpus = make_corpus(tmp_path / "birds", per_class=1, sr=8000)
    (tmp_path / "labels.csv").write_text("path,label\nbirds/low/low_000.wav,low\n")
    for given in (corpus, tmp_path / "labels.csv"):
        result = run_module("melshard", "train", str(given), "--out", str(tmp_path / "runs" / "y"), cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        shards = f"shards/{given.stem}"
        assert f"`python -m preprocess {given} --out {shards}`" in lines[0] and f"--out {given}`" not in lines[0], lines
    assert not (tmp_path / "runs" / "y").exists()
    # a folder that is neither keeps the suggestion to preprocess into it
    result = run_module("melshard", "train", str(tmp_path / "nosuch"), "--out", str(tmp_path / "runs" / "y"))
    assert result.returncode == 2 and f"--out {tmp_path / 'nosuch'}`" in result.stderr, result.stderr
