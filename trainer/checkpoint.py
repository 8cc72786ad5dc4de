"""Checkpoints: atomic saves with one backup, weights-only loads, and what they must hold.

`last.pt` is replaced atomically (temporary file, fsync, rename) and its previous version is
kept as `last.prev.pt`, so a crash while saving, or a file truncated afterwards, costs at most
one checkpoint interval: `load_latest` falls back to the backup with a warning.
"""

from __future__ import annotations

import io
import pickle
import sys
import zipfile
from pathlib import Path
from typing import Any

import torch

from shared.atomic import write_bytes
from shared.errors import DataError, UsageError

FORMAT = "melshard-checkpoint/1"
LAST, BACKUP, BEST = "last.pt", "last.prev.pt", "best.pt"


def save(path: str | Path, payload: dict[str, Any], keep_backup: bool = False) -> None:
    """Write `payload` to `path` atomically; with `keep_backup`, the old file becomes *.prev.pt."""
    path = Path(path)
    # Serialised in memory first: torch's zip writer, when a write to the file fails (a full
    # disk), raises a second, unrelated RuntimeError while closing the archive that hides the
    # OSError. A plain write of the finished bytes raises the OSError itself.
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **payload}, buffer)
    write_bytes(path, buffer.getbuffer(), backup=path.with_name(BACKUP) if keep_backup else None)


def load(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with `weights_only=True`: tensors and plain values, never code. A missing
    file is a `UsageError`, a damaged or foreign one a `DataError`."""
    path = Path(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UsageError(f"{path} not found; train first (python -m trainer train ...)") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path} is not a loadable melshard checkpoint (refused or corrupt: "
                         f"{first[:160]})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise DataError(f"{path} is not a {FORMAT} checkpoint; it was made by another program "
                         "or an incompatible version")
    return checkpoint


def load_latest(run: Path) -> dict[str, Any]:
    """`last.pt`, or its backup when `last.pt` is missing or damaged (with a warning)."""
    try:
        return load(run / LAST)
    except (UsageError, DataError) as problem:
        if not (run / BACKUP).exists():
            raise
        print(f"warning: {problem}; resuming from the previous checkpoint {run / BACKUP}",
              file=sys.stderr)
        return load(run / BACKUP)
