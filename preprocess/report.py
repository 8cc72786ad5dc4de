"""What the user sees while and after preprocessing: progress, then per-split and error tables."""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from shared.console import counted, shown
from shared.manifest import Manifest
from shared.sources import Clip

if TYPE_CHECKING:
    from preprocess.shards import ShardRecord

PLAIN_EVERY_S = 10.0


def track(records: Iterable[ShardRecord], total_clips: int, done_clips: int,
          console: Console) -> Iterator[ShardRecord]:
    """Pass shard records through, advancing a progress display by each shard's clip count.

    A rich bar (clips/s, ETA) on a terminal; otherwise a plain line every 10 s, for logs; nothing
    on a quiet console (the Python API without `progress`).
    """
    if console.quiet:
        yield from records
        return
    start = time.perf_counter()
    if console.is_terminal:
        columns = (TextColumn("preprocess"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]} clips/s"), TimeRemainingColumn())
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task("clips", total=total_clips, completed=done_clips, rate="-")
            for record in records:
                done = record.inputs
                progress.advance(task, done)
                elapsed = time.perf_counter() - start
                new = progress.tasks[0].completed - done_clips
                progress.update(task, rate=f"{new / max(elapsed, 1e-9):.0f}")
                yield record
        return
    last = start
    completed = done_clips
    for record in records:
        completed += record.inputs
        now = time.perf_counter()
        if now - last >= PLAIN_EVERY_S or completed >= total_clips:
            rate = (completed - done_clips) / max(now - start, 1e-9)
            eta = (total_clips - completed) / rate if rate > 0 else float("inf")
            print(f"preprocess: {completed}/{total_clips} clips, {rate:.0f} clips/s, "
                  f"ETA {eta:.0f} s", file=sys.stderr, flush=True)
            last = now
        yield record


def summary(manifest: Manifest, errors: list[list[str]], seconds: float, jobs: int,
            console: Console, processed: int | None = None) -> None:
    """Samples per split and class, rejected inputs by reason, and throughput (of the `processed`
    clips when given: none for a rerun that only verified finished shards)."""
    splits = manifest.splits
    table = Table(title="samples")
    table.add_column("class")
    for split in splits:
        table.add_column(split, justify="right")
    for name in manifest.labels:
        table.add_row(shown(name), *(str(s.per_class.get(name, 0)) for s in splits.values()))
    unlabeled = [str(s.samples - sum(s.per_class.values())) for s in splits.values()]
    if any(u != "0" for u in unlabeled):
        table.add_row("(unlabeled)", *unlabeled)
    table.add_row("total", *(str(s.samples) for s in splits.values()), style="bold")
    table.add_row("shards", *(str(len(s.shards)) for s in splits.values()))
    console.print(table)
    if errors:
        reasons = Counter((stage, reason) for _, stage, reason, _ in errors)
        rejected = Table(title="rejected inputs")
        for column in ("stage", "reason", "inputs"):
            rejected.add_column(column, justify="right" if column == "inputs" else "left")
        for (stage, reason), count in sorted(reasons.items()):
            rejected.add_row(shown(stage), shown(reason), str(count))
        console.print(rejected)
    inputs = manifest.inputs
    samples = sum(s.samples for s in splits.values())
    if processed == 0 and not any(s.shards for s in splits.values()):
        rate = "nothing to process: no input was listed as usable"
    elif processed == 0:
        rate = "nothing to process: every shard was verified and kept"
    else:
        done = inputs.total if processed is None else processed
        rate = f"{done / max(seconds, 1e-9):.1f} clips/s, {jobs} process{'es' if jobs > 1 else ''}"
    # soft_wrap: each is one line in a log too, never cut at the console's width.
    console.print(f"{counted(inputs.total, 'input')}: {inputs.written} written, {inputs.rejected} "
                  f"rejected; {counted(samples, 'sample')} in {seconds:.1f} s ({rate})", soft_wrap=True)
    if inputs.cropped:
        were = "clip was" if inputs.cropped == 1 else "clips were"
        console.print(f"cropped: {inputs.cropped} {were} longer than {manifest.audio.duration_s} s and lost "
                      f"{duration(inputs.cropped_s)} of audio to the crop; pass --segment to use whole recordings "
                      "as consecutive windows", soft_wrap=True)


