"""Where a shard folder lives: a local folder, an http(s) URL, an fsspec URL (s3://, gs://, ...)
or a WebDataset-style `pipe:` command with `{}` where the file name goes.

    /data/shards                         local folder
    https://host/shards/                 GET https://host/shards/manifest.json, .../train-000000.tar
    s3://bucket/shards                   through fsspec (pip install s3fs; gcsfs for gs://)
    pipe:aws s3 cp s3://bucket/shards/{} -   any command that writes the file to stdout

The manifest comes from the same place as the shards. A file name only ever reaches a shell
through `shlex.quote`, and `read_manifest` accepts only plain shard names in the first place.
"""

from __future__ import annotations

import shlex
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import BinaryIO

from shared.errors import DataError, UsageError

TIMEOUT_S = 60


def is_remote(where: str | Path) -> bool:
    text = str(where)
    return text.startswith("pipe:") or "://" in text and not text.startswith("file://")


def location(text: str) -> str | Path:
    """A command-line shard location as given: a Path for local folders, the string for URLs."""
    if text.startswith("file://"):
        return Path(urllib.parse.urlparse(text).path)
    return text if is_remote(text) else Path(text)


class _PipeReader:
    """stdout of a `pipe:` command as a binary file; a failing command is a DataError on close."""

    def __init__(self, command: str):
        self.command = command
        self.process = subprocess.Popen(command, shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.read = self.process.stdout.read

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        self.process.stdout.close()
        status = self.process.wait()
        # SIGPIPE means we stopped reading early on purpose (a tar's trailing zero blocks are
        # never read): -13 when the command itself got it, 141 (128 + 13) when its shell reports it.
        if status not in (0, -13, 141):
            message = self.process.stderr.read().decode("utf-8", "replace").strip().splitlines()
            raise DataError(f"`{self.command}` failed with status {status}: {message[-1] if message else ''}")

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class Location:
    """A shard folder, local or remote; picklable (just its text), so loader workers get it."""

    def __init__(self, where: str | Path):
        self.where = str(where)
        if self.where.startswith("pipe:") and "{}" not in self.where:
            raise UsageError(f"{self.where!r}: a pipe: location needs {{}} where the file name goes, "
                             "e.g. 'pipe:curl -sf https://host/shards/{}'")

    def __str__(self) -> str:
        return self.where

    @property
    def local(self) -> Path | None:
        return None if is_remote(self.where) else Path(self.where)

    def url(self, name: str) -> str:
        if self.local is not None:
            return str(self.local / name)
        if self.where.startswith("pipe:"):
            return self.command(name)
        return self.where.rstrip("/") + "/" + urllib.parse.quote(name)

    def command(self, name: str) -> str:
        """The shell command of a `pipe:` location for one file, the name quoted."""
        return self.where[len("pipe:"):].replace("{}", shlex.quote(name))

    def open(self, name: str) -> BinaryIO:
        """A binary stream of one file of the folder (not necessarily seekable)."""
        if self.local is not None:
            return open(self.local / name, "rb", buffering=1 << 20)
        if self.where.startswith("pipe:"):
            return _PipeReader(self.command(name))  # type: ignore[return-value]
        scheme = urllib.parse.urlparse(self.where).scheme
        if scheme in ("http", "https"):
            try:
                return urllib.request.urlopen(self.url(name), timeout=TIMEOUT_S)
            except OSError as exc:
                raise DataError(f"cannot fetch {self.url(name)}: {exc}") from None
        try:
            import fsspec
        except ImportError:
            raise UsageError(f"{scheme}:// shard locations need fsspec and its {scheme} driver "
                             f"(pip install fsspec s3fs, or gcsfs for gs://)") from None
        return fsspec.open(self.url(name), "rb").open()

    def read_bytes(self, name: str) -> bytes:
        with self.open(name) as handle:
            return handle.read()
