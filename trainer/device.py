"""Where a run computes: the device, the mixed precision on it, and the loader processes."""

from __future__ import annotations

import torch

from shared.errors import UsageError
from shared.runtime import available_cores


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but no CUDA GPU is visible; use --device auto or cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def pick_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """auto: bf16 on CUDA where supported, else fp16 (with a GradScaler); off on CPU."""
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    if mode == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if mode == "fp16" and device.type != "cuda":
        raise UsageError("--amp fp16 needs a CUDA device; on CPU use --amp bf16 or off")
    return torch.bfloat16 if mode == "bf16" else torch.float16


def default_workers() -> int:
    """Loader processes per training process: every core but the one that steps the model."""
    return max(1, available_cores() - 1)
