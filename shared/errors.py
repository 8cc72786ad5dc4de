"""Exceptions that carry a one-line message meant for the user.

Which one, by what fixes it:
- `UsageError` (exit 2): what was asked is wrong, and a changed command fixes it: a flag, a
  config value, the input layout (class folders, a CSV's columns), a path that holds nothing of
  ours (no manifest.json, no checkpoint), a request the files on disk rule out (resuming on other
  shards or with other options).
- `DataError` (exit 1): a file melshard wrote, or reads, is there but damaged or unusable as it
  is, and only making it again fixes it: a shard, a manifest, a checkpoint, a run that wrote no
  sample.
"""

import errno
import sys

from shared.atomic import readable


class MelshardError(Exception):
    """The root of every error the project raises on purpose, with a message meant for the user:
    `UsageError`, `DataError` and `shared.audio.AudioError` (and their subclasses). An API caller
    catches this one type; anything else is a defect."""


class UsageError(MelshardError):
    """A mistake in the command line, a config file or the input layout (see the module doc).

    Entry points print the message on one line and exit with status 2.
    """


class ConfigError(UsageError):
    """A configuration value is missing, unknown or out of range."""


class DataError(MelshardError):
    """A file that is there but cannot be used as it is: a damaged shard, manifest or checkpoint.

    Entry points print the message on one line and exit with status 1.
    """


def one_line(exc: BaseException) -> str:
    """The message of `exc` as one line, also when a DataLoader worker re-raised it.

    A worker's exception reaches the main process with the worker's traceback in its message;
    its last line is the original `module.Class: message`.
    """
    text = str(exc).strip()
    if "Traceback" not in text:
        return text.splitlines()[0] if text else type(exc).__name__
    last = text.splitlines()[-1]
    return last.split(": ", 1)[1] if ": " in last else last


DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def is_disk_full(exc: BaseException) -> bool:
    """True for a write that failed because the disk (or the user's quota) is full."""
    return isinstance(exc, OSError) and exc.errno in DISK_FULL


def disk_full_line(exc: OSError, rerun: str) -> str:
    """'no space left on device writing X; free space and <rerun>' for a full disk."""
    where = f" writing {exc.filename}" if exc.filename else ""
    return f"{exc.strerror or 'no space left on device'}{where}; nothing half-written was kept: free space and {rerun}"


def report(exc: BaseException, rerun: str) -> int | None:
    """Print the one line for an error the user can act on and return the exit status
    (2 usage, 1 data or a full disk); None for anything else, which the caller re-raises.
    `rerun` says how to continue after freeing disk space."""
    if isinstance(exc, UsageError):
        print(readable(f"error: {exc}"), file=sys.stderr)
        return 2
    if isinstance(exc, DataError):
        print(readable(f"error: {one_line(exc)}"), file=sys.stderr)
        return 1
    if is_disk_full(exc):
        print(readable(f"error: {disk_full_line(exc, rerun)}"), file=sys.stderr)
        return 1
    return None


def exit_status(exc: BaseException, rerun: str) -> int:
    """The exit status of an entry point that caught `exc`, after printing its one line
    (`report`); an exception that is not the user's to act on is raised again, traceback and all."""
    status = report(exc, rerun)
    if status is None:
        raise exc
    return status
