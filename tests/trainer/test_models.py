"""The classifiers' smallest input (trainer.models.MIN_INPUT) and the one-line refusal of mels
smaller than that, before training starts."""

from __future__ import annotations

import pytest
import torch

from tests.audio_fixtures import make_corpus, run_module, write_tiny_config
from trainer.models import MIN_INPUT, build_model, model_args


@pytest.mark.parametrize("name", sorted(MIN_INPUT))
def test_min_input_is_the_smallest_size_the_model_runs_on(name):
    model = build_model(name, model_args(3, 0.25, 0.0)).eval()
    least = MIN_INPUT[name]
    with torch.no_grad():
        assert model(torch.zeros(2, 1, least, least)).shape == (2, 3)
        for shape in ((least - 1, least), (least, least - 1)):
            with pytest.raises(RuntimeError):
                model(torch.zeros(2, 1, *shape))


@pytest.mark.slow
def test_mels_too_short_for_the_cnn_are_refused_in_one_line_naming_the_fix(tmp_path):
    # 0.08 s at 8 kHz with a 64-sample hop: 11 frames, enough for the ResNet-9 (8), not the cnn (16)
    config = write_tiny_config(tmp_path / "tiny.toml", duration_s=0.08)
    corpus = make_corpus(tmp_path / "corpus", per_class=4)
    shards = tmp_path / "shards"
    assert run_module("preprocess", str(corpus), "--out", str(shards), "--config", str(config),
                      "--jobs", "1").returncode == 0
    common = ["--width", "0.25", "--batch-size", "4", "--num-workers", "0", "--epochs", "1"]
    refused = run_module("trainer", "train", str(shards), "--out", str(tmp_path / "cnn"), "--model", "cnn", *common)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines()[-1] == (
        "error: --model cnn needs mels of at least 16 bands x 16 frames, and these are 32 x 11: preprocess "
        "with duration_s >= 0.12 (or a smaller hop_length), or use --model resnet9")
    trained = run_module("trainer", "train", str(shards), "--out", str(tmp_path / "resnet9"), "--model", "resnet9",
                         *common)
    assert trained.returncode == 0, trained.stderr
