"""The two classifiers: the seeds' CNN and a ResNet-9 (Myrtle / DAWNBench layout).

Both take a `[batch, 1, n_mels, frames]` log-mel of any size from `MIN_INPUT` up (global
pooling before the classifier); `width` scales every channel count so a model can run small on
a CPU.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from shared.config import AudioConfig
from shared.errors import UsageError


def _channels(base: int, width: float) -> int:
    return max(4, int(round(base * width)))


def conv_bn(c_in: int, c_out: int, pool: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn(channels, channels), conv_bn(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def centre_bands(x: torch.Tensor) -> torch.Tensor:
    """Each clip's mean over time taken from every mel band of `[B, 1, M, T]` (cepstral mean
    normalisation): a recording's fixed colouring (microphone, room, voice tilt) is a constant
    per band in log-mel, so it cancels; what changes over the clip (the word) stays. The mean
    takes in the floor frames that trimming and padding leave: leaving them out, or removing only
    the mean's smooth part, did no better on unseen FSDD speakers (one run each, BENCHMARKS.md)."""
    return x - x.mean(dim=-1, keepdim=True)


class SeedCNN(nn.Module):
    """Conv -> BN -> ReLU -> Pool blocks, then fully connected layers with dropout."""

    def __init__(self, n_classes: int, width: float = 1.0, dropout: float = 0.3, centre: bool = False):
        super().__init__()
        self.centre = centre
        c = [_channels(b, width) for b in (32, 64, 128, 256)]
        self.features = nn.Sequential(
            conv_bn(1, c[0], pool=True), conv_bn(c[0], c[1], pool=True),
            conv_bn(c[1], c[2], pool=True), conv_bn(c[2], c[3], pool=True),
            nn.AdaptiveAvgPool2d(1),
        )
        hidden = _channels(256, width)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(c[3], hidden), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(hidden, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(centre_bands(x) if self.centre else x))


class ResNet9(nn.Module):
    """prep 64; layer1 128 + residual; layer2 256; layer3 512 + residual; global pool; linear."""

    def __init__(self, n_classes: int, width: float = 1.0, dropout: float = 0.0, centre: bool = False):
        super().__init__()
        self.centre = centre
        c = [_channels(b, width) for b in (64, 128, 256, 512)]
        self.net = nn.Sequential(
            conv_bn(1, c[0]),
            conv_bn(c[0], c[1], pool=True), Residual(c[1]),
            conv_bn(c[1], c[2], pool=True),
            conv_bn(c[2], c[3], pool=True), Residual(c[3]),
            nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Dropout(dropout),
        )
        self.head = nn.Linear(c[3], n_classes, bias=False)
        self.scale = 0.125  # Myrtle's logit scaling: keeps early logits small

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.net(centre_bands(x) if self.centre else x)) * self.scale


# The class of every name in shared.config.MODELS (which the config, --model's choices and --help
# take; a test holds the two equal).
MODELS = {"cnn": SeedCNN, "resnet9": ResNet9}


# Each 2x2 max-pool halves both axes, rounding down: an input needs 2 ** pools bands and frames.
MIN_INPUT = {"cnn": 2 ** 4, "resnet9": 2 ** 3}


def check_input_size(name: str, audio: AudioConfig, frames: int) -> None:
    """A one-line UsageError, naming the fix, for mels too small for model `name` (which would
    fail deep inside the first forward pass)."""
    least = MIN_INPUT[name]
    if audio.n_mels >= least and frames >= least:
        return
    fixes = []
    if frames < least:
        fixes.append(f"preprocess with duration_s >= {(least - 1) * audio.hop_length / audio.sr:.2f} "
                     "(or a smaller hop_length)" if frames == audio.n_frames else f"use train_frames >= {least}")
    if audio.n_mels < least:
        fixes.append(f"preprocess with n_mels >= {least}")
    smaller = [other for other, size in MIN_INPUT.items() if size < least and min(audio.n_mels, frames) >= size]
    fixes += [f"use --model {other}" for other in smaller]
    raise UsageError(f"--model {name} needs mels of at least {least} bands x {least} frames, and these are "
                     f"{audio.n_mels} x {frames}: {', or '.join(fixes)}")


def model_args(n_classes: int, width: float, dropout: float, centre: bool = False) -> dict[str, Any]:
    """The constructor arguments recorded in checkpoints (so predict rebuilds the same model)."""
    return {"n_classes": n_classes, "width": width, "dropout": dropout, "centre": centre}


def build_model(name: str, args: dict[str, Any]) -> nn.Module:
    return MODELS[name](**args)
