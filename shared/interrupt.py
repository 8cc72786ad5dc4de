"""Stop signals that reach every process of a job, handled by the main process alone.

Terminals, `timeout`, `kill -TERM -PGID`, `docker stop`, Kubernetes, SLURM's `scancel`, its
pre-emption and its `--signal=USR1@120` warning all signal the *whole process group*: the main
process and every worker it started (joblib/loky feature workers, DataLoader workers). A worker
that dies of the signal takes the run down with a traceback of its own ("DataLoader worker (pid
...) is killed by signal: Terminated"), whatever the main process does. So here:

- Workers never act on a stop signal. They are started while the main thread blocks the signals
  (`blocked`; a forked or spawned child inherits the mask), and a DataLoader worker then ignores
  them for good (`ignore_in_worker`, its `worker_init_fn`; SIGTERM only when its parent did not
  send it); loky workers keep them blocked. Either way a worker still ends with its parent (the
  pool kills it, or the kernel does when the parent dies).
- Training checkpoints and stops: `StopRequest` turns each of its signals into a flag that the
  loop looks at after every step (trainer/loop.py).
- Everything else (preprocess, predict, evaluate) stops at once: inside
  `main_process_interrupts()` SIGINT and SIGTERM are blocked in the main thread and a small thread
  waits for them and raises `KeyboardInterrupt` there, which stops the pool (joblib kills its
  workers when the iteration over results is interrupted) and lets the entry point print one
  line and exit with 128 + the signal's number.
"""

from __future__ import annotations

import _thread
import contextlib
import ctypes
import os
import signal
import sys
import threading
from collections.abc import Iterable, Iterator

# What a terminal's Ctrl-C, `timeout`, `kill`, `docker stop` and schedulers send, and SLURM's usual
# early warning (`#SBATCH --signal=USR1@120`), whose default action would kill the run unsaved.
STOP_SIGNALS: tuple[str, ...] = ("SIGINT", "SIGTERM", "SIGUSR1")
# The signals that may be chosen to mean "stop": those schedulers and terminals send to end or
# warn a job. Workers ignore every one of them, chosen or not (the main process decides).
STOPPABLE: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGUSR1", "SIGUSR2", "SIGHUP", "SIGQUIT", "SIGXCPU")
    if hasattr(signal, name))
_PR_SET_PDEATHSIG = 1


def signal_numbers(names: Iterable[str]) -> tuple[signal.Signals, ...]:
    """`("SIGTERM", "usr1", "10")` -> the signals, in order, without repeats; a name that is not a
    signal a process can catch raises ValueError naming it."""
    found: list[signal.Signals] = []
    for name in names:
        text = str(name).strip().upper()
        try:
            sig = signal.Signals(int(text)) if text.isdigit() else \
                signal.Signals[text if text.startswith("SIG") else "SIG" + text]
        except (KeyError, ValueError):
            raise ValueError(f"{name!r} is not a signal (use names such as SIGTERM, SIGINT, SIGUSR1)") from None
        if sig not in STOPPABLE:
            raise ValueError(f"{sig.name} cannot mean 'stop'; choose from {', '.join(s.name for s in STOPPABLE)}")
        if sig not in found:
            found.append(sig)
    if not found:
        raise ValueError("no stop signal given (use e.g. SIGTERM,SIGINT,SIGUSR1)")
    return tuple(found)


def _posix() -> bool:
    return hasattr(signal, "pthread_sigmask") and threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def blocked(signals: Iterable[int]) -> Iterator[None]:
    """Block `signals` in this thread meanwhile: processes (and threads) started here inherit the
    block, so a signal sent to the group while they start cannot reach them before they set
    their own dispositions. Signals that came meanwhile are delivered to this process at the end."""
    if not _posix():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, set(signals))
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def ignore_in_worker(*_: object, signals: Iterable[int] = STOPPABLE) -> None:
    """In a worker process (a DataLoader's `worker_init_fn`): ignore `signals` sent to the process
    group from now on (one that came already is dropped), and die with the parent. The main
    process decides what a stop signal means.

    SIGTERM alone is kept for the parent: it is how the parent ends a worker that does not stop
    by itself (`Process.terminate`, and multiprocessing's clean-up of daemonic workers at exit,
    which would otherwise wait for it forever). It stays blocked, and a thread takes each one:
    sent by the parent, the worker ends as SIGTERM ends it; sent by anyone else (a group's stop),
    it is dropped."""
    signals = set(signals)
    others = signals - {signal.SIGTERM}
    for sig in others:
        signal.signal(sig, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, others)
        if signal.SIGTERM in signals:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # here and in threads started later
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the handler a forked worker inherits
            threading.Thread(target=_end_on_parents_sigterm, args=(os.getppid(),), name="sigterm", daemon=True).start()
    else:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        # Killed with the parent at once (a SIGKILL'd trainer), not when the worker's watchdog
        # next looks (every 5 s).
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


