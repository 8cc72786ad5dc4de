"""Output paths checked before any work: a command that can only fail at its very end (a folder
where its CSV goes, a file where its run folder goes, a place it may not write) says so at once,
in one line, instead of after minutes of decoding or training. Nothing is created here."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from shared.errors import UsageError


def _existing_ancestor(path: Path) -> Path:
    """The nearest of `path`'s ancestors (or itself) that exists."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_writable(path: Path, flag: str) -> None:
    """`path` (a folder to create or fill) can be made and written, by this process."""
    here = _existing_ancestor(path)
    if not here.is_dir():
        raise UsageError(f"cannot write to {flag} {path}: {here} is a file, not a folder; choose a path under a folder")
    try:  # the one sure test (permissions, a read-only mount, a file system that takes no new files)
        fd, probe = tempfile.mkstemp(prefix=".melshard-write-test.", dir=here)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"cannot write to {flag} {path}: {exc.strerror} in {here}; choose a writable place") from None


def check_output_file(path: str | Path, flag: str = "--out", example: str = "out.csv") -> None:
    """Refuse an output file path that is a folder, lies under a file, or cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{flag} {path} is a folder; give the file to write, e.g. {path / example}")
    _check_writable(path.parent, flag)


def check_output_folder(path: str | Path, flag: str = "--out") -> None:
    """Refuse an output folder path that is a file, lies under a file, or cannot be written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path} is a file; give a folder (it is created if missing)")
    _check_writable(path, flag)


def check_outside(out: str | Path, source: str | Path, flag: str = "--out") -> None:
    """Refuse an output folder that is the source folder or inside it: its files would be listed
    as inputs by the next run (and mixed with the user's audio)."""
    out, source = Path(out).resolve(), Path(source).resolve()
    if source.is_dir() and (out == source or source in out.parents):
        raise UsageError(f"{flag} {out} is inside the source folder {source}; write the shards outside it, "
                         f"e.g. {flag} {source.parent / 'shards' / source.name}")
