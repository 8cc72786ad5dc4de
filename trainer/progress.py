"""What the user sees while training: a rich bar per epoch on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class EpochProgress:
    """The bar advances every step; its figures (which the loop must read from the device, a wait
    on a GPU) are refreshed at most once every `REFRESH_S` seconds."""

    REFRESH_S = 0.25

    def __init__(self, epochs: int, console: Console | None = None, enabled: bool = True):
        self.epochs = epochs
        self.enabled = enabled  # off on every DDP rank but 0
        self.console = console or Console(stderr=True)
        self.bar: Progress | None = None
        self.task = None
        self.shown = 0.0  # time.monotonic() of the last refresh of the figures

    def start(self, epoch: int, total: int, done: int = 0) -> None:
        if not (self.enabled and self.console.is_terminal):
            return
        self.bar = Progress(
            TextColumn(f"epoch {epoch + 1}/{self.epochs}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"), TimeRemainingColumn(), console=self.console, transient=True)
        self.bar.start()
        self.task = self.bar.add_task("train", total=total, completed=done, stats="")
        self.shown = 0.0

    def advance(self) -> bool:
        """One step done; True when the figures are due for a refresh (then call `show`)."""
        if self.bar is None:
            return False
        self.bar.advance(self.task)
        now = time.monotonic()
        if now - self.shown < self.REFRESH_S:
            return False
        self.shown = now
        return True

    def show(self, loss: float, acc: float, lr: float, rate: float) -> None:
        if self.bar is not None:
            self.bar.update(self.task, stats=f"loss {loss:.4f} acc {acc:.3f} lr {lr:.2e} {rate:.0f} samples/s")

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def summary(self, row: dict[str, float]) -> None:
        self.finish()
        if not self.enabled:
            return
        print(f"epoch {row['epoch']}/{self.epochs}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.3f} | "
              f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.3f} f1 {row['val_f1']:.3f} | "
              f"lr {row['lr']:.2e} | {row['samples_per_s']:.0f} samples/s, "
              f"data wait {row['data_wait_fraction']:.0%} | {row['seconds']:.1f} s", file=sys.stderr, flush=True)


class FileProgress:
    """A rich bar over raw audio files (files/s, ETA) while predicting or evaluating, on a
    terminal only: in a log the one result line says what was done."""

    def __init__(self, total: int, console: Console | None = None, enabled: bool = True):
        self.total = total
        self.console = console or Console(stderr=True)
        self.enabled = enabled and self.console.is_terminal
        self.bar: Progress | None = None
        self.task = None
        self.start = 0.0

    def __enter__(self) -> FileProgress:  # noqa: PYI034 - typing.Self needs Python 3.11
        if self.enabled:
            self.bar = Progress(TextColumn("audio files"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[rate]} files/s"), TimeRemainingColumn(),
                                console=self.console, transient=False)
            self.bar.start()
            self.task = self.bar.add_task("files", total=self.total, rate="-")
            self.start = time.perf_counter()
        return self

    def advance(self, files: int) -> None:
        if self.bar is not None:
            self.bar.advance(self.task, files)
            done = self.bar.tasks[0].completed
            self.bar.update(self.task, rate=f"{done / max(time.perf_counter() - self.start, 1e-9):.0f}")

    def __exit__(self, kind, *exc) -> None:
        if self.bar is not None:
            if kind is not None:  # stopped part-way (Ctrl-C, SIGTERM, an error): the one line says what happened
                self.bar.live.transient = True
            self.bar.stop()
            self.bar = None
