"""Shared fixtures: tiny real shard folders made by the real preprocessor."""

from __future__ import annotations

from pathlib import Path

import pytest

from preprocess.pipeline import RunOptions, run
from shared.config import AudioConfig, AugmentConfig, PreprocessConfig
from tests.audio_fixtures import make_corpus

TINY_AUDIO = AudioConfig(sr=8000, duration_s=1.0, n_fft=256, hop_length=64, n_mels=32)


def make_shards(root: Path, per_class: int, shard_size: int, copies: int = 0, seed: int = 0) -> Path:
    corpus = make_corpus(root / "corpus", per_class=per_class, labels=("low", "mid", "high", "chirp"), seed=seed)
    cfg = PreprocessConfig(audio=TINY_AUDIO, augment=AugmentConfig(copies=copies), shard_size=shard_size)
    run(RunOptions(corpus, root / "shards", jobs=1), cfg)
    return root / "shards"


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory) -> Path:
    """4 learnable classes x 12 clips: 38 train samples in 5 shards, 10 val samples."""
    return make_shards(tmp_path_factory.mktemp("tiny"), per_class=12, shard_size=8)
