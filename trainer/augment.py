"""Batch-level augmentation on the device, drawn fresh every step from the step's generator.

Waveform augmentations baked into stored copies give an 80-epoch run the same few variants of a
clip 80 times and multiply the shards' size; these work on the stored log-mels (dB), cost a few
milliseconds per batch, and draw every number from the generator the loop seeds per (seed,
epoch, step), so a resumed run draws the same numbers. Each is off by default and then draws
nothing, so runs that do not ask for one are unchanged. Each is one batched tensor operation
(gathers, interpolation, elementwise power arithmetic): no per-sample Python loop. The numbers
are drawn on the host and copied to the device without waiting for it (`non_blocking`).

Order in a training step (`augment_mels`, then the loop):

1. `time_shift_crop`: a random `train_frames` crop of a longer stored mel, and a time shift of
   up to `shift_frames` either way, the clip's floor (its minimum) filling what moved in;
2. `time_stretch`: interpolation along frames by a factor from `stretch`, about the centre;
3. `freq_warp`: f -> alpha f through the audio config's mel scale, alpha from `warp`;
4. `add_noise`: white or pink noise at an SNR from `noise_snr_db`, added in the power domain;
5. `random_eq`: a random tilt and bow across the bands (`eq_db`);
6. per-band normalisation, then `freq_mixstyle`, `spec_augment` masks, then `mixup`.

Noise comes before the EQ because a microphone colours the room's noise too; masks come after
normalisation so that a masked span is the band mean. Validation and prediction take the
centre `train_frames` crop (`centre_crop`) and nothing else.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from shared import melscale
from shared.config import AudioConfig, TrainConfig


def mixup(x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, generator: torch.Generator,
          rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """With probability `mixup_p`, mix each sample with a random partner (any batch size).

    Returns (inputs, labels, partner labels, weight of `labels`); the loss is
    `lam * CE(labels) + (1 - lam) * CE(partner labels)`.
    """
    if cfg.mixup_p == 0 or torch.rand((), generator=generator).item() >= cfg.mixup_p:
        return x, y, y, 1.0
    lam = float(rng.beta(cfg.mixup_alpha, cfg.mixup_alpha))
    lam = max(lam, 1.0 - lam)  # the original sample stays dominant, so train accuracy means something
    # A permutation pairs every sample with a partner, odd batch sizes included.
    partner = torch.randperm(x.shape[0], generator=generator).to(x.device, non_blocking=True)
    return lam * x + (1.0 - lam) * x[partner], y, y[partner], lam


def random_eq(mel: torch.Tensor, cfg: TrainConfig, generator: torch.Generator) -> torch.Tensor:
    """Add a random smooth gain curve across the mel bands of `[B, M, T]` log-mels (in dB).

    Microphones and rooms colour a recording with a fixed frequency response (on FSDD the six
    speakers' share of energy at 3-4 kHz spans 12.5 dB: bench/fsdd_recordings.py). A random
    tilt of up to `eq_db` at the band edges plus a bow of up to half that (both uniform, either
    sign) teaches the model that such colouring is not part of the word.
    """
    if cfg.eq_db == 0:
        return mel
    batch, n_mels, _ = mel.shape
    position = torch.linspace(-1.0, 1.0, n_mels)
    tilt = (torch.rand(batch, 1, generator=generator) * 2 - 1) * cfg.eq_db
    bow = (torch.rand(batch, 1, generator=generator) * 2 - 1) * (cfg.eq_db / 2)
    curve = tilt * position + bow * (2 * position.square() - 1)  # first two Chebyshev polynomials
    return mel.float() + curve[:, :, None].to(mel.device, non_blocking=True)


def _masks(count: int, width: int, size: int, batch: int, generator: torch.Generator) -> torch.Tensor:
    """[batch, size] booleans: `count` random spans of up to `width` positions per sample."""
    position = torch.arange(size)
    masked = torch.zeros(batch, size, dtype=torch.bool)
    for _ in range(count):
        span = torch.randint(0, width + 1, (batch,), generator=generator)
        start = (torch.rand(batch, generator=generator) * (size - span + 1)).long()
        masked |= (position >= start[:, None]) & (position < (start + span)[:, None])
    return masked


def freq_mixstyle(x: torch.Tensor, cfg: TrainConfig, generator: torch.Generator,
                  rng: np.random.Generator) -> torch.Tensor:
    """Frequency-wise MixStyle (Zhou et al., ICLR 2021; per band as in Schmid et al.'s DCASE
    systems): with probability `mixstyle_p` per batch, each clip's every band is standardised over
    time and given back a mean and spread mixed with a random partner's, Beta(`mixstyle_alpha`)
    weighted. A recording's colouring and a voice's level per band are what change between
    speakers and microphones; the word's shape in time stays the clip's own."""
    if cfg.mixstyle_p == 0 or torch.rand((), generator=generator).item() >= cfg.mixstyle_p:
        return x
    batch = x.shape[0]
    lam = torch.from_numpy(rng.beta(cfg.mixstyle_alpha, cfg.mixstyle_alpha, size=batch)).float()
    lam = lam.reshape(batch, *([1] * (x.dim() - 1))).to(x.device, non_blocking=True)
    partner = torch.randperm(batch, generator=generator).to(x.device, non_blocking=True)
    var, mean = torch.var_mean(x, dim=-1, keepdim=True, unbiased=False)
    spread = (var + 1e-6).sqrt()
    mixed_mean = torch.lerp(mean[partner], mean, lam)
    mixed_spread = torch.lerp(spread[partner], spread, lam)
    return (x - mean) / spread * mixed_spread + mixed_mean


def spec_augment(x: torch.Tensor, cfg: TrainConfig, generator: torch.Generator) -> torch.Tensor:
    """Zero (the normalised mean) random mel-band and time spans of `[B, 1, M, T]` inputs."""
    if not (cfg.freq_masks or cfg.time_masks):
        return x
    batch, _, n_mels, frames = x.shape
    freq = _masks(cfg.freq_masks, cfg.freq_mask_width, n_mels, batch, generator).to(x.device, non_blocking=True)
    time = _masks(cfg.time_masks, cfg.time_mask_width, frames, batch, generator).to(x.device, non_blocking=True)
    return x.masked_fill(freq[:, None, :, None] | time[:, None, None, :], 0.0)


# ---------------------------------------------------------------------------------------------
# time: crop, shift, stretch


def centre_crop(mel: torch.Tensor, frames: int) -> torch.Tensor:
    """The centre `frames` frames of `[..., T]` (all of it when `frames` is 0 or >= T): the
    view validation and prediction take of clips stored longer than the training crop."""
    total = mel.shape[-1]
    if frames <= 0 or frames >= total:
        return mel
    start = (total - frames) // 2
    return mel[..., start : start + frames]


def floor_of(mel: torch.Tensor) -> torch.Tensor:
    """Each clip's floor, its minimum (`[B, 1, 1]`): what silence looks like in that clip."""
    return mel.amin(dim=(1, 2), keepdim=True)


def take_frames(mel: torch.Tensor, source: torch.Tensor, whole: bool = False) -> torch.Tensor:
    """`[B, M, T']`: frame `t` of clip `b` read at fractional frame `source[b, t]` of `mel`
    (linear interpolation; exact at whole frames; `whole`: every source is a whole frame, one
    gather), the clip's floor outside it. The floor rides along as an extra frame `T`, so one
    gather fills it too (a `where` over the batch costs as much again on a CPU)."""
    batch, n_mels, total = mel.shape
    x = mel.float()
    padded = torch.cat([x, floor_of(x).expand(batch, n_mels, 1)], dim=2)
    outside = (source < 0) | (source > total - 1)
    base = source.floor()
    lo = base.long().clamp(0, total - 1).masked_fill(outside, total)
    a = padded.gather(2, lo[:, None, :].expand(batch, n_mels, -1))
    if whole:
        return a.to(mel.dtype)
    hi = (base.long() + 1).clamp(0, total - 1).masked_fill(outside, total)
    b = padded.gather(2, hi[:, None, :].expand(batch, n_mels, -1))
    return torch.lerp(a, b, (source - base)[:, None, :]).to(mel.dtype)


def time_shift_crop(mel: torch.Tensor, cfg: TrainConfig, generator: torch.Generator) -> torch.Tensor:
    """A random `train_frames` window of each clip, moved by a random whole number of frames
    in [-shift_frames, shift_frames] (content later for a positive shift), the floor filling in.

    Shifting rather than rolling: a word wrapped around from the end is no recording's sound.
    """
    batch, _, total = mel.shape
    frames = cfg.train_frames or total
    if frames > total:
        raise ValueError(f"train_frames {frames} is longer than the stored mels ({total} frames)")
    if frames == total and not cfg.shift_frames:
        return mel
    start = torch.zeros(batch, dtype=torch.long)
    if frames < total:
        start = (torch.rand(batch, generator=generator) * (total - frames + 1)).long().clamp(max=total - frames)
    shift = torch.zeros(batch, dtype=torch.long)
    if cfg.shift_frames:
        shift = torch.randint(-cfg.shift_frames, cfg.shift_frames + 1, (batch,), generator=generator)
    return shift_crop_by(mel, start, shift, frames)


def shift_crop_by(mel: torch.Tensor, start: torch.Tensor, shift: torch.Tensor, frames: int) -> torch.Tensor:
    """`frames` frames from `start[b]`, content moved later by `shift[b]` frames (floor filling)."""
    source = start[:, None] + torch.arange(frames)[None, :] - shift[:, None]
    return take_frames(mel, source.to(mel.device, torch.float32, non_blocking=True), whole=True)


def time_stretch(mel: torch.Tensor, cfg: TrainConfig, generator: torch.Generator) -> torch.Tensor:
    """Each clip slowed down (factor > 1) or sped up (< 1) by a factor drawn from `stretch`,
    about its centre; the length stays, the floor filling what a speed-up leaves empty."""
    low, high = cfg.stretch
    if low == high == 1.0:
        return mel
    factor = low + (high - low) * torch.rand(mel.shape[0], generator=generator)
    return stretch_by(mel, factor)


def stretch_by(mel: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    total = mel.shape[-1]
    centre = (total - 1) / 2
    source = centre + (torch.arange(total, dtype=torch.float32)[None, :] - centre) / factor[:, None].float()
    return take_frames(mel, source.to(mel.device, non_blocking=True))


# ---------------------------------------------------------------------------------------------
# frequency: warp, noise


@functools.lru_cache(maxsize=8)
def _mel_centres(audio: AudioConfig) -> np.ndarray:
    """Centre frequencies (Hz) of the config's mel bands: the filterbank's peaks."""
    fmax = audio.fmax if audio.fmax is not None else audio.sr / 2
    return melscale.mel_frequencies(audio.n_mels + 2, audio.fmin, fmax)[1:-1]


def warp_index(alpha: np.ndarray, audio: AudioConfig) -> torch.Tensor:
    """`[B, M]` fractional source band for each target band: band k of the warped clip holds
    what the original had at f_k / alpha (f -> alpha f), located on the config's mel scale
    (band centres are equally spaced in mel), clamped to the outermost bands."""
    centres = _mel_centres(audio)
    mels = melscale.hz_to_mel(centres)
    source = melscale.hz_to_mel(centres[None, :] / np.asarray(alpha, np.float64)[:, None])
    index = (source - mels[0]) / ((mels[-1] - mels[0]) / max(len(mels) - 1, 1))
    snapped = np.round(index)
    index = np.where(np.abs(index - snapped) < 1e-6, snapped, index)  # alpha 1: exactly the identity
    return torch.from_numpy(np.clip(index, 0, len(mels) - 1)).float()


def freq_warp(mel: torch.Tensor, cfg: TrainConfig, generator: torch.Generator, audio: AudioConfig) -> torch.Tensor:
    """Vocal-tract-length perturbation: each clip's spectrum stretched along frequency by an
    alpha drawn from `warp` (> 1 moves energy up), so formants of other speakers are seen."""
    low, high = cfg.warp
    if low == high == 1.0:
        return mel
    alpha = low + (high - low) * torch.rand(mel.shape[0], generator=generator, dtype=torch.float64)
    return warp_by(mel, warp_index(alpha.numpy(), audio))


def warp_by(mel: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Bands read at fractional band `index[b, k]` (linear interpolation along the mel axis)."""
    n_frames = mel.shape[-1]
    index = index.to(mel.device, non_blocking=True)
    base = index.floor()
    weight = (index - base)[:, :, None]
    top = mel.shape[1] - 1
    lo = base.long().clamp(0, top)[:, :, None].expand(-1, -1, n_frames)
    hi = (base.long() + 1).clamp(0, top)[:, :, None].expand(-1, -1, n_frames)
    x = mel.float()
    return torch.lerp(x.gather(1, lo), x.gather(1, hi), weight).to(mel.dtype)


@functools.lru_cache(maxsize=8)
def noise_profiles(audio: AudioConfig) -> torch.Tensor:
    """`[2, M]` mel power of white (flat) and pink (1/f) noise through the config's own mel
    filterbank, each scaled to mean 1 over the bands."""
    basis = melscale.mel_filterbank(audio.sr, audio.n_fft, audio.n_mels, audio.fmin, audio.fmax)
    freqs = np.fft.rfftfreq(audio.n_fft, 1.0 / audio.sr)
    pink = 1.0 / np.maximum(freqs, freqs[1])
    profiles = np.stack([basis @ np.ones_like(freqs), basis @ pink])
    return torch.from_numpy(profiles / profiles.mean(axis=1, keepdims=True)).float()


def add_noise(mel: torch.Tensor, cfg: TrainConfig, generator: torch.Generator, audio: AudioConfig) -> torch.Tensor:
    """White or pink noise (even odds) added to a `noise_p` share of the clips at an SNR drawn
    from `noise_snr_db`: dB -> power, plus noise, -> dB, then the audio config's reference and
    `db_range` clamp again, so a noisy clip looks as if its noisy recording had been stored."""
    if cfg.noise_p == 0:
        return mel
    batch = mel.shape[0]
    on = torch.rand(batch, generator=generator) < cfg.noise_p
    low, high = cfg.noise_snr_db
    snr = low + (high - low) * torch.rand(batch, generator=generator)
    pink = torch.rand(batch, generator=generator) < 0.5
    return noise_by(mel, snr, pink, on, audio)


def noise_by(mel: torch.Tensor, snr_db: torch.Tensor, pink: torch.Tensor, on: torch.Tensor,
             audio: AudioConfig) -> torch.Tensor:
    """Noise at `snr_db[b]` (mean mel power of the clip over that of the noise) on clips `on[b]`;
    the others come back through the same dB -> power -> dB round trip (within 1e-4 dB), which
    costs less than selecting them. exp/log in place: each pass over the batch counts on a CPU."""
    device = mel.device
    power = mel.float().mul(math.log(10.0) / 10.0).exp_()  # 10^(dB / 10); stored dB >= -100, so > 0
    snr, on = snr_db.to(device, non_blocking=True), on.to(device, non_blocking=True)
    scale = power.mean(dim=(1, 2)) / torch.pow(10.0, snr / 10.0) * on
    profile = noise_profiles(audio)[pink.long()].to(device, non_blocking=True)  # [B, M]
    out = power.add_((profile * scale[:, None])[:, :, None]).log_().mul_(10.0 / math.log(10.0))
    if audio.db_reference == "clip_max":
        out -= out.amax(dim=(1, 2), keepdim=True)
    if audio.db_range > 0:
        torch.maximum(out, out.amax(dim=(1, 2), keepdim=True) - audio.db_range, out=out)
    return out.to(mel.dtype)


def augment_mels(mel: torch.Tensor, cfg: TrainConfig, generator: torch.Generator,
                 audio: AudioConfig) -> torch.Tensor:
    """Steps 1-5 of the module's order on stored `[B, M, T]` log-mels (dB)."""
    fresh = cfg.train_frames or cfg.shift_frames or cfg.noise_p or cfg.stretch != (1.0, 1.0) or cfg.warp != (1.0, 1.0)
    mel = mel.float() if fresh else mel  # once, not in every step
    mel = time_shift_crop(mel, cfg, generator)
    mel = time_stretch(mel, cfg, generator)
    mel = freq_warp(mel, cfg, generator, audio)
    mel = add_noise(mel, cfg, generator, audio)
    return random_eq(mel, cfg, generator)