def duration(seconds: float) -> str:
    """A length of audio as read at a glance, never rounded to nothing: '2.5 s', '24 ms', '0.3 ms'."""
    if seconds >= 1 or seconds == 0:
        return f"{seconds:.1f} s"
    return f"{seconds * 1000:.2g} ms" if seconds < 0.01 else f"{seconds * 1000:.0f} ms"


# Classes without a usable training clip named one line each, up to this many.
UNUSABLE_SHOWN = 5


def class_warnings(clips: list[Clip], labels: list[str], rejected: dict[str, int] | None = None) -> list[str]:
    """One line each, from the clips written (`clips`: after rejections; `rejected`: each class's
    inputs rejected while decoding): a class with no training clip (the model gets an output it
    can never learn), fewer than two training classes (the trainer refuses them), and classes
    with no validation clip (their F1 counts as 0 in val macro-F1) when there is a val split."""
    lines = []
    rejected = rejected or {}
    trained = sorted({c.label for c in clips if c.split == "train" and c.label is not None})
    in_val: dict[str, int] = {}
    for clip in clips:
        if clip.split == "val" and clip.label is not None:
            in_val[clip.label] = in_val.get(clip.label, 0) + 1
    unusable = [name for name in labels if name not in trained]
    for name in unusable[:UNUSABLE_SHOWN]:
        why = ([f"{rejected[name]} rejected, see errors.csv"] if rejected.get(name) else []) + \
              ([f"{in_val[name]} in val only"] if in_val.get(name) else [])
        lines.append(f"warning: class '{name}' has no usable {'training ' if in_val.get(name) else ''}clip"
                     f"{' (' + '; '.join(why) + ')' if why else ''}: the model will never predict it; "
                     "fix or remove its files")
    if len(unusable) > UNUSABLE_SHOWN:
        rest = unusable[UNUSABLE_SHOWN:]
        lines.append(f"warning: {len(rest)} more class(es) have no usable training clip ({', '.join(rest[:5])}"
                     f"{', ...' if len(rest) > 5 else ''}): the model will never predict them; "
                     "fix or remove their files")
    if len(trained) < 2:
        lines.append(f"warning: {len(trained)} class(es) with training clips ({', '.join(trained) or 'none'}); "
                     "`python -m trainer train` needs at least two")
    validated = set(in_val)
    missing = [name for name in labels if name not in validated and name in trained]
    if validated and missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        lines.append(f"warning: {len(missing)} class(es) have no validation clip ({shown}); val macro-F1 "
                     "counts each as 0 and early stopping cannot see them")
    return lines


# A train split whose largest class has more than this many times the clips of its smallest.
IMBALANCE_RATIO = 10


def imbalance_notes(per_class: dict[str, int], balanced: bool) -> list[str]:
    """One warning line when the train classes are more than IMBALANCE_RATIO:1 apart."""
    if len(per_class) < 2:
        return []
    largest, smallest = max(per_class, key=per_class.get), min(per_class, key=per_class.get)
    ratio = per_class[largest] / max(per_class[smallest], 1)
    if ratio <= IMBALANCE_RATIO:
        return []
    done = "balanced with more augmented copies (--balance-classes)" if balanced else (
        "a model may learn to answer the majority class: pass --balance-classes here, or "
        "`trainer train --class-weights balanced`")
    return [f"warning: the train classes are imbalanced {ratio:.0f}:1 ('{largest}' {per_class[largest]} clips, "
            f"'{smallest}' {per_class[smallest]}); {done}"]
