"""melshard from Python: preprocess a corpus, load its shards into any training loop, train,
predict. Every call returns a result (or raises one of the project's exceptions with one line
saying what to fix) instead of printing and exiting as the command lines do.

    import melshard
    result = melshard.preprocess("corpus/", "shards/mydata", sr=16000, duration_s=2.0)
    loader = melshard.Shards("shards/mydata").loader("train", batch_size=32)
    for mel, label in loader: ...                     # float32 [B, 1, M, T], int64 [B]
    run = melshard.train("shards/mydata", "runs/cnn", epochs=10)
    frame = melshard.predict(run, "test_audio/")      # filename, label, one column per class
    metrics = melshard.evaluate(run, "shards/mydata")  # accuracy, macro_f1, ...; writes RUN/report/
    melshard.export(run, "model.onnx")                # waveform -> probabilities, for onnxruntime

The names below are the public surface; everything else in preprocess/, trainer/ and shared/
may change. See examples/notebook.py for a whole session.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from shared.config import AudioConfig, AugmentConfig, PreprocessConfig, TrainConfig
from shared.decode import AudioError
from shared.errors import ConfigError, DataError, MelshardError, UsageError
from shared.shardio import ShardError

# The functions and loaders load on first use (PEP 562): `import melshard`, and the command
# line built on it, do not pay for torch until something needs it.
LAZY = {**dict.fromkeys(("PreprocessResult", "TrainResult", "evaluate", "export", "features", "load_model",
                         "predict", "preprocess", "train"), "melshard.api"),
        **dict.fromkeys(("ShardLoader", "Shards"), "melshard.loader")}

if TYPE_CHECKING:
    from melshard.api import (
        PreprocessResult,
        TrainResult,
        evaluate,
        export,
        features,
        load_model,
        predict,
        preprocess,
        train,
    )
    from melshard.loader import ShardLoader, Shards


def __getattr__(name: str):
    if name not in LAZY:
        raise AttributeError(f"module 'melshard' has no attribute {name!r}")
    value = getattr(importlib.import_module(LAZY[name]), name)
    globals()[name] = value
    return value


__all__ = [
    "AudioConfig",
    "AudioError",
    "AugmentConfig",
    "ConfigError",
    "DataError",
    "MelshardError",
    "PreprocessConfig",
    "PreprocessResult",
    "ShardError",
    "ShardLoader",
    "Shards",
    "TrainConfig",
    "TrainResult",
    "UsageError",
    "evaluate",
    "export",
    "features",
    "load_model",
    "predict",
    "preprocess",
    "train",
]
