"""Imbalanced train classes: `--balance-classes` copies and the imbalance warning."""

from __future__ import annotations

import json

from preprocess.plan import augment_copies
from shared.config import AugmentConfig, PreprocessConfig
from shared.sources import Clip
from tests.audio_fixtures import make_corpus, run_module


def _clips(counts: dict[str, int]) -> list[Clip]:
    return [Clip(f"/x/{label}/{i}.wav", f"{label}/{i}.wav", label, split="train")
            for label, count in counts.items() for i in range(count)] + [Clip("/x/v.wav", "v.wav", "a", split="val")]


def _samples(clips: list[Clip], copies: dict[str, int]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for clip in clips:
        if clip.split == "train":
            totals[clip.label] = totals.get(clip.label, 0) + 1 + copies[clip.path]
    return totals


def test_every_class_reaches_the_majority_count_within_the_cap():
    clips = _clips({"a": 40, "b": 7, "c": 3})
    cfg = PreprocessConfig(augment=AugmentConfig(copies=1, balance_classes=True, balance_cap=30))
    copies = augment_copies(clips, cfg)
    assert _samples(clips, copies) == {"a": 80, "b": 80, "c": 80}
    assert copies["/x/v.wav"] == 0 and {copies[c.path] for c in clips[:40]} == {1}
    assert {copies[c.path] for c in clips if c.label == "b"} == {10, 11}  # 73 copies over 7 clips

    capped = augment_copies(clips, PreprocessConfig(augment=AugmentConfig(copies=1, balance_classes=True)))
    assert _samples(clips, capped) == {"a": 80, "b": 77, "c": 33}  # at most 10 copies per clip

    plain = augment_copies(clips, PreprocessConfig(augment=AugmentConfig(copies=1)))
    assert _samples(clips, plain) == {"a": 80, "b": 14, "c": 6}


def test_the_copies_do_not_depend_on_listing_order():
    clips = _clips({"a": 20, "b": 6})
    cfg = PreprocessConfig(augment=AugmentConfig(copies=0, balance_classes=True))
    assert augment_copies(clips, cfg) == augment_copies(list(reversed(clips)), cfg)


def test_preprocess_warns_of_imbalance_and_balances_on_request(tmp_path):
    make_corpus(tmp_path / "src", {"low": 24, "high": 2}, sr=8000)
    common = ["--sr", "8000", "--duration", "0.5", "--n-mels", "16", "--augment-copies", "0",
              "--val-fraction", "0", "--jobs", "1"]
    plain = run_module("preprocess", str(tmp_path / "src"), "--out", str(tmp_path / "plain"), *common)
    assert plain.returncode == 0, plain.stderr
    assert "imbalanced 12:1 ('low' 24 clips, 'high' 2)" in plain.stderr and "--balance-classes" in plain.stderr

    balanced = run_module("preprocess", str(tmp_path / "src"), "--out", str(tmp_path / "balanced"), *common,
                          "--balance-classes")
    assert balanced.returncode == 0, balanced.stderr
    train = json.loads((tmp_path / "balanced" / "manifest.json").read_text())["splits"]["train"]
    assert train["per_class"] == {"high": 22, "low": 24}  # 2 clips x (1 + 10 copies): the cap
    assert train["copies_per_class"] == {"high": 20, "low": 0}

    inspect = run_module("preprocess", "inspect", str(tmp_path / "plain"))
    assert inspect.returncode == 0, inspect.stderr
    assert "imbalanced 12:1" in " ".join(inspect.stdout.split())
