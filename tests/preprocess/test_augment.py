"""Augmented copies: every transform runs, and randomness depends only on (seed, key, copy)."""

from __future__ import annotations

import numpy as np
import pytest

from preprocess.augment import make_augmentation
from shared.audio import clip_to_mel
from shared.config import DEFAULT_TRANSFORMS, TRANSFORMS, AudioConfig, AugmentConfig
from tests.audio_fixtures import tone

CFG = AudioConfig(sr=16000, duration_s=1.0, n_fft=512, hop_length=128, n_mels=40)


def _clip():
    """A tone with its silent tail trimmed, as `load_clip` hands clips to augmentation."""
    return np.trim_zeros(tone("mid", np.random.default_rng(0), CFG.sr, 0.6), "b")


@pytest.mark.parametrize("name", TRANSFORMS)
def test_each_transform_changes_the_features(name):
    aug = AugmentConfig(transforms=(name,))
    chosen, transform = make_augmentation(aug, CFG.sr, 42, "k", 1)
    assert chosen == name
    plain = clip_to_mel(_clip(), CFG)
    augmented = clip_to_mel(_clip(), CFG, transform)
    assert augmented.shape == plain.shape and np.isfinite(augmented).all()
    assert not np.array_equal(augmented, plain)


def test_cut_removes_only_the_end_and_at_most_its_share():
    y = _clip()
    for copy in range(1, 30):
        _, transform = make_augmentation(AugmentConfig(transforms=("cut",), cut_end=0.3), CFG.sr, 42, "k", copy)
        cut, ratio = transform(y)
        assert ratio == 1.0 and 0.7 * y.size <= cut.size < y.size
        np.testing.assert_array_equal(cut, y[: cut.size])


def test_copies_are_a_function_of_seed_key_and_copy_only():
    aug = AugmentConfig()

    def mel(seed, key, copy):
        return clip_to_mel(_clip(), CFG, make_augmentation(aug, CFG.sr, seed, key, copy)[1])

    np.testing.assert_array_equal(mel(42, "dog_1", 1), mel(42, "dog_1", 1))
    names = {make_augmentation(aug, CFG.sr, 42, f"k{i}", 1)[0] for i in range(60)}
    assert names == set(DEFAULT_TRANSFORMS)  # every default transform gets drawn
    assert not np.array_equal(mel(42, "dog_1", 1), mel(42, "dog_1", 2))
    assert not np.array_equal(mel(42, "dog_1", 1), mel(43, "dog_1", 1))
