"""`python -m preprocess inspect DIR`: what a shard folder holds, before a long training run.

Prints the feature config (segmentation and augmentation included), samples per split and class
(with each train class's augmented copies when classes are balanced), rejected inputs by reason
and shard sizes, checks every shard, and writes DIR/inspect.png: a few mel spectrograms of every
class, as the model sees them. `python -m preprocess inspect` exits 1 when a shard is damaged.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from preprocess.report import imbalance_notes  # noqa: E402
from shared.config import AudioConfig  # noqa: E402
from shared.console import plot_label, shown  # noqa: E402
from shared.errors import DataError, one_line  # noqa: E402
from shared.integrity import BadShard, check_shards, describe_loss  # noqa: E402
from shared.manifest import ERRORS, Manifest  # noqa: E402
from shared.shardio import decode_mel, iter_samples, required_members  # noqa: E402
from shared.sources import SPLITS  # noqa: E402

PER_CLASS = 4


def _examples(folder: Path, manifest: Manifest, per_class: int, damaged: set[str]) -> dict[str, list[np.ndarray]]:
    """Up to `per_class` original (un-augmented) mels per class, from the train split's sound shards."""
    import json

    wanted = {name: [] for name in manifest.labels}
    for shard in manifest.shards("train"):
        if shard.name in damaged:
            continue
        for sample in iter_samples(folder / shard.name, required=required_members(shard.name)):
            meta = json.loads(sample["json"])
            label = meta.get("label")
            if label in wanted and meta.get("copy", 0) == 0 and len(wanted[label]) < per_class:
                wanted[label].append(decode_mel(sample).astype(np.float32))
        if all(len(v) >= per_class for v in wanted.values()):
            break
    return wanted


def _reasons(errors_file: Path) -> Counter:
    """Rejected inputs per reason, from errors.csv; a damaged file is a one-line `DataError`."""
    try:
        return Counter(pd.read_csv(errors_file)["reason"])
    except KeyError:
        raise DataError(f"{errors_file} is damaged (no reason column); rerun preprocessing") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{errors_file} is damaged ({one_line(exc)}); rerun preprocessing") from None


