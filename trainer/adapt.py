"""Test-time BatchNorm adaptation (AdaBN; Li et al., "Revisiting Batch Normalization for
Practical Domain Adaptation", 2016): before predicting a set of clips from a new domain (an
unseen speaker, microphone or room), every BatchNorm layer's running mean and variance are
re-estimated on that set's own inputs, so each layer normalises them as it normalised the
training data. No label is used and no weight changes; the predictions then depend on the set
as a whole, which should hold many clips of every class (a set of one class, or a handful of
clips, shifts the statistics the wrong way).

On unseen FSDD speakers it lifts the six-fold mean by 4 to 6 points (BENCHMARKS.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import nn

from shared.errors import UsageError

ADAPT_CLIPS = 4096  # at most this many clips estimate the statistics (spread over the set)
MIN_CLIPS = 32  # fewer cannot estimate a per-channel variance worth using
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def batchnorms(model: nn.Module) -> list[nn.Module]:
    return [module for module in model.modules() if isinstance(module, _NORMS)]


@torch.no_grad()
def adapt_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor], autocast: torch.dtype | None = None) -> int:
    """Replace the running statistics of `model`'s BatchNorm layers by those of `batches` (the
    model's inputs, already normalised as for prediction); the number of clips seen.

    The statistics are the average over batches (PyTorch's cumulative average, `momentum=None`),
    so pass batches of one size. Only the BatchNorm layers run in training mode: dropout stays
    off and nothing else changes. The model is left in eval mode. With fewer than `MIN_CLIPS`
    clips the model is left as it was and a `UsageError` says so.
    """
    norms = batchnorms(model)
    if not norms:
        raise UsageError("the model has no BatchNorm layer to adapt; predict without --adapt-bn")
    saved = [{k: v.clone() for k, v in m.state_dict().items()} for m in norms]
    momenta = [m.momentum for m in norms]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    seen = 0
    device = next(model.parameters()).device
    try:
        for x in batches:
            with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
                model(x)
            seen += x.shape[0]
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
            m.eval()
    if seen < MIN_CLIPS:
        for m, state in zip(norms, saved):
            m.load_state_dict(state)
        raise UsageError(f"--adapt-bn needs at least {MIN_CLIPS} clips to estimate BatchNorm statistics "
                         f"(got {seen}); predict without it")
    return seen


def rebatch(mels: Iterable[torch.Tensor], size: int, limit: int) -> Iterator[torch.Tensor]:
    """The clips of `mels` (batches of any sizes) as batches of exactly `size` (the last one
    smaller), at most `limit` clips in all: every batch then weighs as much in the average."""
    pending: list[torch.Tensor] = []
    held = taken = 0
    for batch in mels:
        batch = batch[: limit - taken]
        pending.append(batch)
        held += batch.shape[0]
        taken += batch.shape[0]
        while held >= size:
            whole = torch.cat(pending)
            yield whole[:size]
            pending, held = [whole[size:]], held - size
        if taken >= limit:
            break
    if held:
        yield torch.cat(pending)
