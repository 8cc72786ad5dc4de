"""`python -m trainer train` on tiny real shards: learning, early stopping, checkpoints, resume."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from shared.config import TrainConfig
from tests.audio_fixtures import REPO, run_module
from trainer.augment import mixup, random_eq, spec_augment
from trainer.models import build_model, model_args
from trainer.runlock import RunLock

# Class weights on (tiny_shards' train classes are 10/10/9/9 samples, so they differ from 1): the
# resume tests hold exactness with them.
FAST = ["--model", "cnn", "--width", "0.25", "--batch-size", "4", "--num-workers", "2", "--lr", "3e-3",
        "--class-weights", "balanced"]


def _train(shards, run, *extra, timeout=300):
    return run_module("trainer", "train", str(shards), "--out", str(run), *FAST, *extra, timeout=timeout)


def _metrics(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


def _weights(path: Path, which: str = "model") -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)[which]


def _assert_same_weights(a: Path, b: Path) -> None:
    """Every tensor of the weights, and of the weight average when the run keeps one."""
    kinds = ["model"] + (["ema"] if "ema" in torch.load(b, map_location="cpu", weights_only=True) else [])
    for which in kinds:
        wa, wb = _weights(a, which), _weights(b, which)
        assert wa.keys() == wb.keys()
        for name in wa:
            assert torch.equal(wa[name], wb[name]), (which, name)


def _popen(shards, run, *extra):
    command = [sys.executable, "-m", "trainer", "train", str(shards), "--out", str(run), *FAST, *extra]
    return subprocess.Popen(command, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, process, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        assert process.poll() is None, process.communicate()[1]
        time.sleep(0.005)
    raise AssertionError("timed out")


@pytest.fixture(scope="module")
def reference(tiny_shards, tmp_path_factory):
    """An uninterrupted 4-epoch run, checkpointing every 3 steps."""
    run = tmp_path_factory.mktemp("ref") / "run"
    result = _train(tiny_shards, run, "--epochs", "4", "--checkpoint-every", "3")
    assert result.returncode == 0, result.stderr
    return run


def test_training_learns_and_writes_the_run_folder(reference):
    rows = _metrics(reference)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert float(rows[-1]["val_acc"]) >= 0.7
    assert set(rows[0]) >= {"lr", "val_f1", "samples_per_s", "data_wait_fraction", "seconds"}
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(reference / name, map_location="cpu", weights_only=True)
        assert ckpt["labels"] == ["chirp", "high", "low", "mid"]
        assert ckpt["audio"]["n_mels"] == 32 and ckpt["model_name"] == "cnn"
        assert {"optimizer", "scheduler", "scaler", "position", "rng", "early_stop"} <= ckpt.keys()
    assert (reference / "config.json").exists()


# Every log-mel augmentation drawn per step, MixStyle, SpecAugment, EQ, centred bands and the weight
# average on: a resumed run must draw the same crops, shifts, stretches, warps, noise and style
# mixes, and hold the same average.
FRESH = {"train_frames": 110, "shift_frames": 8, "stretch": [0.9, 1.1], "warp": [0.9, 1.1], "noise_p": 0.5,
         "noise_snr_db": [5.0, 30.0], "eq_db": 6.0, "freq_masks": 1, "time_masks": 1, "centre_bands": True,
         "mixstyle_p": 0.5}


@pytest.fixture(scope="module")
def fresh_recipe(tmp_path_factory) -> list[str]:
    toml = tmp_path_factory.mktemp("fresh") / "fresh.toml"
    toml.write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in FRESH.items()))  # JSON values are TOML
    return ["--config", str(toml), "--ema-decay", "0.9"]


@pytest.fixture(scope="module")
def fresh_reference(tiny_shards, fresh_recipe, tmp_path_factory):
    """The same uninterrupted run with every fresh augmentation and the weight average on."""
    run = tmp_path_factory.mktemp("fresh-ref") / "run"
    result = _train(tiny_shards, run, "--epochs", "4", "--checkpoint-every", "3", *fresh_recipe)
    assert result.returncode == 0, result.stderr
    return run


def test_the_weight_average_is_validated_saved_and_predicted_with(fresh_reference):
    from trainer.inference import load_predictor

    last = torch.load(fresh_reference / "last.pt", map_location="cpu", weights_only=True)
    assert last["train_config"]["ema_decay"] == 0.9 and last["train_config"]["warp"] == [0.9, 1.1]
    raw, ema = last["model"], last["ema"]
    assert raw.keys() == ema.keys()
    assert any(not torch.equal(raw[k], ema[k]) for k in raw if k.endswith("weight"))  # an average, not a copy
    assert all(torch.equal(raw[k], ema[k]) for k in raw if "running" in k)  # BatchNorm statistics copied
    best = torch.load(fresh_reference / "best.pt", map_location="cpu", weights_only=True)
    predictor = load_predictor(fresh_reference, "cpu")
    assert all(torch.equal(v, best["ema"][k]) for k, v in predictor.model.state_dict().items())
    assert predictor.frames == 110
    assert predictor.model.centre and last["model_args"]["centre"]  # predict centres the bands as training did
    rows = _metrics(fresh_reference)
    assert float(rows[-1]["val_acc"]) >= 0.5  # still learns with everything on


@pytest.mark.parametrize("recipe", ["plain", "fresh"])
def test_a_mid_epoch_kill_resumes_to_the_same_weights(tiny_shards, recipe, request, tmp_path):
    reference = request.getfixturevalue("reference" if recipe == "plain" else "fresh_reference")
    extra = [] if recipe == "plain" else request.getfixturevalue("fresh_recipe")
    run = tmp_path / "run"
    process = _popen(tiny_shards, run, "--epochs", "4", "--checkpoint-every", "3", *extra)

    def mid_epoch_checkpoint():
        if not (run / "last.pt").exists():
            return False
        try:
            ckpt = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - being replaced right now; look again
            return False
        return ckpt["epoch"] >= 1 and sum(ckpt["position"]["consumed"]) > 0

    _wait_for(mid_epoch_checkpoint, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert len(_metrics(run)) < 4
    resumed = _train(tiny_shards, run, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    _assert_same_weights(run / "last.pt", reference / "last.pt")
    assert [r["val_loss"] for r in _metrics(run)] == [r["val_loss"] for r in _metrics(reference)]


def test_a_kill_after_an_epoch_boundary_resumes_to_the_same_weights(tiny_shards, reference, tmp_path):
    run = tmp_path / "run"
    process = _popen(tiny_shards, run, "--epochs", "4", "--checkpoint-every", "3")
    _wait_for(lambda: (run / "metrics.csv").exists() and len(_metrics(run)) >= 2, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    resumed = _train(tiny_shards, run, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    _assert_same_weights(run / "last.pt", reference / "last.pt")


def test_sigterm_saves_a_checkpoint_that_resumes(tiny_shards, reference, tmp_path):
    run = tmp_path / "run"
    process = _popen(tiny_shards, run, "--epochs", "4", "--checkpoint-every", "3")
    _wait_for(lambda: (run / "last.pt").exists(), process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "--resume" in stderr
    torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    resumed = _train(tiny_shards, run, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    _assert_same_weights(run / "last.pt", reference / "last.pt")


def test_early_stopping_stops(tiny_shards, tmp_path):
    run = tmp_path / "run"
    result = _train(tiny_shards, run, "--epochs", "10", "--patience", "2", "--early-stop-metric", "val_acc",
                    "--lr", "1e-9", "--mixup-p", "0")
    assert result.returncode == 0, result.stderr
    assert "early stopping" in result.stderr
    epochs = len(_metrics(run))
    assert epochs < 10
    again = run_module("trainer", "train", str(tiny_shards), "--out", str(run), "--resume")  # stays finished
    assert again.returncode == 0, again.stderr
    assert len(_metrics(run)) == epochs


def test_resume_is_refused_for_other_shards_or_another_model(tiny_shards, reference, tmp_path):
    from tests.conftest import make_shards

    other = make_shards(tmp_path / "other", per_class=5, shard_size=8, seed=3)
    refused = run_module("trainer", "train", str(other), "--out", str(reference), "--resume")
    assert refused.returncode == 2
    assert refused.stderr.strip().count("\n") == 0 and "not the ones" in refused.stderr
    model = run_module("trainer", "train", str(tiny_shards), "--out", str(reference), "--resume", "--model", "resnet9")
    assert model.returncode == 2 and "--model resnet9 differs" in model.stderr
    fresh = run_module("trainer", "train", str(tiny_shards), "--out", str(reference))
    assert fresh.returncode == 2 and "--resume" in fresh.stderr


def test_bf16_autocast_runs_on_cpu_with_resnet9(tiny_shards, tmp_path):
    result = run_module("trainer", "train", str(tiny_shards), "--out", str(tmp_path / "run"), "--model", "resnet9",
                        "--width", "0.125", "--epochs", "1", "--amp", "bf16", "--batch-size", "8", "--channels-last",
                        "--num-workers", "1")
    assert result.returncode == 0, result.stderr
    assert np.isfinite(float(_metrics(tmp_path / "run")[0]["train_loss"]))


def test_mixup_handles_odd_batches_and_keeps_the_original_dominant():
    cfg = TrainConfig(mixup_p=1.0)
    x = torch.arange(5, dtype=torch.float32)[:, None, None, None].expand(5, 1, 4, 6).clone()
    y = torch.arange(5)
    mixed, y_a, y_b, lam = mixup(x, y, cfg, torch.Generator().manual_seed(1), np.random.default_rng(1))
    assert mixed.shape == x.shape and 0.5 <= lam <= 1.0
    assert torch.equal(y_a, y) and sorted(y_b.tolist()) == y.tolist()
    expected = lam * x[:, 0, 0, 0] + (1 - lam) * x[y_b, 0, 0, 0]
    assert torch.allclose(mixed[:, 0, 0, 0], expected)
    untouched = mixup(x, y, TrainConfig(mixup_p=0.0), torch.Generator(), np.random.default_rng(0))
    assert untouched[0] is x and untouched[3] == 1.0


def test_spec_augment_masks_bands_and_frames():
    cfg = TrainConfig(freq_masks=2, freq_mask_width=4, time_masks=2, time_mask_width=8)
    x = torch.ones(3, 1, 32, 50)
    masked = spec_augment(x, cfg, torch.Generator().manual_seed(0))
    assert masked.shape == x.shape and 0 < (masked == 0).float().mean() < 0.6


def test_random_eq_adds_one_smooth_curve_per_clip_within_its_bounds():
    mel = torch.randn(64, 32, 20).half()
    out = random_eq(mel, TrainConfig(eq_db=10.0), torch.Generator().manual_seed(0))
    curve = out - mel.float()
    assert torch.allclose(curve, curve[:, :, :1].expand_as(curve), atol=1e-2)  # the same gain in every frame
    gains = curve[:, :, 0]
    assert gains.abs().max() <= 15.0 + 1e-2  # tilt <= 10 dB plus bow <= 5 dB
    assert gains[:, -1].sub(gains[:, 0]).abs().max() > 10  # edges pulled apart: a real tilt...
    assert gains.std(dim=0).min() > 1  # ...different for every clip
    assert (gains.diff(dim=1).diff(dim=1).abs() < 0.1).all()  # smooth: no band-to-band jumps
    assert random_eq(mel, TrainConfig(), torch.Generator()) is mel  # off by default, drawing nothing


@pytest.mark.parametrize("name", ["cnn", "resnet9"])
def test_models_take_any_mel_size(name):
    model = build_model(name, model_args(7, 0.25, 0.1)).eval()
    for shape in ((2, 1, 32, 40), (1, 1, 128, 216)):
        assert model(torch.zeros(shape)).shape == (shape[0], 7)


@pytest.mark.parametrize("name", ["cnn", "resnet9"])
def test_centred_models_ignore_a_fixed_colouring_of_each_band(name):
    torch.manual_seed(0)
    x = torch.randn(3, 1, 32, 40)
    colour = 5 * torch.randn(3, 1, 32, 1)  # a constant per clip and band: a microphone's response in log-mel
    centred = build_model(name, model_args(7, 0.25, 0.1, centre=True)).eval()
    assert torch.allclose(centred(x + colour), centred(x), atol=1e-4)
    assert not torch.allclose(centred(x.flip(-1)[..., :20]), centred(x[..., :20]), atol=1e-3)  # the word still counts
    plain = build_model(name, model_args(7, 0.25, 0.1)).eval()
    assert not torch.allclose(plain(x + colour), plain(x), atol=1e-2)


def test_a_truncated_last_checkpoint_falls_back_to_the_previous_one(reference, tiny_shards, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(reference, run)
    data = (run / "last.pt").read_bytes()
    (run / "last.pt").write_bytes(data[: len(data) // 2])
    resumed = _train(tiny_shards, run, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "warning" in resumed.stderr and "last.prev.pt" in resumed.stderr
    _assert_same_weights(run / "last.pt", reference / "last.pt")


def test_a_second_training_process_on_the_same_run_folder_is_refused(tiny_shards, tmp_path):
    run = tmp_path / "run"
    first = _popen(tiny_shards, run, "--epochs", "500")
    try:
        _wait_for(lambda: (run / "config.json").exists(), first)
        for extra in ([], ["--resume"]):
            second = _train(tiny_shards, run, "--epochs", "1", *extra)
            assert second.returncode == 2, second.stderr
            assert second.stderr.strip().splitlines()[-1] == (
                f"error: {run} is being trained by another process (pid {first.pid}); wait for it to end "
                "or stop it, or choose another --out")
        assert first.poll() is None  # the first run goes on untouched
        config = (run / "config.json").read_bytes()
    finally:
        first.kill()  # SIGKILL: the kernel drops the lock with the process
        first.communicate()
    assert (run / "config.json").read_bytes() == config
    RunLock.take(run).release()  # nothing stale is left behind
    assert not (run / ".lock").exists()


def test_a_finished_run_leaves_no_lock_file(reference):
    assert (reference / "last.pt").exists() and not (reference / ".lock").exists()


def test_a_run_that_fails_to_start_leaves_no_folder_behind(tmp_path):
    result = run_module("trainer", "train", str(tmp_path / "no-shards"), "--out", str(tmp_path / "run"))
    assert result.returncode == 2 and not (tmp_path / "run").exists()
