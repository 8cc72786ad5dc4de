"""Keep a native decoder's chatter off the user's terminal.

libsndfile decodes MP3 with libmpg123, which writes its own notes to file descriptor 2 from C
("Note: Illegal Audio-MPEG-Header 0x00000000 at offset 5796.", "Note: Trying to resync...",
"[src/libmpg123/parse.c:...] error: Giving up searching valid MPEG header") for every file that
is not a clean MPEG stream, and neither libsndfile nor soundfile can turn it off. So each native
call runs with fd 2 pointed at a scratch file; afterwards those lines are dropped and anything
else written meanwhile (by another thread of this process) is passed on to the real stderr.
PyAV needs none of this: its FFmpeg log is quiet unless asked.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

_CHATTER = re.compile(rb"(Note|Warning): |\[src/libmpg123/")
_LOCK = threading.Lock()  # fd 2 is one per process: one redirect at a time
_sink: tuple[int, IO[bytes]] | None = None  # (pid, scratch file): a forked child makes its own


def _scratch() -> IO[bytes]:
    global _sink
    if _sink is None or _sink[0] != os.getpid():
        _sink = (os.getpid(), tempfile.TemporaryFile())
    return _sink[1]


@contextmanager
def native_chatter_dropped() -> Iterator[None]:
    """Run the block with fd 2 redirected, then pass on what it got, less libmpg123's lines."""
    with _LOCK:
        try:
            sys.stderr.flush()  # Python's own pending text goes out first, to the real stderr
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):  # no stderr at all: nothing to keep clean
            yield
            return
        sink = _scratch()
        sink.seek(0)
        sink.truncate()
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if os.fstat(sink.fileno()).st_size:
                sink.seek(0)
                kept = [line for line in sink.read().splitlines(keepends=True) if not _CHATTER.match(line)]
                if kept:
                    os.write(2, b"".join(kept))
