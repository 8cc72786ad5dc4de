"""What the user sees while training: a rich bar per epoch on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class EpochProgress:
    def __init__(self, epochs: int, console: Console | None = None, enabled: bool = True):
        self.epochs = epochs
        self.enabled = enabled  # off on every DDP rank but 0
        self.console = console or Console(stderr=True)
        self.bar: Progress | None = None
        self.task = None

    def start(self, epoch: int, total: int, done: int = 0) -> None:
        if not (self.enabled and self.console.is_terminal):
            return
        self.bar = Progress(
            TextColumn(f"epoch {epoch + 1}/{self.epochs}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"), TimeRemainingColumn(), console=self.console, transient=True)
        self.bar.start()
        self.task = self.bar.add_task("train", total=total, completed=done, stats="")

    def update(self, loss: float, acc: float, lr: float, rate: float) -> None:
        if self.bar is not None:
            self.bar.update(self.task, advance=1,
                            stats=f"loss {loss:.4f} acc {acc:.3f} lr {lr:.2e} {rate:.0f} samples/s")

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
