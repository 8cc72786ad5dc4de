"""Property-based tests of the split and of the input accounting over random corpora."""

from __future__ import annotations

import json
import random
import tarfile
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from preprocess.split import assign_splits, val_indices
from shared.errors import UsageError
from shared.sources import Clip


@st.composite
def corpora(draw):
    """Labeled clips (some with a CSV split, some with a group), a fraction and a seed."""
    n_classes = draw(st.integers(1, 5))
    counts = draw(st.lists(st.integers(1, 12), min_size=n_classes, max_size=n_classes))
    grouped = draw(st.booleans())
    n_groups = draw(st.integers(1, 8))
    clips = []
    for c, count in enumerate(counts):
        for i in range(count):
            group = None
            if grouped and draw(st.integers(0, 9)) > 0:  # a few clips without a group
                group = f"g{draw(st.integers(0, n_groups - 1))}"
            split = draw(st.sampled_from([None] * 6 + ["train", "val", "test"]))
            clips.append(Clip(f"/x/{c}/{i}.wav", f"c{c}/{i}.wav", f"c{c}", group, split))
    fraction = draw(st.one_of(st.just(0.0), st.floats(0.01, 0.95), st.sampled_from([0.1, 0.2, 0.3, 0.5, 0.9])))
    return clips, fraction, draw(st.integers(0, 2**16))


def _groups(clips):
    return [c.group or f"\0{c.rel}" for c in clips]


@settings(max_examples=400, deadline=None)
@given(corpora())
def test_every_clip_gets_exactly_one_split_or_the_fraction_is_refused(case):
    clips, fraction, seed = case
    todo = [c for c in clips if c.split is None]
    try:
        result = assign_splits(clips, fraction, seed)
    except UsageError as exc:
        # refused only when the fraction leaves fewer training clips than classes
        n, k = len(todo), len({c.label for c in todo})
        assert fraction > 0 and n - int(round(n * fraction)) < k, str(exc)
        assert "at most" in str(exc) or "use 0" in str(exc)
        return
    assert len(result) == len(clips)
    for before, after in zip(clips, result):
        assert after == Clip(before.path, before.rel, before.label, before.group, after.split)
        assert after.split == before.split if before.split else after.split in ("train", "val")
    # seeded and independent of listing order
    order = list(range(len(clips)))
    random.Random(seed).shuffle(order)
    shuffled = assign_splits([clips[i] for i in order], fraction, seed)
    assert {clips[i].path: s.split for i, s in zip(order, shuffled)} == {c.path: c.split for c in result}
    if fraction == 0:
        assert all(r.split == "train" for r, c in zip(result, clips) if c.split is None)


@settings(max_examples=400, deadline=None)
@given(corpora())
def test_groups_stay_whole_and_the_fraction_is_within_one_group(case):
    clips, fraction, seed = case
    todo = [c for c in clips if c.split is None]
    if not any(c.group for c in todo) or fraction == 0:
        return
    try:
        result = assign_splits(clips, fraction, seed)
    except UsageError:
        return
    split = [r for r, c in zip(result, clips) if c.split is None]
    groups = _groups(split)
    sides: dict[str, set[str]] = {}
    for group, clip in zip(groups, split):
        sides.setdefault(group, set()).add(clip.split)
    assert all(len(s) == 1 for s in sides.values())  # no group on both sides
    # every class keeps a training clip
    assert {c.label for c in split if c.split == "train"} == {c.label for c in split}
    sizes = Counter(groups)
    val = sum(1 for c in split if c.split == "val")
    target = fraction * len(split)
    if abs(val - target) > max(sizes.values()):
        # only when every group left in training holds the last training clips of some class
        train_counts = Counter(c.label for c in split if c.split == "train")
        for group in {g for g, c in zip(groups, split) if c.split == "train"}:
            held = Counter(c.label for g, c in zip(groups, split) if g == group)
            assert any(held[label] == train_counts[label] for label in held), (group, val, target)
    if all(size == 1 for size in sizes.values()):  # whole groups of one clip: stratified per class
        for label, n in Counter(c.label for c in split).items():
            v = sum(1 for c in split if c.label == label and c.split == "val")
            assert abs(v - fraction * n) <= 1, (label, v, fraction * n)


@settings(max_examples=400, deadline=None)
@given(corpora())
def test_without_groups_the_split_is_stratified_where_it_can_be(case):
    clips, fraction, seed = case
    clips = [Clip(c.path, c.rel, c.label, None, c.split) for c in clips]
    todo = [c for c in clips if c.split is None]
    try:
        result = assign_splits(clips, fraction, seed)
    except UsageError:
        return
    split = [r for r, c in zip(result, clips) if c.split is None]
    n_val = sum(1 for c in split if c.split == "val")
    assert n_val == int(round(len(todo) * fraction))
    counts = Counter(c.label for c in todo)
    if n_val and min(counts.values()) >= 2 and n_val >= len(counts):
        for label, n in counts.items():
            v = sum(1 for c in split if c.label == label and c.split == "val")
            assert abs(v - n_val * n / len(todo)) <= 1, (label, v, n_val, n)


