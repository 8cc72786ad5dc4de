"""The resume rules: whether `--resume` continues a run, and what it must agree with.

- `--resume` needs a run folder that a run has started in: a folder that does not exist (a
  typo'd `runs/nope`) is refused rather than silently trained from scratch. `--resume auto` is
  the form for a job that is requeued: it continues the run if there is one and starts it
  otherwise, on its first start and every later one alike.
- A run folder with no checkpoint yet starts from the beginning (a run killed before its first
  checkpoint has nothing to lose); one that holds a run is refused without `--resume`.
- The shards must be the ones the checkpoint was trained on (the manifest's fingerprint: shard
  contents, labels, audio config), and options given explicitly must not contradict the
  checkpoint's, except those in `MAY_CHANGE`.
- The damaged shards left out (`--on-bad-shard skip`) must be the ones left out before.

Resuming on another number of processes or loader workers is `trainer/elastic.py`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from shared.config import TrainConfig, from_dict, to_dict
from shared.errors import UsageError
from shared.integrity import BadShard
from shared.manifest import Manifest
from trainer import checkpoint

MAY_CHANGE = {"device", "batch_size", "num_workers"}  # options that may differ from the checkpoint's
AUTO = "auto"  # `--resume auto`: continue the run if there is one, else start it
STARTED = (checkpoint.LAST, checkpoint.BACKUP, "config.json")  # what a run leaves once it has set up


def check_resumable(run: Path, resume: bool | str) -> None:
    """Refuse `--resume` (not `--resume auto`) on a folder that no run has started in, before
    anything creates it."""
    if resume is True and not (run.is_dir() and any((run / name).exists() for name in STARTED)):
        what = "does not exist" if not run.exists() else "is not a folder" if not run.is_dir() else "holds no run"
        raise UsageError(f"--resume: {run} {what}, so there is nothing to continue; check the path, or pass "
                         "--resume auto to start the run there when it holds none yet (as a requeued job does)")


def checkpoint_to_resume(run: Path, resume: bool | str) -> dict[str, Any] | None:
    """The checkpoint `run` continues from, or None for a run that starts from the beginning."""
    if resume and not any((run / name).exists() for name in (checkpoint.LAST, checkpoint.BACKUP)):
        # Killed before its first checkpoint: nothing to lose, so --resume starts from the beginning.
        print(f"no checkpoint in {run} yet; starting from the beginning", file=sys.stderr)
        return None
    if resume:
        return checkpoint.load_latest(run)
    if (run / checkpoint.LAST).exists():
        raise UsageError(f"{run} already holds a run; pass --resume to continue it or choose another --out")
    return None


def resumed_config(ckpt: dict[str, Any], manifest: Manifest, cfg: TrainConfig, explicit: set[str]) -> TrainConfig:
    """The checkpoint's configuration, with the options that may change taken from `cfg`; refuses
    other shards, or an explicit option that differs from the checkpoint's."""
    if ckpt["manifest_fingerprint"] != manifest.fingerprint():
        what = "labels differ" if list(ckpt["labels"]) != list(manifest.labels) else \
            "audio config differs" if ckpt["audio"] != to_dict(manifest.audio) else "shard contents differ"
        raise UsageError(f"cannot resume: these shards are not the ones the checkpoint was trained on "
                         f"({what}); point at the original shard folder or start a new --out")
    saved = from_dict(TrainConfig, ckpt["train_config"])
    for key in sorted(explicit - MAY_CHANGE):
        if getattr(cfg, key) != getattr(saved, key):
            raise UsageError(f"cannot resume: --{key.replace('_', '-')} {getattr(cfg, key)} differs from "
                             f"the checkpoint's {getattr(saved, key)}; drop it to resume, or start a new --out")
    # The device may change between runs (e.g. resume a CPU run on a GPU machine), and so may the
    # layout (see trainer/elastic.py).
    return TrainConfig(**{**to_dict(saved), **{key: getattr(cfg, key) for key in MAY_CHANGE & explicit}})


def check_same_damage(ckpt: dict[str, Any], lost: dict[str, list[BadShard]], shards: Path) -> None:
    """Refuse to resume when the damaged shards left out differ from those the checkpoint left out."""
    before = sorted(ckpt.get("skipped_shards", []))
    now = sorted(b.name for bad in lost.values() for b in bad)
    if before != now:
        raise UsageError(f"cannot resume exactly: the damaged shards are now {now or 'none'}, "
                         f"the checkpoint was trained without {before or 'none'}; rerun preprocess on "
                         f"{shards} to repair them, or start a new --out")
