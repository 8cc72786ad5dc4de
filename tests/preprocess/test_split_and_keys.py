"""Split (stratified, group-safe, CSV-honouring) and sample keys (sanitised, unique)."""

from __future__ import annotations

from collections import Counter

from preprocess.plan import assign_keys, plan_shards, sanitize_key
from preprocess.split import assign_splits
from shared.config import AugmentConfig, PreprocessConfig
from shared.sources import Clip


def _clips(n_per_class=20, labels=("a", "b", "c"), groups=None):
    clips = []
    for label in labels:
        for i in range(n_per_class):
            group = f"spk{i % groups}" if groups else None
            clips.append(Clip(f"/x/{label}/{i}.wav", f"{label}/{i}.wav", label, group))
    return clips


def test_stratified_split_keeps_class_proportions_and_is_seeded():
    clips = _clips()
    first = assign_splits(clips, 0.2, seed=1)
    val = Counter(c.label for c in first if c.split == "val")
    assert val == {"a": 4, "b": 4, "c": 4}
    assert first == assign_splits(list(reversed(clips)), 0.2, seed=1)[::-1]
    assert first != assign_splits(clips, 0.2, seed=2)


def test_group_split_never_puts_a_group_on_both_sides():
    split = assign_splits(_clips(groups=6), 0.2, seed=0)
    train = {c.group for c in split if c.split == "train"}
    val = {c.group for c in split if c.split == "val"}
    assert val and train and not (train & val)


def test_a_csv_split_column_is_honoured():
    clips = [Clip("/x/a.wav", "a.wav", "a", split="val"), Clip("/x/b.wav", "b.wav", "a", split="train"),
             Clip("/x/c.wav", "c.wav", "a", split="test")] + _clips(5)
    split = assign_splits(clips, 0.5, seed=0)
    assert [c.split for c in split[:3]] == ["val", "train", "test"]


def test_zero_val_fraction_puts_everything_in_train():
    assert {c.split for c in assign_splits(_clips(), 0.0, seed=0)} == {"train"}


def test_keys_have_no_dots_and_only_safe_characters():
    assert sanitize_key("dog/bark 1.v2.wav") == "dog_bark_1_v2"
    assert sanitize_key("ünï cödé/ä.b.FLAC") == "n_c_d_b"
    assert "." not in sanitize_key("...wav")


def test_keys_are_unique_even_when_sanitised_names_clash():
    clips = [Clip("/x/a b.wav", "a b.wav", "x", split="train"), Clip("/x/a_b.wav", "a_b.wav", "x", split="train"),
             Clip("/x/a_b.flac", "a_b.flac", "x", split="train"),
             Clip("/x/a_b_aug1.wav", "a_b_aug1.wav", "x", split="train")]
    keys = assign_keys(clips, {c.path: 1 for c in clips})
    family = [k for c in clips for k in (keys[c.path], keys[c.path] + "_aug1")]
    assert len(set(family)) == len(family)
    assert all("." not in k for k in family)


def test_shards_mix_classes_and_keep_copies_with_their_clip():
    clips = assign_splits(_clips(30), 0.2, seed=0)
    cfg = PreprocessConfig(shard_size=20, augment=AugmentConfig(copies=1))
    jobs = plan_shards(clips, ["a", "b", "c"], cfg)
    train = [j for j in jobs if j.split == "train"]
    assert all(j.samples <= 20 for j in jobs)
    assert sum(j.samples for j in train) == 2 * sum(1 for c in clips if c.split == "train")
    assert all(len({i.label for i in j.items}) > 1 for j in train[:-1])
    assert [j.name for j in train][:2] == ["train-000000.tar", "train-000001.tar"]


