"""One preprocessing run per output folder: a lock file holding the owner's pid."""

from __future__ import annotations

import os
from pathlib import Path

from shared.errors import UsageError


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class OutputLock:
    """`with OutputLock(path):` holds the lock; a lock whose process is gone is taken over."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def __enter__(self) -> OutputLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    pid = int(self.path.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and pid != os.getpid() and alive(pid):
                    raise UsageError(f"{self.path.parent.parent} is being written by another "
                                     f"preprocess run (pid {pid}); wait for it to finish") from None
                self.path.unlink(missing_ok=True)  # stale: its owner died
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(f"{os.getpid()}\n")
            return self
        raise UsageError(f"could not take the lock {self.path}; remove it if no run is active")

    def __exit__(self, *exc_info) -> None:
        self.path.unlink(missing_ok=True)
