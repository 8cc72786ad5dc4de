"""One training process writes a run folder at a time: a POSIX record lock on `RUN/.lock`.

Two `trainer train --out RUN` at once (a second terminal, a resume started while the first run's
ranks still live on after their launcher was killed) would otherwise both write `last.pt`,
`metrics.csv` and `config.json`, and the last to finish would win. The kernel drops the lock
when its holder exits, however it exits (SIGKILL included), so a dead run never leaves a stale
lock behind. A record lock (`fcntl.lockf`), not a `flock`: it belongs to the process alone, so
the loader's worker processes forked from the trainer, which may outlive a killed trainer by a
moment, do not hold it. The file holds the holder's pid for the message; it is the lock on it
that counts. A run that ends removes the file while still holding its lock, and a taker checks
that the file it locked is still the one at the path (else it tries again), so a lock on a file
just removed is never taken for the run's lock. Record locks work on local file systems and NFS.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from shared.errors import UsageError

LOCK = ".lock"


class RunLock:
    """Held from `take` until `release` (or the process's end)."""

    def __init__(self, run: Path, fd: int, made: bool):
        self.run, self._fd, self._made = run, fd, made

    @classmethod
    def take(cls, run: Path) -> RunLock:
        made = not run.exists()
        run.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(run / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EAGAIN):
                    os.close(fd)
                    raise
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                os.close(fd)
                raise UsageError(f"{run} is being trained by another process{f' (pid {holder})' if holder else ''}"
                                 "; wait for it to end or stop it, or choose another --out") from None
            try:
                if os.stat(run / LOCK).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)  # locked a file its holder removed as it ended: lock the one there now
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(run, fd, made)

    def release(self, started: bool = True) -> None:
        """Let another process train here. `started=False` (the run failed before writing
        anything): a folder this lock created is removed again if it holds only the lock."""
        if self._fd < 0:
            return
        (self.run / LOCK).unlink(missing_ok=True)  # while still locked: see the module
        if not started and self._made and not any(self.run.iterdir()):
            self.run.rmdir()
        os.close(self._fd)  # closing it drops the lock
        self._fd = -1
