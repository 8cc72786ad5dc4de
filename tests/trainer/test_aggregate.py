"""How the windows of a segmented recording combine into its row (`--aggregate`), on constructed
probabilities: background windows that answer nearly uniformly must not outvote the window that
hears the event."""

from __future__ import annotations

import numpy as np
import pytest

from shared.config import AGGREGATES
from shared.errors import UsageError
from trainer.inference import Predicted, aggregate, by_file

C = 10


def _background(rng: np.random.Generator, windows: int, leaning: int) -> np.ndarray:
    """Unsure windows (entropy above 0.95 of the uniform), each leaning towards `leaning`."""
    probs = np.full((windows, C), 1.0) + rng.uniform(0, 0.2, (windows, C))
    probs[:, leaning] += 2.0  # about 0.24 against 0.085 for each other class
    return probs / probs.sum(axis=1, keepdims=True)


def _confident(cls: int, p: float = 0.9) -> np.ndarray:
    probs = np.full(C, (1 - p) / (C - 1))
    probs[cls] = p
    return probs


def test_flat_background_windows_and_one_confident_window_give_the_confident_class():
    rng = np.random.default_rng(0)
    probs = np.vstack([_background(rng, 8, leaning=3), _confident(7)])
    assert aggregate(probs, "mean").argmax() == 3  # eight slightly leaning windows outvote the one that heard it
    assert aggregate(probs, "confidence").argmax() == 7
    combined = aggregate(probs, "confidence")
    assert combined.sum() == pytest.approx(1.0) and (combined >= 0).all()


def test_confidence_is_the_mean_when_every_window_is_equally_sure():
    probs = np.vstack([_confident(2, 0.8), _confident(5, 0.8), _confident(2, 0.8)])
    np.testing.assert_allclose(aggregate(probs, "confidence"), aggregate(probs, "mean"))
    uniform = np.full((4, C), 1.0 / C)
    np.testing.assert_allclose(aggregate(uniform, "confidence"), np.full(C, 1.0 / C))


def test_mean_and_max_keep_their_meaning():
    probs = np.array([[0.6, 0.4], [0.1, 0.9], [0.7, 0.3]])
    np.testing.assert_allclose(aggregate(probs, "mean"), probs.mean(axis=0))
    np.testing.assert_allclose(aggregate(probs, "max"), np.array([0.7, 0.9]) / 1.6)


def test_by_file_combines_windows_sharing_a_path():
    rng = np.random.default_rng(1)
    a = np.vstack([_background(rng, 8, leaning=1), _confident(4)])
    b = np.vstack([_confident(6), _background(rng, 7, leaning=0)])
    windows = Predicted(["a.wav"] * 9 + ["b.wav"] * 8, np.vstack([a, b]), ["4"] * 9 + ["6"] * 8, [None] * 17, [],
                        [float(i) for i in range(9)] + [float(i) for i in range(8)])
    files, kept = by_file(windows, "confidence")
    assert files.paths == ["a.wav", "b.wav"] and files.truth == ["4", "6"] and kept is windows
    assert files.probs.argmax(axis=1).tolist() == [4, 6]
    assert by_file(windows, "mean")[0].probs.argmax(axis=1).tolist() == [1, 0]
    for how in AGGREGATES:
        np.testing.assert_allclose(by_file(windows, how)[0].probs.sum(axis=1), 1.0)
    with pytest.raises(UsageError, match="--aggregate must be one of"):
        by_file(windows, "median")
