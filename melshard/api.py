"""preprocess, train, load_model, predict and features as functions that return results.

They run the same code as the two command lines (`preprocess.pipeline.run`, `trainer.loop.train`,
`trainer.predict`), so a notebook and `python -m ...` make the same shards, runs and predictions.
Mistakes raise the project's exceptions with the one line the command line would print:
`UsageError` (arguments, config, layout), `DataError` (damaged or unusable data; `ShardError` is
one), `AudioError` (a file or array that gives no features).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console

from melshard.loader import Shards
from shared.audio import array_to_mel, file_to_mel
from shared.config import AudioConfig, PreprocessConfig, TrainConfig, from_dict, load_toml, to_dict
from shared.errors import DataError, UsageError
from shared.interrupt import STOP_SIGNALS, StopRequest, main_process_interrupts
from shared.location import location
from shared.manifest import Manifest
from shared.rejections import rejections_frame
from shared.sources import Clip, Rejection, drop_duplicates
from trainer.options import PredictOptions

# ---------------------------------------------------------------------------------------------
# preprocess


@dataclass(frozen=True)
class PreprocessResult:
    """What a preprocessing run made: `out` now holds the shards, manifest.json and errors.csv."""

    out: Path | str
    manifest: Manifest  # what out/manifest.json holds (`.to_dict()`: its JSON object)
    errors: pd.DataFrame  # path, stage, reason, detail: one row per rejected input
    seconds: float
    skipped_shards: int  # finished shards of an earlier run that were verified and kept

    @property
    def shards(self) -> Shards:
        return Shards(self.out)


# A library call differs from the command line in two defaults, on purpose: it returns a frame,
# whose probability columns are wanted, and decodes in the caller's process unless asked for more.
# Every other default is `PredictOptions`'s.
API = replace(PredictOptions(), jobs=1, probabilities=True)


def _config_data(config: PreprocessConfig | Mapping[str, Any] | str | Path | None) -> dict[str, Any]:
    """A config in the TOML layout (for preprocessing: top-level keys, `audio` and `augment` tables)."""
    if config is None:
        return {}
    if isinstance(config, PreprocessConfig):
        return to_dict(config)
    if isinstance(config, Mapping):
        return copy.deepcopy(dict(config))
    return load_toml(config)


def preprocess(src: str | Path, out: str | Path, *, test: str | Path | None = None,
               config: PreprocessConfig | Mapping[str, Any] | str | Path | None = None, jobs: int | None = None,
               progress: bool | None = None, overwrite: bool = False, **overrides: Any) -> PreprocessResult:
    """Preprocess `src` (class folders or a CSV) into shards in `out`, as `python -m preprocess`.

    `config` is a `PreprocessConfig`, a dict or a TOML file in the `--config` layout; `overrides`
    win over it: any `PreprocessConfig` field (`val_fraction`, `seed`, `shard_size`, ...), any
    `AudioConfig` field (`sr`, `duration_s`, `n_mels`, `n_fft`, `segment`, ...), any
    `AugmentConfig` field, and `augment_copies`. Rerunning resumes; an `out` made with another
    config raises `UsageError` unless `overwrite`. A run that wrote nothing, or rejected more than
    `max_rejected` of its inputs, raises `DataError`. A progress bar shows with `progress=True`,
    or by default on a terminal (never with `progress=False`); warnings go to stderr.
    """
    from preprocess.pipeline import run
    from preprocess.settings import failure, resolve_options

    given = {"src": str(src), "out": str(out), "test": str(test) if test else None, "jobs": jobs,
             "overwrite": overwrite or None, **overrides}
    opts, cfg = resolve_options(_config_data(config), given)
    console = Console(stderr=True, force_terminal=True if progress else False if progress is False else None)
    console.quiet = not console.is_terminal  # progress=None: a bar on a terminal, else nothing
    with main_process_interrupts():  # Ctrl-C stops the run without a traceback from every worker
        result = run(opts, cfg, console)
    problem = failure(result.manifest, cfg.max_rejected, opts.out)
    if problem:
        raise DataError(problem)
    return PreprocessResult(opts.out, result.manifest, rejections_frame(result.errors),
                            result.seconds, result.skipped_shards)


# ---------------------------------------------------------------------------------------------
# train


@dataclass(frozen=True)
class TrainResult:
    """A finished (or stopped) training run in `run`."""

    run: Path
    metrics: pd.DataFrame  # RUN/metrics.csv: one row per epoch
    best: Path  # RUN/best.pt: the checkpoint predict and load_model use
    last: Path  # RUN/last.pt: where `train(..., resume=True)` continues
    status: int  # 0 done; 128 + signal number when SIGTERM or Ctrl-C stopped it after a checkpoint
    config: TrainConfig


def train(shards: str | Path | Shards, out: str | Path, *,
          config: TrainConfig | Mapping[str, Any] | str | Path | None = None, resume: bool | str = False,
          on_bad_shard: str = API.on_bad_shard, stop_signals: Sequence[str] = STOP_SIGNALS,
          **overrides: Any) -> TrainResult:
    """Train a model on `shards` into the run folder `out`, as `python -m trainer train`.

    `config` is a `TrainConfig`, a dict or a TOML file of `TrainConfig` keys (as `--config`);
    `overrides` win over it: any `TrainConfig` field (`model="cnn"`, `width=0.5`, `epochs=10`,
    `batch_size=32`, `num_workers=1`, `device="cpu"`, ...); an unknown one raises `UsageError`.
    `resume=True` continues `out` from its last checkpoint (mid-epoch included) and refuses a
    folder no run has started in; `resume="auto"` continues a run if `out` holds one and starts
    it otherwise. Each of `stop_signals` (in the main thread) saves a checkpoint and returns
    with `status` 128 + the signal's number.
    """
    from trainer import checkpoint
    from trainer.loop import train as train_run

    where = shards.location if isinstance(shards, Shards) else location(str(shards))
    data = to_dict(config) if isinstance(config, TrainConfig) else _config_data(config)
    data.update(overrides)
    cfg = from_dict(TrainConfig, data)
    run = Path(out)
    if resume not in (True, False, "auto"):
        raise UsageError(f"resume must be True, False or 'auto', got {resume!r}")
    try:
        stop = StopRequest(stop_signals)
    except ValueError as exc:
        raise UsageError(f"stop_signals: {exc}") from None
    with stop:
        status = train_run(where, run, cfg, resume, set(data), on_bad_shard, stop)
    metrics = pd.read_csv(run / "metrics.csv") if (run / "metrics.csv").exists() else pd.DataFrame()
    return TrainResult(run, metrics, run / checkpoint.BEST, run / checkpoint.LAST, status, cfg)


# ---------------------------------------------------------------------------------------------
# inference


def load_model(run: str | Path | TrainResult, device: str = API.device, *, which: str = "best",
               tta: bool | str = False):
    """The trained model of a run as a `Predictor`: `run` is a run folder (its `best.pt`, or
    `last.pt` with `which="last"`), a `TrainResult`, or a checkpoint file itself (`run.best`,
    `"runs/cnn/last.pt"`). The `Predictor` has `.model` (eval mode), `.labels`, `.audio` (an
    `AudioConfig`) and `.probabilities(mel)`: class probabilities `[B, C]` (a torch tensor on the
    CPU) for mels `[B, n_mels, n_frames]` of the model's `audio` config as `features` makes them
    (a numpy array or a tensor of any float dtype, rounded to float16 as the shards store them),
    or `[C]` for one mel `[n_mels, n_frames]`; another shape raises `UsageError`.
    `tta`: average over views of each clip, "shift" (time shifts; True means it) or "warp"
    (frequency warps of 10% either way)."""
    from trainer.inference import predictor_at

    if which not in ("best", "last"):
        raise UsageError(f"which must be 'best' or 'last', got {which!r}")
    return predictor_at(_checkpoint(run, which), device, tta)


def _checkpoint(run: Any, which: str) -> Path:
    """The checkpoint file a run argument names: `best.pt` (or `last.pt`) of a run folder or a
    `TrainResult`, or a checkpoint file itself."""
    from trainer import checkpoint

    name = checkpoint.BEST if which == "best" else checkpoint.LAST
    if isinstance(run, TrainResult):
        return run.run / name
    if isinstance(run, Shards):
        raise UsageError(f"{run.location} is a shard folder, not a training run: pass the run folder "
                         "(train's out) or its best.pt")
    if not isinstance(run, (str, Path)):
        raise UsageError(f"a run is a run folder, a checkpoint file (best.pt / last.pt), a TrainResult or a model "
                         f"from load_model, got {type(run).__name__}")
    path = Path(run)
    if not (path.is_file() or (path.suffix == ".pt" and not path.is_dir())):
        return path / name
    if which == "last" and path.name != checkpoint.LAST:
        raise UsageError(f"which='last' picks last.pt of a run folder, and {run} is a checkpoint file itself; "
                         "pass the run folder, or the last.pt file")
    return path




def predict(run: Any, inputs: str | Path | Shards | Sequence[str | Path], *, split: str = API.split,
            device: str = API.device, tta: bool | str = False, jobs: int = API.jobs, aggregate: str = API.aggregate,
            probabilities: bool = API.probabilities, allow_missing: bool = API.allow_missing,
            on_bad_shard: str = API.on_bad_shard, adapt_bn: bool = API.adapt_bn) -> pd.DataFrame:
    """Predict `inputs` with a run (a run folder, a checkpoint file such as `run.best`, a
    `TrainResult`, or a model from `load_model`).

    `inputs` is a shard folder or a `Shards` (its `split`), an audio folder, a CSV with a `path`
    column, or a list of audio files. Returns one row per input: `filename`, `label` and, with
    `probabilities`, one column per class, sorted by filename (the rows of `python -m trainer
    predict --probabilities`). Inputs that give no features, and each repeat of a file listed
    earlier (`duplicate_path`), raise `DataError` unless `allow_missing`; then they are in
    `frame.attrs["errors"]` (path, stage, reason, detail).
    `adapt_bn` first re-estimates the model's BatchNorm statistics on these inputs (`--adapt-bn`;
    a model passed in is changed in place, its `adapted` field says on how many clips).
    """
    from trainer.inference import Predictor, by_file, predict_files, predict_shards
    from trainer.predict import predict_source, submission_frame

    predictor = run if isinstance(run, Predictor) else load_model(run, device, tta=tta)
    if isinstance(inputs, Shards):
        predicted = predict_shards(predictor, inputs.location, split, on_bad_shard, adapt=adapt_bn)
    elif isinstance(inputs, (str, Path)):
        predicted = predict_source(predictor, location(str(inputs)),
                                   PredictOptions(split=split, jobs=jobs, on_bad_shard=on_bad_shard,
                                                  adapt_bn=adapt_bn))
    else:  # a file given twice is predicted once; the repeat is a `duplicate_path` error, as from a CSV
        repeated: list[Rejection] = []
        clips = drop_duplicates([Clip(str(p), str(p), None) for p in inputs], repeated)
        predicted = predict_files(predictor, [(c.path, c.rel, None, None) for c in clips], jobs, adapt=adapt_bn)
        predicted = replace(predicted, rejected=repeated + predicted.rejected)
    files, _ = by_file(predicted, aggregate)
    if files.rejected and not allow_missing:
        first = files.rejected[0]
        raise DataError(f"{len(files.rejected)} input(s) could not be predicted, e.g. {first.path}: "
                        f"{first.reason} ({first.detail}); pass allow_missing=True to get the others")
    frame = submission_frame(predictor.labels, files, probabilities).reset_index(drop=True)
    frame.attrs["errors"] = rejections_frame(files.rejected, sort=True)
    return frame


def evaluate(run: str | Path | TrainResult, data: str | Path | Shards, *, split: str = "val",
             device: str = API.device, tta: bool | str = False, jobs: int = API.jobs, aggregate: str = API.aggregate,
             on_bad_shard: str = API.on_bad_shard, adapt_bn: bool = API.adapt_bn) -> dict:
    """Score a run (a run folder or a `TrainResult`) on labeled data and write RUN/report/, as
    `melshard evaluate`: `data` is a shard folder or a `Shards` (its `split`, default val), or
    labeled raw audio (class folders, or a CSV with path,label). Returns the metrics that
    RUN/report/metrics.json holds (accuracy, macro_f1, balanced_accuracy, per-class figures, ...)."""
    from trainer.predict import run_evaluate

    folder = Path(run.run if isinstance(run, TrainResult) else run)
    source = data.location if isinstance(data, Shards) else location(str(data))
    opts = PredictOptions(split=split, device=device, tta="shift" if tta is True else tta or "", jobs=jobs,
                          aggregate=aggregate, on_bad_shard=on_bad_shard, adapt_bn=adapt_bn)
    with main_process_interrupts():
        return run_evaluate(folder, source, opts)


def export(run: Any, out: str | Path, *, network_only: bool = False) -> Path:
    """Write a run's best model (a run folder, a checkpoint file such as `run.best`, or a
    `TrainResult`) to `out` as one ONNX file, as `melshard export`: input `waveform`, mono
    float32 `[batch, samples]` at the run's sample rate (any length; decode and resample with
    soundfile + soxr first), outputs `probabilities` `[batch, classes]` and `silent` `[batch]`;
    `metadata_props` hold the labels and the audio config as JSON. `network_only`: the network
    alone, its input the normalised log-mel `[batch, 1, n_mels, frames]`. Needs the `export`
    extra (onnx); a run whose audio config no graph reproduces (`segment`) raises `UsageError`."""
    from trainer.export import export as export_onnx

    if not str(out):
        raise UsageError("export needs an output file, e.g. out='model.onnx'")
    return export_onnx(_checkpoint(run, "best"), Path(out), network_only)["path"]


def features(path_or_array: str | Path | np.ndarray, audio_config: AudioConfig | Mapping[str, Any] | None = None,
             *, sr: int | None = None) -> np.ndarray:
    """The log-mel features (float16 `[n_mels, frames]`) of a file, or of samples at `sr` Hz,
    made by the one audio -> mel function that made the shards; pass the shards' or the model's
    `audio` config (`Shards(...).audio`, `load_model(...).audio`). An array is mono `[samples]`
    or `[samples, channels]` as soundfile reads it (mixed to mono); one with more channels than
    samples raises `UsageError`: pass librosa's `[channels, samples]` as `y.T`. A file or array
    that gives no features raises `AudioError` (its `reason`: empty_file, undecodable, silent, ...)."""
    if audio_config is None:
        cfg = AudioConfig()
    elif isinstance(audio_config, AudioConfig):
        cfg = audio_config
    else:
        cfg = from_dict(AudioConfig, dict(audio_config), "audio")
    if isinstance(path_or_array, (str, Path)):
        if not Path(path_or_array).is_file():
            raise UsageError(f"{path_or_array} is not a file")
        return file_to_mel(path_or_array, cfg)
    if sr is None:
        raise UsageError("features() of an array needs its sample rate: features(y, audio_config, sr=...)")
    return array_to_mel(np.asarray(path_or_array), sr, cfg)


__all__ = ["PreprocessResult", "TrainResult", "export", "features", "load_model", "predict", "preprocess", "train"]
