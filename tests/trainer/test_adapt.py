"""Test-time BatchNorm adaptation (--adapt-bn): the statistics it estimates, what it leaves
alone, its refusal on too few clips, and predict/evaluate/the Python API using it."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.errors import UsageError
from tests.audio_fixtures import run_module
from trainer import adapt, inference
from trainer.adapt import adapt_batchnorm, batchnorms, rebatch
from trainer.models import SeedCNN


def _model_and_data(clips: int = 96):
    torch.manual_seed(0)
    model = SeedCNN(4, width=0.25, dropout=0.5).train()
    with torch.no_grad():  # "trained": running statistics of other data, several batches tracked
        for _ in range(3):
            model(torch.randn(32, 1, 16, 24))
    data = 3.0 + 2.0 * torch.randn(clips, 1, 16, 24)  # another level and spread than in training
    return model.eval(), data


def test_the_first_layer_gets_the_statistics_of_the_new_data():
    model, data = _model_and_data()
    first = batchnorms(model)[0]
    conv = model.features[0][0]
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "tracked" not in k}
    before = model(data[:8])
    assert adapt_batchnorm(model, data.split(32)) == 96
    with torch.no_grad():
        seen = conv(data)  # what the first BatchNorm was fed
        per_batch = [b.transpose(0, 1).flatten(1) for b in seen.split(32)]
    torch.testing.assert_close(first.running_mean, seen.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(first.running_var, torch.stack([b.var(dim=1) for b in per_batch]).mean(0),
                               rtol=1e-4, atol=1e-5)
    with torch.no_grad():  # so it now hands the next layer standardised channels
        out = first(seen)
    torch.testing.assert_close(out.mean(dim=(0, 2, 3)), first.bias, atol=1e-4, rtol=0)
    assert not model.training and all(not m.training for m in model.modules())
    assert all(m.momentum == 0.1 for m in batchnorms(model))
    for key, value in model.state_dict().items():
        if key in weights:
            assert torch.equal(value, weights[key]), key
    after = model(data[:8])
    assert not torch.allclose(before, after)
    assert torch.equal(after, model(data[:8]))  # eval mode: dropout off, statistics fixed


def test_under_autocast_the_statistics_stay_float32_and_match_full_precision():
    """The path --adapt-bn takes on a GPU with AMP (run here with CPU bf16 autocast): BatchNorm
    keeps float32 statistics, equal to the full-precision ones within bf16's rounding."""
    model, data = _model_and_data()
    twin, _ = _model_and_data()
    assert adapt_batchnorm(model, data.split(32)) == adapt_batchnorm(twin, data.split(32), torch.bfloat16) == 96
    for full, half in zip(batchnorms(model), batchnorms(twin)):
        assert half.running_mean.dtype == half.running_var.dtype == torch.float32
        assert not torch.equal(full.running_mean, half.running_mean)  # autocast did run in bf16
        torch.testing.assert_close(half.running_mean, full.running_mean, rtol=0.05, atol=0.02)
        torch.testing.assert_close(half.running_var, full.running_var, rtol=0.05, atol=0.02)


def test_too_few_clips_are_refused_and_the_model_is_left_as_it_was():
    model, data = _model_and_data(adapt.MIN_CLIPS - 1)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UsageError, match="--adapt-bn needs at least"):
        adapt_batchnorm(model, data.split(8))
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert all(m.momentum == 0.1 and not m.training for m in batchnorms(model))


@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.integers(0, 9), max_size=12), size=st.integers(1, 7), limit=st.integers(1, 60))
def test_rebatch_keeps_order_and_sizes(sizes, size, limit):
    clips = torch.arange(sum(sizes))
    batches = list(rebatch(clips.split(sizes) if sizes else [], size, limit))
    joined = torch.cat(batches) if batches else torch.empty(0, dtype=clips.dtype)
    assert torch.equal(joined, clips[:limit])
    assert all(len(b) == size for b in batches[:-1]) and all(0 < len(b) <= size for b in batches)


def test_evaluate_records_the_adaptation(trained):
    run = trained["run"]
    plain = run_module("trainer", "evaluate", str(run), "--input", str(trained["corpus"]), "--jobs", "1")
    assert plain.returncode == 0, plain.stderr
    assert json.loads((run / "report" / "metrics.json").read_text())["adapted_bn_clips"] == 0
    adapted = run_module("trainer", "evaluate", str(run), "--input", str(trained["corpus"]), "--jobs", "1",
                         "--adapt-bn")
    assert adapted.returncode == 0, adapted.stderr
    metrics = json.loads((run / "report" / "metrics.json").read_text())
    assert metrics["adapted_bn_clips"] == metrics["samples"] == 40


def test_predict_refuses_too_few_clips_in_one_line(trained, tmp_path):
    result = run_module("trainer", "predict", str(trained["run"]), "--input", str(trained["test"]),
                        "--out", str(tmp_path / "s.csv"), "--adapt-bn")
    assert result.returncode == 2
    assert "--adapt-bn needs at least 32 clips" in result.stderr and "(got 8)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s.csv").exists()


def test_predict_adapts_on_a_shard_split_and_says_so(trained, tmp_path):
    out = tmp_path / "s.csv"
    result = run_module("trainer", "predict", str(trained["run"]), "--input", str(trained["shards"]),
                        "--split", "train", "--out", str(out), "--adapt-bn")
    assert result.returncode == 0, result.stderr
    rows = len(pd.read_csv(out))
    assert rows >= adapt.MIN_CLIPS and f"(BatchNorm adapted to {rows} clips)" in result.stdout


def test_the_api_adapts_on_at_most_adapt_clips_spread_over_the_inputs(trained, monkeypatch):
    from melshard.api import load_model, predict

    monkeypatch.setattr(inference, "ADAPT_CLIPS", 10)
    monkeypatch.setattr(adapt, "MIN_CLIPS", 4)
    files = sorted(trained["corpus"].rglob("*.wav"))
    assert len(files) == 40
    model = load_model(trained["run"], "cpu")
    frame = predict(model, files, adapt_bn=True)
    assert model.adapted == 10 and len(frame) == 40  # every 4th file estimated the statistics
    shards = load_model(trained["run"], "cpu")
    adapted = predict(shards, trained["shards"], split="train", adapt_bn=True)
    assert shards.adapted == 10  # the first pass stopped early; the second still predicts every clip
    everything = predict(load_model(trained["run"], "cpu"), trained["shards"], split="train")
    assert len(everything) > 10 and adapted["filename"].tolist() == everything["filename"].tolist()
    plain = load_model(trained["run"], "cpu")
    unadapted = predict(plain, files)
    assert plain.adapted == 0 and unadapted["filename"].tolist() == frame["filename"].tolist()
    classes = [c for c in frame.columns if c not in ("filename", "label")]
    assert (unadapted[classes] - frame[classes]).abs().to_numpy().max() > 1e-3
