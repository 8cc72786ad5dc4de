"""How a preprocessing run is configured: a TOML file in the `--config` layout (top-level keys,
`[audio]` and `[augment]` tables) and flat options (the command line's flags, the Python API's
keywords) merged into `RunOptions` and a validated `PreprocessConfig`; and when a finished run
counts as failed. Shared by the command line, the Python API and the demo.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.config import AudioConfig, AugmentConfig, PreprocessConfig, check_type, from_dict
from shared.errors import ConfigError, UsageError
from shared.location import location
from shared.manifest import Manifest


@dataclass(frozen=True)
class RunOptions:
    """How to run (not what to make: that is `PreprocessConfig`, recorded in the manifest)."""

    src: Path
    out: Path | str  # a folder, or an fsspec URL such as s3://bucket/shards
    test: Path | None = None
    jobs: int = 0  # 0: every available core
    overwrite: bool = False
    backend: str = "local"  # "local": joblib's loky processes; "dask": a dask.distributed cluster
    scheduler: str | None = None  # the dask scheduler's address, e.g. tcp://10.0.0.5:8786



RUN_TYPES = {"src": str, "out": str, "test": str, "jobs": int, "overwrite": bool, "backend": str, "scheduler": str}
RUN_KEYS = tuple(RUN_TYPES)

# Flat option names -> (table, key) of the TOML layout; any other name is a top-level key. The
# command line gives some of them, the Python API (`melshard.preprocess(**overrides)`) any of them.
NESTED: dict[str, tuple[str, str]] = {
    **{f.name: ("audio", f.name) for f in dataclasses.fields(AudioConfig)},
    **{f.name: ("augment", f.name) for f in dataclasses.fields(AugmentConfig) if f.name != "copies"},
    "augment_copies": ("augment", "copies"),
}
CONFIG_OPTIONS = (PreprocessConfig, AudioConfig, AugmentConfig)  # the configs whose options are flags


def flat_name(config: type):
    """Field name -> its flat option name (`NESTED`) for one of the `CONFIG_OPTIONS`."""
    table = {AudioConfig: "audio", AugmentConfig: "augment"}.get(config)
    return lambda field: next((flat for flat, where in NESTED.items() if where == (table, field)), field)


# `[audio]` keys a TOML file may also give at the top level: the long-recording settings. Every
# other `[audio]` or `[augment]` key at the top level is refused with the table it belongs in.
TOP_LEVEL_AUDIO = ("segment", "segment_hop_s", "min_segment_s", "silence_dbfs")


def _lift_top_level(data: dict[str, Any]) -> None:
    """Move `TOP_LEVEL_AUDIO` keys given at the top level of a TOML-shaped dict into its `audio`
    table; refuse one given in both places, and any other audio or augment key at the top level."""
    for key in TOP_LEVEL_AUDIO:
        if key not in data:
            continue
        if isinstance(data["audio"], dict):
            if key in data["audio"]:
                raise ConfigError(f"{key} is given both at the top level and under [audio]; keep one")
            data["audio"][key] = data.pop(key)
    tables = {**{f.name: "audio" for f in dataclasses.fields(AudioConfig)},
              **{f.name: "augment" for f in dataclasses.fields(AugmentConfig)}}
    misplaced = [key for key in data if key in tables]
    if misplaced:
        key = misplaced[0]
        raise ConfigError(f"{key} belongs under [{tables[key]}] in the config, not at the top level (of the "
                          f"[audio] keys only {', '.join(TOP_LEVEL_AUDIO)} may also be at the top level)")



def resolve_options(data: dict[str, Any], given: dict[str, Any], backend: str | None = None,
                    scheduler: str | None = None) -> tuple[RunOptions, PreprocessConfig]:
    """TOML-shaped `data` (top-level keys, `[audio]` and `[augment]` tables) overridden by the flat
    `given` options (None: not given; names as in `NESTED`) -> run options and a validated config."""
    data.setdefault("audio", {})
    data.setdefault("augment", {})
    _lift_top_level(data)
    for key, value in given.items():
        if value is None:
            continue
        if key in NESTED:
            table, name = NESTED[key]
            data[table][name] = value
        else:
            data[key] = value
    run_values = {key: data.pop(key) for key in RUN_KEYS if key in data}
    for key, value in run_values.items():  # a TOML `overwrite = "no"` must not read as true
        if not isinstance(value, os.PathLike):
            check_type(key, value, RUN_TYPES[key])
    cfg = from_dict(PreprocessConfig, data)
    backend = backend or run_values.get("backend") or "local"  # the command line wins over the TOML
    given_scheduler, scheduler = scheduler, scheduler or run_values.get("scheduler")
    if backend not in ("local", "dask"):
        raise UsageError(f"backend must be local or dask, got {backend!r}")
    if not run_values.get("src"):
        raise UsageError("no SRC given; pass a folder of class subfolders or a CSV (or src in --config)")
    src = Path(run_values["src"])
    out = location(str(run_values.get("out") or Path("shards") / src.stem))  # a Path, or a URL as given
    jobs = int(run_values.get("jobs") or 0)
    if jobs < 0:
        raise UsageError(f"--jobs must be >= 1, got {jobs}")
    test = Path(run_values["test"]) if run_values.get("test") else None
    if backend == "dask":
        if not scheduler:
            raise UsageError("--backend dask needs --scheduler tcp://HOST:PORT (the `dask scheduler` address)")
        # Cluster workers resolve paths on their own machines: hand them absolute ones.
        src, test = src.resolve(), test.resolve() if test else None
        out = out.resolve() if isinstance(out, Path) else out
    elif given_scheduler:
        raise UsageError("--scheduler is for --backend dask; add --backend dask or drop --scheduler")
    else:
        scheduler = None  # a TOML scheduler waits for backend = "dask"
    return RunOptions(src, out, test, jobs, bool(run_values.get("overwrite")), backend, scheduler), cfg


def failure(manifest: Manifest, max_rejected: float, out: Path | str) -> str | None:
    """Why a finished run counts as failed (nothing written, or too many inputs rejected), or None.

    Hidden files are rejected by rule, unread: they are left out of the rejected share."""
    inputs = manifest.inputs
    if inputs.written == 0:
        return f"no sample was written; see {out}/errors.csv"
    share = (inputs.rejected - inputs.hidden) / (inputs.total - inputs.hidden)
    if share > max_rejected:
        aside = " (hidden files aside)" if inputs.hidden else ""
        return (f"{share:.0%} of inputs were rejected{aside} (more than --max-rejected "
                f"{max_rejected}); see {out}/errors.csv")
    return None


# Small, fast features for the synthetic demo corpus (16 kHz clips of at most 2 s).
DEMO_CONFIG = PreprocessConfig(
    audio=AudioConfig(sr=16000, duration_s=1.5, n_fft=512, hop_length=128, n_mels=64),
    shard_size=200,
)
