"""Where preprocessing writes: a local folder, or an fsspec URL (`s3://bucket/shards`, `gs://...`).

Every file under its final name is complete, on either:
- a folder (local or a shared file system): a hidden temporary beside the target, fsync,
  rename (`shared.atomic`);
- an object store (s3, gs, az): the shard is built in a local temporary file and uploaded
  with one `put`; the store makes an object visible only once the upload is complete, which is
  the object-store form of the atomic rename;
- another fsspec file system (sftp, ...): uploaded under a hidden temporary name, then moved.

An `Output` is just its text when pickled, so joblib or dask workers can carry it anywhere.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from preprocess.lock import OutputLock, alive
from shared.atomic import atomic_open, write_bytes
from shared.errors import UsageError
from shared.integrity import MISSING, OK, WRONG_SIZE, describe, shard_problem
from shared.location import is_remote

OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "r2"}


def output(where: str | Path) -> Output:
    return RemoteOutput(str(where)) if is_remote(where) else LocalOutput(Path(where))


class LocalOutput:
    """A folder on this machine or on a file system every worker mounts at the same path."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def __str__(self) -> str:
        return str(self.folder)

    def prepare(self) -> None:
        """Create the folder and prove it is writable (one line naming the fix if not)."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            probe = self.folder / f".write-test.{os.getpid()}.tmp"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise UsageError(f"cannot write to --out {self.folder} ({exc.strerror}); "
                             "choose a writable folder") from None

    def read_text(self, name: str) -> str | None:
        try:
            return (self.folder / name).read_text()
        except FileNotFoundError:
            return None

    def write(self, name: str, data: bytes) -> None:
        path = self.folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(path, data)

    @contextlib.contextmanager
    def open_shard(self, name: str) -> Iterator[BinaryIO]:
        with atomic_open(self.folder / name) as handle:
            yield handle

    def names(self, pattern: str) -> list[str]:
        """Names (relative to the folder) matching a glob pattern."""
        return sorted(str(p.relative_to(self.folder)) for p in self.folder.glob(pattern) if p.is_file())

    def remove(self, name: str) -> None:
        (self.folder / name).unlink(missing_ok=True)

    def stamp(self, name: str) -> list[int] | None:
        """(size, mtime, ctime, device, inode) of a written file: what a rerun compares instead of
        rehashing (the ctime changes with any write and cannot be set back from user space)."""
        try:
            st = (self.folder / name).stat()
        except FileNotFoundError:
            return None
        return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_dev, st.st_ino]

    def problem(self, name: str, size: int, sha256: str, stamp: list[int] | None = None) -> str | None:
        """Why `name` is not the finished shard its journal describes, or None. A shard whose
        stat (size, mtime, ctime, device, inode) is still the one journaled right after it was written is taken as
        it is (a rerun then costs a `stat` per finished shard, not a read of every byte); any
        other is hashed and read through. Training and `inspect` always hash every shard."""
        if stamp is not None and self.stamp(name) == stamp:
            return None
        return shard_problem(self.folder / name, size, sha256)

    def remove_temporaries(self) -> None:
        """Delete what killed or stopped workers left (never anything under a final name)."""
        for stale in self.names(".*.tmp"):
            self.remove(stale)

    def lock(self, name: str) -> OutputLock:
        return OutputLock(self.folder / name)


class RemoteOutput:
    """An fsspec URL. Its file system is opened lazily, once per process."""

    def __init__(self, url: str):
        if url.startswith("pipe:"):
            raise UsageError(f"--out {url}: a pipe: location can be read from but not written to; "
                             "give a folder or an fsspec URL such as s3://bucket/shards")
        self.url = url.rstrip("/")
        self.scheme = self.url.split("://", 1)[0]
        self._fs = None
        self._root = ""

    def __str__(self) -> str:
        return self.url

    def __reduce__(self):
        return RemoteOutput, (self.url,)

    @property
    def fs(self):
        if self._fs is None:
            try:
                import fsspec

                self._fs, self._root = fsspec.core.url_to_fs(self.url)
            except ImportError as exc:
                raise UsageError(f"--out {self.url} needs fsspec and its {self.scheme} driver ({exc}); "
                                 "pip install fsspec s3fs (gcsfs for gs://, adlfs for az://)") from None
        return self._fs

    def _path(self, name: str) -> str:
        _ = self.fs
        return f"{self._root}/{name}"

    def prepare(self) -> None:
        try:
            self.fs.makedirs(self._root, exist_ok=True)
            probe = f".write-test.{socket.gethostname()}.{os.getpid()}.tmp"
            self.write(probe, b"")
            self.remove(probe)
        except OSError as exc:
            raise UsageError(f"cannot write to --out {self.url} ({exc}); check the URL and the credentials "
                             "(for s3: AWS_PROFILE or AWS_ACCESS_KEY_ID, and AWS_ENDPOINT_URL for other "
                             "stores)") from None

    def read_text(self, name: str) -> str | None:
        try:
            return self.fs.cat_file(self._path(name)).decode("utf-8")
        except FileNotFoundError:
            return None

    def _commit(self, local: str, name: str) -> None:
        target = self._path(name)
        if self.scheme in OBJECT_STORES:
            self.fs.put_file(local, target)  # an object appears only once complete
        else:
            folder, _, base = target.rpartition("/")
            hidden = f"{folder}/.{base}.{os.getpid()}.tmp"
            self.fs.put_file(local, hidden)
            self.fs.mv(hidden, target)

    def write(self, name: str, data: bytes) -> None:
        with self.open_shard(name) as handle:
            handle.write(data)

    @contextlib.contextmanager
    def open_shard(self, name: str) -> Iterator[BinaryIO]:
        """A local temporary file to write; uploaded under `name` when the block ends without error."""
        with tempfile.NamedTemporaryFile(prefix=".melshard-", suffix=".tmp") as handle:
            yield handle
            handle.flush()
            self._commit(handle.name, name)

    def names(self, pattern: str) -> list[str]:
        self.fs.invalidate_cache()  # other processes wrote since this one last listed
        prefix = self._path("")
        return sorted(p[len(prefix):] for p in self.fs.glob(self._path(pattern)))

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._path(name))

    def stamp(self, name: str) -> list[int] | None:
        return None

    def problem(self, name: str, size: int, sha256: str, stamp: list[int] | None = None) -> str | None:
        """Size only: an object was uploaded whole or not at all, and hashing would download it."""
        try:
            actual = self.fs.info(self._path(name))["size"]
        except FileNotFoundError:
            return describe(MISSING, 0, size)
        return describe(OK if actual == size else WRONG_SIZE, actual, size)

    def remove_temporaries(self) -> None:
        if self.scheme not in OBJECT_STORES:
            for stale in self.names(".*.tmp"):
                self.remove(stale)

    def lock(self, name: str) -> RemoteLock:
        return RemoteLock(self, name)


class RemoteLock:
    """The run's host and pid in an object. Stores offer no portable create-if-absent, so two
    runs started in the same second could both take it; the lock is there to catch the usual
    mistake (a second run on a folder in use), and one left by a dead process on this host is
    taken over. One left by another host must be removed by hand, as the message says."""

    def __init__(self, out: RemoteOutput, name: str):
        self.out, self.name = out, name
        self.mine = f"{socket.gethostname()} {os.getpid()}"

    def __enter__(self) -> RemoteLock:
        held = self.out.read_text(self.name)
        if held and held.strip() != self.mine:
            host, _, pid = held.strip().rpartition(" ")
            if host != socket.gethostname() or (pid.isdigit() and alive(int(pid))):
                raise UsageError(f"{self.out} is being written by another preprocess run ({held.strip()}); "
                                 f"wait for it, or delete {self.out}/{self.name} if that run is gone")
        self.out.write(self.name, f"{self.mine}\n".encode())
        return self

    def __exit__(self, *exc_info) -> None:
        self.out.remove(self.name)


Output = LocalOutput | RemoteOutput
