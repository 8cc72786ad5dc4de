"""The class warnings count the clips written, after rejections: a class whose every clip was
rejected is named in its own line (its label stays, so label indices match the shards), and the
imbalance line and `copies_per_class` leave rejected clips out."""

from __future__ import annotations

import json
from pathlib import Path

from shared.shardio import iter_samples
from tests.audio_fixtures import make_corpus, run_module, write_tiny_config, write_truncated_wav


def _run(src: Path, out: Path, config: Path, *extra: str):
    return run_module("preprocess", str(src), "--out", str(out), "--config", str(config), "--jobs", "1", *extra)


def test_a_class_whose_only_clip_is_rejected_is_named_and_not_counted(tmp_path):
    src = make_corpus(tmp_path / "src", per_class=22, labels=("dog",))
    (src / "broken_only").mkdir()
    (src / "broken_only" / "empty.wav").write_bytes(b"")
    out = tmp_path / "out"
    result = _run(src, out, write_tiny_config(tmp_path / "tiny.toml"))
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert not any("imbalanced" in line for line in lines), result.stderr  # broken_only has 0 clips, not 1
    named = [line for line in lines if "'broken_only'" in line]
    assert named == ["warning: class 'broken_only' has no usable clip (1 rejected, see errors.csv): the model "
                     "will never predict it; fix or remove its files"], result.stderr
    assert any("1 class(es) with training clips (dog)" in line for line in lines)

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["labels"] == ["broken_only", "dog"]  # kept: the indices the shards were written with
    train = manifest["splits"]["train"]
    assert train["copies_per_class"] == {"dog": train["per_class"]["dog"] // 2}  # one copy per dog clip
    assert set(train["per_class"]) == {"dog"}
    classes = {int(s["cls"]) for shard in out.glob("*.tar") for s in iter_samples(shard)}
    assert classes == {manifest["labels"].index("dog")}

    again = _run(src, out, write_tiny_config(tmp_path / "tiny.toml"))  # a rerun warns the same
    assert again.returncode == 0 and "resumed: " in again.stdout
    assert [line for line in again.stderr.splitlines() if "'broken_only'" in line] == named


def test_the_imbalance_line_and_inspect_count_written_clips(tmp_path):
    src = make_corpus(tmp_path / "src", per_class=22, labels=("dog",))
    make_corpus(src, per_class=2, labels=("cat",), seed=1)
    write_truncated_wav(src / "cat" / "cut.wav")
    (src / "cat" / "zero.wav").write_bytes(b"")
    out = tmp_path / "out"
    config = write_tiny_config(tmp_path / "tiny.toml")
    result = _run(src, out, config, "--val-fraction", "0")
    assert result.returncode == 0, result.stderr
    imbalance = [line for line in result.stderr.splitlines() if "imbalanced" in line]
    assert len(imbalance) == 1 and "imbalanced 11:1 ('dog' 22 clips, 'cat' 2)" in imbalance[0], result.stderr
    train = json.loads((out / "manifest.json").read_text())["splits"]["train"]
    assert train["per_class"] == {"cat": 4, "dog": 44} and train["copies_per_class"] == {"cat": 2, "dog": 22}
    shown = run_module("preprocess", "inspect", str(out))
    assert shown.returncode == 0, shown.stderr
    assert "imbalanced 11:1 ('dog' 22 clips, 'cat' 2)" in " ".join(shown.stdout.split())


def test_a_class_left_only_in_val_is_named_for_training(tmp_path):
    src = make_corpus(tmp_path / "src", per_class=3, labels=("dog", "cat", "owl"))
    (src / "owl" / "gone.wav").write_bytes(b"")
    rows = ["path,label,split"] + [f"{label}/{label}_{i:03d}.wav,{label},{'val' if i == 2 else 'train'}"
                                   for label in ("dog", "cat") for i in range(3)]
    rows += ["owl/owl_000.wav,owl,val", "owl/gone.wav,owl,train"]
    (src / "list.csv").write_text("\n".join(rows) + "\n")
    result = _run(src / "list.csv", tmp_path / "out", write_tiny_config(tmp_path / "tiny.toml"))
    assert result.returncode == 0, result.stderr
    named = [line for line in result.stderr.splitlines() if "'owl'" in line]
    assert named == ["warning: class 'owl' has no usable training clip (1 rejected, see errors.csv; 1 in val "
                     "only): the model will never predict it; fix or remove its files"], result.stderr
