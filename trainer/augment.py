"""Batch-level augmentation on the device: random equalisation, SpecAugment masks and MixUp.

All draw from a generator the caller seeds per step, so a resumed run draws the same numbers.
"""

from __future__ import annotations

import numpy as np
import torch

from shared.config import TrainConfig


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
    return mel.float() + curve[:, :, None].to(mel.device)


def _masks(count: int, width: int, size: int, batch: int, generator: torch.Generator) -> torch.Tensor:
    """[batch, size] booleans: `count` random spans of up to `width` positions per sample."""
    position = torch.arange(size)
    masked = torch.zeros(batch, size, dtype=torch.bool)
    for _ in range(count):
        span = torch.randint(0, width + 1, (batch,), generator=generator)
        start = (torch.rand(batch, generator=generator) * (size - span + 1)).long()
        masked |= (position >= start[:, None]) & (position < (start + span)[:, None])
    return masked


def spec_augment(x: torch.Tensor, cfg: TrainConfig, generator: torch.Generator) -> torch.Tensor:
    """Zero (the normalised mean) random mel-band and time spans of `[B, 1, M, T]` inputs."""
    if not (cfg.freq_masks or cfg.time_masks):
        return x
    batch, _, n_mels, frames = x.shape
    freq = _masks(cfg.freq_masks, cfg.freq_mask_width, n_mels, batch, generator).to(x.device)
    time = _masks(cfg.time_masks, cfg.time_mask_width, frames, batch, generator).to(x.device)
    return x.masked_fill(freq[:, None, :, None] | time[:, None, None, :], 0.0)
