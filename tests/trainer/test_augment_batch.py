"""The log-mel augmentations of trainer/augment.py, each alone: shapes and dtypes kept, the same
numbers from the same generator, the property that makes each what it is, and one batched
operation (the work does not grow with Python calls per sample)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shared.config import AudioConfig, TrainConfig
from trainer.augment import (
    add_noise,
    augment_mels,
    centre_crop,
    freq_warp,
    noise_by,
    shift_crop_by,
    stretch_by,
    time_shift_crop,
    time_stretch,
    warp_by,
    warp_index,
)

AUDIO = AudioConfig(sr=16000, n_fft=512, hop_length=128, n_mels=40, duration_s=1.0)
B, M, T = 6, 40, 50


def _mels(seed: int = 0, dtype=torch.float16) -> torch.Tensor:
    """Speech-like log-mels: -80 dB floor, a loud band in the middle of each clip's time."""
    g = torch.Generator().manual_seed(seed)
    mel = -80 + 5 * torch.rand(B, M, T, generator=g)
    mel[:, 10:20, 15:35] += 60
    return mel.to(dtype)


def _gen(seed: int = 1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


ON = {
    "time_shift_crop": (lambda m, g: time_shift_crop(m, TrainConfig(shift_frames=8, train_frames=40), g)),
    "time_stretch": (lambda m, g: time_stretch(m, TrainConfig(stretch=(0.8, 1.25)), g)),
    "freq_warp": (lambda m, g: freq_warp(m, TrainConfig(warp=(0.85, 1.15)), g, AUDIO)),
    "add_noise": (lambda m, g: add_noise(m, TrainConfig(noise_p=1.0, noise_snr_db=(0.0, 20.0)), g, AUDIO)),
}


@pytest.mark.parametrize("name", list(ON))
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_each_keeps_dtype_and_is_a_function_of_the_generator(name, dtype):
    mel = _mels(dtype=dtype)
    a, b, c = ON[name](mel, _gen(1)), ON[name](mel, _gen(1)), ON[name](mel, _gen(2))
    assert a.dtype == dtype and a.shape[:2] == (B, M)
    assert a.shape[2] == (40 if name == "time_shift_crop" else T)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.isfinite(a.float()).all()


def test_every_augmentation_is_off_by_default_and_draws_nothing():
    mel, g = _mels(), _gen()
    before = g.get_state()
    assert augment_mels(mel, TrainConfig(), g, AUDIO) is mel
    assert torch.equal(g.get_state(), before)


def test_shift_moves_content_by_the_drawn_frames_and_fills_with_the_floor():
    ramp = torch.arange(T, dtype=torch.float32)[None, None, :].expand(B, M, T) + 10.0  # floor 10
    out = time_shift_crop(ramp, TrainConfig(shift_frames=12), _gen(3))
    filled = out == 10.0
    for b in range(B):  # the check reads each clip; the augmentation itself did not loop
        kept = ~filled[b, 0]
        shift = (ramp[b, 0, kept] - out[b, 0, kept]).unique()
        assert shift.numel() == 1 and abs(int(shift)) <= 12  # one whole shift per clip
        s = int(shift)
        assert filled[b, 0].sum() >= abs(s)  # what moved in is the floor, never wrapped-around content
        assert torch.equal(out[b], ramp[b].roll(s, dims=-1).masked_fill(~kept.expand(M, T), 10.0))
    shifts = {int((ramp[b, 0, ~filled[b, 0]] - out[b, 0, ~filled[b, 0]])[0]) for b in range(B)}
    assert len(shifts) > 1  # drawn per clip


def test_random_crop_is_a_window_of_the_stored_clip_and_validation_takes_the_centre():
    ramp = torch.arange(T, dtype=torch.float32)[None, None, :].expand(B, M, T).clone()
    out = time_shift_crop(ramp, TrainConfig(train_frames=20), _gen(4))
    assert out.shape == (B, M, 20)
    starts = out[:, 0, 0]
    assert torch.equal(out, (starts[:, None, None] + torch.arange(20.0)[None, None, :]).expand(B, M, 20))
    assert starts.min() >= 0 and starts.max() <= T - 20 and starts.unique().numel() > 1
    assert torch.equal(centre_crop(ramp, 20), ramp[..., 15:35])
    assert centre_crop(ramp, 0) is ramp and centre_crop(ramp, T) is ramp
    with pytest.raises(ValueError, match="longer than the stored"):
        time_shift_crop(ramp, TrainConfig(train_frames=T + 1), _gen())


def test_shift_crop_core_with_zero_shift_is_a_plain_slice():
    mel = _mels(dtype=torch.float32)
    start = torch.tensor([0, 3, 5, 10, 0, 1])
    out = shift_crop_by(mel, start, torch.zeros(B, dtype=torch.long), 40)
    for b in range(B):
        assert torch.equal(out[b], mel[b, :, start[b] : start[b] + 40])


def test_stretch_factor_one_is_the_identity_and_slowing_down_lengthens_the_event():
    mel = _mels(dtype=torch.float32)
    assert torch.equal(stretch_by(mel, torch.ones(B)), mel)
    slow = stretch_by(mel, torch.full((B,), 1.25))
    loud = lambda m: (m[:, 15, :] > -40).sum(dim=1).float()  # frames of the event
    assert (loud(slow) > loud(mel) + 3).all()  # 20 frames -> about 25
    fast = stretch_by(mel, torch.full((B,), 0.8))
    assert (loud(fast) < loud(mel) - 2).all()
    assert torch.equal(fast[:, :, 0], mel.amin(dim=(1, 2))[:, None].expand(B, M))  # the floor fills the ends


def test_warp_alpha_one_is_the_identity_and_alpha_above_one_moves_energy_up():
    mel = _mels(dtype=torch.float32)
    assert torch.equal(warp_by(mel, warp_index(np.ones(B), AUDIO)), mel)
    def centroid(m):  # energy-weighted mean band of the event's middle frame
        energy = (m[:, :, 25] + 80).clamp_min(0)
        return (energy * torch.arange(M)).sum(1) / energy.sum(1)
    up = warp_by(mel, warp_index(np.full(B, 1.2), AUDIO))
    down = warp_by(mel, warp_index(np.full(B, 0.8), AUDIO))
    assert (centroid(up) > centroid(mel) + 1).all() and (centroid(down) < centroid(mel) - 1).all()
    # through the mel scale: a band at f lands on the band whose centre is nearest alpha f
    import librosa

    centres = librosa.mel_frequencies(M + 2, fmin=0, fmax=AUDIO.sr / 2)[1:-1]
    peak = torch.full((1, M, 1), -80.0)
    peak[0, 15, 0] = 0.0
    moved = warp_by(peak, warp_index(np.array([1.2]), AUDIO))
    assert int(moved[0, :, 0].argmax()) == int(np.abs(centres - 1.2 * centres[15]).argmin())


def test_noise_at_high_snr_changes_little_and_at_low_snr_raises_the_floor():
    mel = _mels(dtype=torch.float32)
    on, white = torch.ones(B, dtype=torch.bool), torch.zeros(B, dtype=torch.bool)
    quiet = noise_by(mel, torch.full((B,), 60.0), white, on, AUDIO)
    assert (quiet - mel)[:, 10:20, 15:35].abs().max() < 0.01  # the event is untouched
    assert (quiet >= mel - 1e-4).all()  # noise only ever adds power
    loud = noise_by(mel, torch.full((B,), 0.0), white, on, AUDIO)
    floor = lambda m: m[:, :, :10].mean()  # silence before the event
    assert floor(loud) > floor(mel) + 30
    pink = noise_by(mel, torch.full((B,), 0.0), ~white, on, AUDIO)
    tilt = lambda m: (m[:, :5, :10].mean() - m[:, -5:, :10].mean())  # low bands minus high bands
    assert tilt(pink) > tilt(loud) + 5  # pink noise is louder in the low bands
    assert torch.allclose(noise_by(mel, torch.zeros(B), white, ~on, AUDIO), mel, atol=1e-4)  # clips not drawn stay


def test_noise_reapplies_the_audio_configs_reference_and_range():
    mel = _mels(dtype=torch.float32)
    on, white = torch.ones(B, dtype=torch.bool), torch.zeros(B, dtype=torch.bool)
    ranged = AudioConfig(sr=16000, n_fft=512, hop_length=128, n_mels=40, db_range=30.0)
    out = noise_by(mel, torch.full((B,), 10.0), white, on, ranged)
    span = out.amax(dim=(1, 2)) - out.amin(dim=(1, 2))
    assert (span <= 30.0 + 1e-4).all()
    relative = AudioConfig(sr=16000, n_fft=512, hop_length=128, n_mels=40, db_reference="clip_max")
    out = noise_by(mel - mel.amax(dim=(1, 2), keepdim=True), torch.full((B,), 5.0), white, on, relative)
    assert torch.allclose(out.amax(dim=(1, 2)), torch.zeros(B), atol=1e-5)


def test_noise_p_picks_a_share_of_the_clips():
    mel = torch.full((400, 8, 4), -60.0)
    small = AudioConfig(sr=16000, n_fft=512, hop_length=128, n_mels=8)
    out = add_noise(mel, TrainConfig(noise_p=0.25, noise_snr_db=(0.0, 0.0)), _gen(5), small)
    changed = ((out - mel).abs() > 1e-3).flatten(1).any(dim=1).float().mean()
    assert 0.15 < changed < 0.35


@pytest.mark.parametrize("name", list(ON))
def test_batched_no_python_loop_over_samples(name, monkeypatch):
    """The number of tensor gathers / elementwise kernels does not grow with the batch: counted
    through torch's dispatcher for 2 and 64 clips."""
    from torch.overrides import TorchFunctionMode

    class Count(TorchFunctionMode):
        calls = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            Count.calls += 1
            return func(*args, **(kwargs or {}))

    ON[name](_mels(), _gen())  # tables built once per audio config are not part of the count
    counts = []
    for batch in (2, 64):
        mel = (-80 + 5 * torch.rand(batch, M, T, generator=_gen())).half()
        Count.calls = 0
        with Count():
            ON[name](mel, _gen())
        counts.append(Count.calls)
    assert 0 < counts[0] == counts[1], counts


def test_the_whole_chain_keeps_the_training_shape():
    cfg = TrainConfig(train_frames=40, shift_frames=5, stretch=(0.9, 1.1), warp=(0.9, 1.1), noise_p=0.5, eq_db=6)
    out = augment_mels(_mels(), cfg, _gen(), AUDIO)
    assert out.shape == (B, M, 40) and torch.isfinite(out).all()


def test_freq_mixstyle_gives_each_clip_band_statistics_mixed_with_one_partners():
    from trainer.augment import freq_mixstyle

    g = torch.Generator().manual_seed(3)
    x = (torch.randn(B, 1, M, T, generator=g) * (0.5 + 3 * torch.rand(B, 1, M, 1, generator=g))
         + 4 * torch.randn(B, 1, M, 1, generator=g))
    cfg = TrainConfig(mixstyle_p=1.0)
    out = freq_mixstyle(x, cfg, _gen(), np.random.default_rng(0))
    assert torch.equal(out, freq_mixstyle(x, cfg, _gen(), np.random.default_rng(0)))  # resume draws the same

    def stats(t):
        return t.mean(-1).flatten(1).double(), t.std(-1, unbiased=False).flatten(1).double()

    (mean, spread), (new_mean, new_spread) = stats(x), stats(out)
    # the shape over time of every band stays the clip's own
    assert torch.allclose((out - out.mean(-1, keepdim=True)) / out.std(-1, unbiased=False, keepdim=True),
                          (x - x.mean(-1, keepdim=True)) / x.std(-1, unbiased=False, keepdim=True), atol=1e-3)
    moved = 0
    for b in range(B):
        # one partner p and one weight lam for all of clip b's bands, means and spreads alike:
        # new = lam * own + (1 - lam) * partner's, solved by least squares and checked exact
        fits = []
        for p in range(B):
            own = torch.cat([mean[b], spread[b]]) - torch.cat([mean[p], spread[p]])
            target = torch.cat([new_mean[b], new_spread[b]]) - torch.cat([mean[p], spread[p]])
            lam = float(own @ target / (own @ own)) if p != b else 1.0
            fits.append((float((target - lam * own).abs().max()), lam, p))
        error, lam, p = min(fits)
        assert error < 1e-3 and -1e-6 <= lam <= 1 + 1e-6
        moved += p != b and lam < 0.99
    assert moved >= B // 2  # mixing happened, not the identity


def test_freq_mixstyle_is_off_by_default_and_at_p_zero_draws_nothing():
    from trainer.augment import freq_mixstyle

    x, g, rng = torch.randn(B, 1, M, T), _gen(), np.random.default_rng(0)
    state = g.get_state()
    assert freq_mixstyle(x, TrainConfig(), g, rng) is x and torch.equal(g.get_state(), state)
    assert rng.random() == np.random.default_rng(0).random()