# ---------------------------------------------------------------------------------------------
# end to end: every input row is a sample or a row of errors.csv, exactly once


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.integers(2, 40), min_size=1, max_size=12), st.floats(0.01, 0.95), st.integers(0, 2**32 - 1),
       st.booleans(), st.randoms(use_true_random=False))
def test_validation_indices_equal_sklearns_train_test_split(counts, fraction, seed, stratified, shuffle):
    """val_indices draws the validation set train_test_split draws, index for index."""
    from sklearn.model_selection import train_test_split

    labels = [f"class{c:02d}" for c, k in enumerate(counts) for _ in range(k)]
    shuffle.shuffle(labels)  # classes interleaved as a listing gives them
    n = len(labels)
    n_val = max(1, min(n - 1, int(round(n * fraction))))
    stratify = labels if stratified else None
    if stratified and (n_val < len(counts) or n - n_val < len(counts)):
        stratify = None  # what _val_mask does when stratification cannot hold
    _, expected = train_test_split(np.arange(n), test_size=n_val, random_state=seed, stratify=stratify)
    got = val_indices(n, n_val, seed, stratify)
    assert sorted(got.tolist()) == sorted(expected.tolist())


@st.composite
def csv_corpora(draw):
    rows = []
    n_classes = draw(st.integers(1, 3))
    for i in range(draw(st.integers(3, 10))):
        kind = draw(st.sampled_from(["ok"] * 8 + ["missing", "blank_label", "bad_split", "broken"]))
        label = f"k{draw(st.integers(0, n_classes - 1))}"
        split = draw(st.sampled_from([""] * 4 + ["train", "val", "test"]))
        group = draw(st.sampled_from(["", "s1", "s2", "s3"]))
        rows.append((f"a{i}.wav", kind, label, split, group))
    tests = [(f"t{i}.wav", draw(st.sampled_from(["", "k0", "unknown"])))
             for i in range(draw(st.integers(0, 3)))]
    return rows, tests, draw(st.sampled_from([0.0, 0.2, 0.5])), draw(st.integers(0, 3))


@pytest.mark.slow
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(csv_corpora())
def test_every_input_is_written_or_rejected_exactly_once(case):
    from preprocess.pipeline import RunOptions, run
    from shared.config import AudioConfig, AugmentConfig, PreprocessConfig

    rows, tests, fraction, seed = case
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rng = np.random.default_rng(seed)
        lines = ["path,label,split,group"]
        for name, kind, label, split, group in rows:
            if kind == "broken":
                (root / name).write_bytes(b"RIFF not audio")
            elif kind != "missing":
                sf.write(root / name, 0.3 * rng.standard_normal(1600).astype(np.float32), 8000)
            lines.append(f"{name},{'' if kind == 'blank_label' else label},"
                         f"{'nope' if kind == 'bad_split' else split},{group}")
        (root / "list.csv").write_text("\n".join(lines) + "\n")
        (root / "test").mkdir()
        for name, label in tests:
            sf.write(root / "test" / name, 0.3 * rng.standard_normal(1600).astype(np.float32), 8000)
        (root / "test" / "t.csv").write_text("\n".join(["path,label"] + [f"{n},{lab}" for n, lab in tests]) + "\n")
        cfg = PreprocessConfig(audio=AudioConfig(sr=8000, duration_s=0.25, n_fft=256, hop_length=64, n_mels=16),
                               augment=AugmentConfig(copies=1), val_fraction=fraction, shard_size=4, seed=seed)
        try:
            result = run(RunOptions(root / "list.csv", root / "out", root / "test" / "t.csv" if tests else None,
                                    jobs=1), cfg)
        except UsageError:
            return  # e.g. every clip of the CSV rejected (no audio), or a fraction leaving too few
        inputs = [n for n, *_ in rows] + [n for n, _ in tests]
        seen = Counter()
        for split, info in result.manifest.to_dict()["splits"].items():
            for shard in info["shards"]:
                with tarfile.open(root / "out" / shard["name"]) as tar:
                    for member in tar.getmembers():
                        if member.name.endswith(".json"):
                            meta = json.loads(tar.extractfile(member).read())
                            if meta["copy"] == 0:
                                seen[meta["path"]] += 1
                                assert split == "test" or meta["label"] in result.manifest.to_dict()["labels"]
        errors = pd.read_csv(root / "out" / "errors.csv", keep_default_na=False)
        seen.update(errors["path"].tolist())
        assert seen == Counter(inputs), (seen, inputs)
        assert result.manifest.to_dict()["inputs"]["total"] == len(inputs)
        assert "unseen_label" not in [r for n, r in zip(errors["path"], errors["reason"]) if n.startswith("t")]
        test_clips = result.manifest.to_dict()["splits"].get("test", {}).get("clips", 0)
        csv_test = sum(1 for _, kind, _, split, _ in rows if split == "test" and kind in ("ok", "blank_label"))
        assert test_clips == len(tests) + csv_test  # test clips are never rejected for their label