def _end_on_parents_sigterm(parent: int) -> None:
    while True:
        info = signal.sigwaitinfo({signal.SIGTERM})
        if info.si_pid == parent:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
            signal.pthread_kill(threading.get_ident(), signal.SIGTERM)  # SIG_DFL: the worker ends here


class StopRequest:
    """Each of `signals` sets `signal` (the first one received); a loop looks at it when it can
    stop cleanly. Installed from `__enter__` to `__exit__`, in the main thread."""

    def __init__(self, signals: Iterable[str] = STOP_SIGNALS) -> None:
        self.signals = signal_numbers(signals)
        self.signal: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def name(self) -> str:
        return signal.Signals(self.signal or signal.SIGTERM).name

    @property
    def status(self) -> int:
        """The exit status of a run this request stopped: 128 + the signal's number."""
        return 128 + (self.signal or signal.SIGTERM)

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is not threading.main_thread():
            return self  # only the main thread may set handlers: a run in a thread stops as its caller decides
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signal is None:
            self.signal = signum

    def __exit__(self, *exc_info) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def ignore_from_now(self) -> None:
        """Ignore the signals for the rest of the process (they are not restored at `__exit__`): a
        command whose work is done and saved exits with its own status, not killed by a late stop."""
        for sig in self._previous:
            signal.signal(sig, signal.SIG_IGN)
        self._previous.clear()


class Interrupts:
    """What `main_process_interrupts` caught: `signal` is None until SIGINT or SIGTERM came."""

    def __init__(self) -> None:
        self.signal: int | None = None

    @property
    def status(self) -> int:
        """The exit status for a stop by that signal: 128 + its number (130 for Ctrl-C)."""
        return 128 + (self.signal or signal.SIGINT)

    @property
    def name(self) -> str:
        return signal.Signals(self.signal or signal.SIGINT).name

    def line(self, what: str) -> str:
        """'interrupted: WHAT' after Ctrl-C, 'stopped by SIGTERM: WHAT' after another signal."""
        head = "interrupted" if self.signal in (None, signal.SIGINT) else f"stopped by {self.name}"
        return f"{head}: {what}" if what else head


@contextlib.contextmanager
def main_process_interrupts(caught: Interrupts | None = None) -> Iterator[Interrupts]:
    """Deliver SIGINT and SIGTERM as `KeyboardInterrupt` to the main thread only (recording which
    in `caught`); see the module."""
    caught = caught if caught is not None else Interrupts()
    watched = {sig for sig, default in ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.SIG_DFL))
               if signal.getsignal(sig) is default}
    if not _posix() or not watched:
        yield caught  # not the usual setting (custom handlers, or no POSIX signals): leave it as it is
        return
    # multiprocessing's resource tracker, started on first use by the pools, unblocks SIGINT in
    # the thread that starts it (Python <= 3.12): start it now, before the block.
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()

    def raise_in_main(signum, frame) -> None:
        caught.signal = signum
        raise KeyboardInterrupt

    # loky's own resource tracker, started with its first pool, unblocks SIGINT and SIGTERM in the
    # main thread the same way: there SIGINT raises KeyboardInterrupt anyway, and so does SIGTERM.
    handlers = {sig: signal.signal(sig, raise_in_main) for sig in watched - {signal.SIGINT}}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    done = threading.Event()

    def wait() -> None:
        # The mask is inherited: the signals are blocked here too, as sigwait needs.
        while not done.is_set():
            info = signal.sigtimedwait(watched, 0.2)
            if info is not None and not done.is_set():
                caught.signal = info.si_signo
                _thread.interrupt_main()
                return

    watcher = threading.Thread(target=wait, name="stop-signals", daemon=True)
    watcher.start()
    try:
        yield caught
    finally:
        done.set()
        watcher.join()
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
