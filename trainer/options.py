"""How `predict` and `evaluate` run: one dataclass whose option fields are both commands' flags
(`shared.options.add_options`) and the Python API's keywords, each default written once, here.

Light on purpose (no torch): the command line is built from it before anything heavy loads.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.config import AGGREGATES, DEFAULT_AGGREGATE, DEVICES, option
from shared.integrity import POLICIES

ADAPT_HELP = ("re-estimate the BatchNorm statistics on these inputs before predicting (a new domain: unseen "
              "speakers, another microphone); needs many clips of every class")

# The option fields `predict` and `evaluate` both take; the other option fields are predict's.
SHARED = ("device", "jobs", "tta", "adapt_bn", "aggregate", "on_bad_shard")


@dataclass(frozen=True)
class PredictOptions:
    """How to predict and what to write (the model and its features come from the run's checkpoint)."""

    split: str = "test"  # the split of a shard folder (evaluate's command line defaults to val)
    labeled: bool = False  # raw audio: labels from class folders or a label column (to evaluate)
    which: str = "best"  # the checkpoint: best.pt or last.pt
    device: str = option("auto", "where the model runs (default auto: cuda when available, else cpu)",
                         choices=DEVICES)
    jobs: int = option(0, "processes decoding raw audio into features (default 0: all cores; unused for shards)")
    tta: str = option("", "average the probabilities of three views of each clip: time shifts (shift, the "
                          "default of --tta alone) or frequency warps of 10%% either way (warp) (default: off)",
                      choices=("shift", "warp"), const="shift")
    adapt_bn: bool = option(False, ADAPT_HELP)
    aggregate: str = option(DEFAULT_AGGREGATE, "how the windows of a segmented recording combine into one "
                                               "prediction: mean, max, or confidence (a mean weighted by each "
                                               "window's confidence)", choices=AGGREGATES)
    on_bad_shard: str = option("fail", "a shard whose size or sha256 differs from the manifest: stop (default "
                                       "fail) or go on without it, reporting the samples lost", choices=POLICIES)
    probabilities: bool = option(False, "add one probability column per class")
    allow_missing: bool = option(False, "exit 0 even if some inputs fail")
    windows: bool = option(False, "also write OUT.windows.csv, one row per window")
