"""Ctrl-C that reaches only the main process, so worker pools stop without tracebacks.

A terminal's Ctrl-C sends SIGINT to the whole foreground process group: the main process and
every worker it started (joblib/loky feature workers, DataLoader workers). A worker that is
still starting up (importing) dies with a `KeyboardInterrupt` traceback of its own, whatever
the main process does. Inside `main_process_interrupts()` SIGINT is blocked in the main thread,
so workers started meanwhile inherit the block and never see it; a small thread waits for it and
raises `KeyboardInterrupt` in the main thread, which stops the pool (joblib terminates its
workers when the iteration over results is interrupted) and lets the entry point print one line.
"""

from __future__ import annotations

import _thread
import contextlib
import signal
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def main_process_interrupts() -> Iterator[None]:
    """Deliver Ctrl-C (SIGINT) as `KeyboardInterrupt` to the main thread only; see the module."""
    if (threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask")
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield  # not the usual setting (a custom handler, or no POSIX signals): leave it as it is
        return
    # multiprocessing's resource tracker, started on first use by the pools, unblocks SIGINT in
    # the thread that starts it (Python <= 3.12): start it now, before the block.
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    done = threading.Event()

    def wait() -> None:
        # The mask is inherited: SIGINT is blocked here too, as sigwait needs.
        while not done.is_set():
            if signal.sigtimedwait({signal.SIGINT}, 0.2) is not None and not done.is_set():
                _thread.interrupt_main()
                return

    watcher = threading.Thread(target=wait, name="ctrl-c", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