def plot_grid(examples: dict[str, list[np.ndarray]], path: Path, audio: AudioConfig, empty: str = "") -> None:
    """A grid of mels, a row per class that has one; with none, a figure saying why (`empty`)."""
    rows = [name for name, mels in examples.items() if mels]
    if not rows:
        figure = plt.figure(figsize=(6, 1.5))
        figure.text(0.5, 0.5, empty or "no train example to show", ha="center", va="center", wrap=True)
        figure.savefig(path, dpi=100)
        plt.close(figure)
        return
    columns = max(len(examples[name]) for name in rows)
    figure, axes = plt.subplots(len(rows), columns, figsize=(2.6 * columns + 1.2, 1.6 * len(rows) + 0.8),
                                squeeze=False)
    for r, name in enumerate(rows):
        for c in range(columns):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(examples[name]):
                ax.imshow(examples[name][c], origin="lower", aspect="auto", cmap="magma")
            if c == 0:
                ax.set_ylabel(plot_label(name), rotation=0, ha="right", va="center", fontsize=10)
    figure.suptitle(f"log-mel examples ({audio.n_mels} mels x {audio.duration_s} s at {audio.sr} Hz)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _config_rows(manifest: Manifest) -> list[tuple[str, str]]:
    """The features table: the audio config, segmentation, augmentation and seed."""
    audio, augment = manifest.audio, manifest.augment
    rows = [(key, str(getattr(audio, key))) for key in
            ("sr", "duration_s", "n_fft", "hop_length", "n_mels", "fmin", "fmax", "top_db", "db_reference")]
    rows.append(("silence_dbfs", f"{audio.silence_dbfs} (a clip or window whose peak is below this is left out)"))
    if audio.segment:
        hop = audio.segment_hop_s or audio.duration_s
        rows += [("segment", f"on: recordings longer than {audio.duration_s} s become windows of {audio.duration_s} s"),
                 ("segment_hop_s", f"{hop} (between window starts" + (")" if audio.segment_hop_s else
                                                                       "; 0 given: duration_s, no overlap)")),
                 ("min_segment_s", f"{audio.min_segment_s} (a shorter last window is dropped)")]
    else:
        rows.append(("segment", f"off: clips are cropped to their first {audio.duration_s} s"))
    if augment.balance_classes:
        rows.append(("augment copies", f"{augment.copies} per clip, more for smaller train classes up to "
                                       f"{augment.balance_cap} per clip (balance_classes; per class below)"))
    else:
        rows.append(("augment copies", str(augment.copies)))
    if manifest.config.mel_encoding == "uint8":
        rows.append(("mel_encoding", "uint8 (8-bit codes, a per-clip offset and scale; decoded within "
                                     "(max - min) / 510 dB)"))
    rows.append(("seed", str(manifest.seed)))
    return rows


def inspect(folder: Path, console: Console | None = None) -> tuple[Path, list[BadShard]]:
    """Print what `folder` holds and draw `folder/inspect.png`; (the picture, the damaged shards)."""
    console = console or Console()
    manifest = Manifest.read(folder)
    audio = manifest.audio
    config = Table(title="features", show_header=False)
    for key, value in _config_rows(manifest):
        config.add_row(key, value)
    console.print(config)

    splits = {name: manifest.splits[name] for name in SPLITS if name in manifest.splits}
    counts = Table(title="samples per split and class")
    counts.add_column("class")
    for split in splits:
        counts.add_column(split, justify="right")
    train = splits.get("train")
    copies = (train.copies_per_class or {}) if train else {}
    balanced = manifest.augment.balance_classes and train is not None
    if balanced:  # the augmented copies each train class got (in its train count)
        counts.add_column("train copies", justify="right")
    for name in manifest.labels:
        counts.add_row(shown(name), *(str(s.per_class.get(name, 0)) for s in splits.values()),
                       *([str(copies.get(name, 0))] if balanced else []))
    counts.add_row("total", *(str(s.samples) for s in splits.values()),
                   *([str(sum(copies.values()))] if balanced else []), style="bold")
    console.print(counts)

    sizes = Table(title="shards")
    for column in ("split", "shards", "samples/shard", "MB/shard", "total MB"):
        sizes.add_column(column, justify="left" if column == "split" else "right")
    for split, info in splits.items():
        mb = [s.bytes / 2**20 for s in info.shards]
        per = [s.samples for s in info.shards]
        sizes.add_row(split, str(len(mb)), f"{min(per)}-{max(per)}" if per else "-",
                      f"{np.mean(mb):.1f}" if mb else "-", f"{sum(mb):.1f}")
    console.print(sizes)

    if train:
        clips = {name: count - copies.get(name, 0) for name, count in train.per_class.items()}
        for line in imbalance_notes(clips, manifest.augment.balance_classes):  # it names classes
            console.print(shown(line))

    inputs = manifest.inputs
    console.print(f"inputs: {inputs.total} total, {inputs.written} written, {inputs.rejected} rejected")
    errors_file = folder / ERRORS
    if inputs.rejected and errors_file.exists():
        reasons = _reasons(errors_file)
        rejected = Table(title="rejected inputs by reason")
        rejected.add_column("reason")
        rejected.add_column("inputs", justify="right")
        for reason, count in reasons.most_common():
            rejected.add_row(shown(reason), str(count))
        console.print(rejected)

    samples = sum(info.samples for info in splits.values())
    bad = [b for split in splits for b in check_shards(folder, splits[split].shards, "skip")[1]]
    if bad:
        console.print(shown("damaged shards:", "bold red"), shown(describe_loss(bad)))
    else:
        console.print(f"shards checked: every sample read ({samples} samples, size and sha256 as recorded)")

    png = folder / "inspect.png"
    examples = _examples(folder, manifest, PER_CLASS, {b.name for b in bad})
    empty = "" if any(examples.values()) else _no_examples(manifest, {b.name for b in bad})
    plot_grid(examples, png, audio, empty)
    console.print(shown(f"mel examples: {png}" + (f" (none: {empty})" if empty else "")), soft_wrap=True)
    return png, bad


def _no_examples(manifest: Manifest, damaged: set[str]) -> str:
    """Why the train split gave no mel to draw: no train sample, or only damaged shards."""
    shards = manifest.shards("train")
    lost = [s.name for s in shards if s.name in damaged]
    if lost:
        return f"every train shard with samples is damaged ({', '.join(lost[:3])}{', ...' if len(lost) > 3 else ''})"
    return "the train split has no sample" if not any(s.samples for s in shards) else "no class has an original clip"