def test_tab_and_semicolon_separated_lists_are_read(tmp_path):
    import pytest

    from shared.errors import UsageError
    from shared.sources import list_source

    for name in ("a.wav", "b c.wav", "d,e.wav"):
        (tmp_path / name).write_bytes(b"x")
    cases = {"list.tsv": "path\tlabel\ta.wav\tx\nb c.wav\ty\nd,e.wav\tx\n",
             "list.txt": "path;label;group\na.wav;x;g1\nb c.wav;y;g2\nd,e.wav;x;g1\n",
             "list.csv": 'path,label\na.wav,x\nb c.wav,y\n"d,e.wav",x\n'}
    for name, text in cases.items():
        (tmp_path / name).write_text(text.replace("path\tlabel\ta.wav", "path\tlabel\na.wav"))
        clips, rejections = list_source(tmp_path / name)
        assert not rejections, (name, rejections)
        assert [(c.rel, c.label) for c in clips] == [("a.wav", "x"), ("b c.wav", "y"), ("d,e.wav", "x")], name
    assert [c.group for c in list_source(tmp_path / "list.txt")[0]] == ["g1", "g2", "g1"]
    (tmp_path / "bad.tsv").write_text("file\tclass\na.wav\tx\n")
    with pytest.raises(UsageError, match="tab-separated"):
        list_source(tmp_path / "bad.tsv")


def test_a_fraction_leaving_fewer_training_clips_than_classes_is_a_usage_error_naming_the_limit():
    import pytest

    from shared.errors import UsageError

    clips = _clips(10)  # 30 clips, 3 classes: at most 27 may go to validation
    for fraction in (0.99, 0.95):
        with pytest.raises(UsageError, match=r"at most 0\.90"):
            assign_splits(clips, fraction, seed=0)
    split = assign_splits(clips, 0.9, seed=0)
    assert Counter(c.label for c in split if c.split == "train") == {"a": 1, "b": 1, "c": 1}
    with pytest.raises(UsageError, match="leaves"):
        assign_splits(_clips(10, groups=5), 0.99, seed=0)
    for fraction in (1.0, -0.1):
        with pytest.raises(UsageError, match=r"\[0, 1\)"):
            assign_splits(clips, fraction, seed=0)


def test_a_group_split_honours_the_fraction_as_closely_as_whole_groups_allow():
    clips = _clips(20, groups=20)  # 20 groups of 3 clips (one per class)
    for fraction in (0.1, 0.3, 0.45, 0.6, 0.8):
        notes = []
        split = assign_splits(clips, fraction, seed=3, notes=notes)
        val = [c for c in split if c.split == "val"]
        assert abs(len(val) - fraction * len(clips)) <= 3, (fraction, len(val))
        assert Counter(c.label for c in val) == {k: len(val) // 3 for k in "abc"}  # stratified
        assert not {c.group for c in val} & {c.group for c in split if c.split == "train"}
        assert len(notes) == 1 and f"{len(val)} of 60 clips" in notes[0], notes
    # independent of listing order, seeded
    assert assign_splits(clips, 0.3, seed=3) == assign_splits(clips[::-1], 0.3, seed=3)[::-1]
    assert assign_splits(clips, 0.3, seed=3) != assign_splits(clips, 0.3, seed=4)


def test_a_group_split_keeps_a_training_clip_of_every_class():
    # class c lives in one group only: that group can never go to validation
    clips = _clips(6, labels=("a", "b"), groups=3) + [Clip("/x/c/0.wav", "c/0.wav", "c", "solo")]
    split = assign_splits(clips, 0.5, seed=0)
    assert {c.label for c in split if c.split == "train"} == {"a", "b", "c"}


def test_preprocess_warns_about_classes_without_validation_and_a_single_training_class():
    from preprocess.report import class_warnings

    split = [Clip("/x/a0", "a0", "a", split="train"), Clip("/x/a1", "a1", "a", split="val"),
             Clip("/x/b0", "b0", "b", split="train"), Clip("/x/t", "t", None, split="test")]
    lines = class_warnings(split, ["a", "b"])
    assert len(lines) == 1 and "1 class(es) have no validation clip (b)" in lines[0]
    assert class_warnings([c for c in split if c.split != "val"], ["a", "b"]) == []  # no val split at all
    lines = class_warnings(split[:2], ["a"])
    assert len(lines) == 1 and "needs at least two" in lines[0]


def test_long_keys_are_capped_with_a_hash_and_stay_unique():
    from preprocess.plan import MAX_KEY

    base = "bucket/" + "006dbee7-715a-46ee-b592-1c4e7affb788/" * 6
    first, second = sanitize_key(base + "a-1.7-f.3gp"), sanitize_key(base + "b-1.7-f.3gp")
    assert len(first) == len(second) == MAX_KEY and first != second
    assert first[:100] == second[:100] and "." not in first
    assert sanitize_key(base + "a-1.7-f.3gp") == first  # a pure function of the path
    assert sanitize_key("short/name.wav") == "short_name"
