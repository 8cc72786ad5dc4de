"""Atomic file writes: a temporary name beside the target, fsync, rename, fsync the folder.

A reader (or a rerun after a crash) sees either the old file or the complete new one, never a
half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO


def temp_path(path: Path) -> Path:
    """A hidden, process-unique temporary name in the target's folder (same file system)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | Path, backup: str | Path | None = None) -> Iterator[BinaryIO]:
    """Open a temporary file for binary writing; on success it replaces `path` atomically. With
    `backup`, the file `path` held until then (if any) is renamed to it first."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        with tmp.open("wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if backup is not None and path.exists():
            os.replace(path, backup)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_bytes(path: str | Path, data: bytes, backup: str | Path | None = None) -> None:
    """`data` written to `path` atomically (with `backup`: as `atomic_open`)."""
    with atomic_open(path, backup=backup) as handle:
        handle.write(data)


def readable(text: str) -> str:
    """`text` with the bytes of a file name that are not UTF-8 shown as `\\xNN` (`caf\\xe9.wav`).

    Linux file names are bytes: one from, say, a Windows zip can hold Latin-1. Python reads such
    a byte as a lone surrogate ('\\udce9'), which no UTF-8 file or terminal can take.
    """
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate no file name decodes to: shown as \uDXXX
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def text_bytes(text: str) -> bytes:
    """UTF-8 of `text`, with undecodable file-name bytes shown as `\\xNN` (`readable`): every CSV
    and text file the product writes is valid UTF-8, whatever names the inputs have."""
    return readable(text).encode("utf-8")


def json_bytes(obj: Any) -> bytes:
    """Deterministic JSON (sorted keys, 1-space indent): identical inputs give identical bytes."""
    return (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode("utf-8")


def write_json(path: str | Path, obj: Any) -> None:
    """`json_bytes(obj)` written atomically."""
    write_bytes(path, json_bytes(obj))
