"""Listing inputs: a folder of class subfolders, a CSV `path,label[,group][,split]`, a test set.

Every input the user gave ends up either as a `Clip` or as a `Rejection` (a future errors.csv
row), so the count identity `written + rejected == total` starts here.

Listing rules for a folder: a file is an input when its extension is an audio one
(`AUDIO_EXTENSIONS`); other files (notes, images, `.DS_Store`, `Thumbs.db`) are not inputs.
A hidden file with an audio extension (its name, or a folder's above it, starts with `.`: an
editor's `.take1.wav`, a `.backup/` folder, macOS's `._name.wav` resource forks) is an input
that is never read: a `hidden` rejection, so nothing that looks like audio vanishes unseen.
A CSV lists its inputs itself: a hidden path named in a row is read like any other.
"""

from __future__ import annotations

import csv
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from shared.decode import AUDIO_EXTENSIONS
from shared.errors import UsageError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True, slots=True)  # slots: a million of them in the parent
class Clip:
    """One input file. `rel` is its path relative to the source root, as written to shards.

    `size` and `mtime_ns` come from the one `stat` made while listing: they go into the shard
    fingerprints (never into the shards), so a file replaced under the same name is noticed.
    """

    path: str
    rel: str
    label: str | None
    group: str | None = None
    split: str | None = None
    size: int | None = None
    mtime_ns: int | None = None

    def with_split(self, split: str) -> Clip:
        """This clip in `split` (a direct constructor call: dataclasses.replace costs 3x as much,
        which shows at a million clips)."""
        return Clip(self.path, self.rel, self.label, self.group, split, self.size, self.mtime_ns)


@dataclass(frozen=True)
class Rejection:
    """One input that cannot become a sample: a row of errors.csv."""

    path: str
    stage: str
    reason: str
    detail: str


HIDDEN = "hidden"  # the rejection reason of a hidden file with an audio extension


def _has_audio_extension(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in AUDIO_EXTENSIONS


def _is_audio(name: str) -> bool:
    return not name.startswith(".") and _has_audio_extension(name)


def hidden_rejection(rel: str) -> Rejection:
    """The `hidden` row of a hidden file (`rel` has a part starting with `.`), saying which part."""
    parts = rel.split("/")
    name = parts[-1]
    folder = next((part for part in parts[:-1] if part.startswith(".")), None)
    if folder is not None:
        detail = f"it is in the hidden folder '{folder}'; not read (rename the folder to include it)"
    elif name.startswith("._"):
        detail = "a macOS resource fork ('._' file: Finder metadata, not audio); not read"
    else:
        detail = "its name starts with '.' (a hidden file); not read (rename it to include it)"
    return Rejection(rel, "list", HIDDEN, detail)


def _stat(path: Path | str) -> os.stat_result | None:
    """The file's status (following symlinks), or None when it cannot be read."""
    try:
        return os.stat(path)
    except OSError:
        return None


def _walk_audio(root: Path, rejections: list[Rejection], hidden: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(path, path relative to `root` with `/`) of the audio files below `root`, following
    symlinked folders but never around a loop. Plain strings: at a million files pathlib's
    objects cost more than the walk.

    Hidden files and folders (names starting with `.`) are left out of it: the hidden files with
    an audio extension, in hidden folders too, are added to `hidden`. Hidden folders are walked
    after every visible one, so a hidden link to a listed folder adds nothing."""
    found: list[tuple[str, str]] = []
    seen: set[str] = set()
    top = str(root)

    def on_error(error: OSError) -> None:
        rel = os.path.relpath(error.filename, top).replace(os.sep, "/") if error.filename else str(root)
        rejections.append(Rejection(rel, "list", "unreadable_folder",
                                    f"{error.strerror}; its files were not listed"))

    def walk(start: str, hidden_folders: list[str] | None) -> None:
        for folder, dirs, files in os.walk(start, followlinks=True, onerror=on_error):
            real = os.path.realpath(folder)
            if real in seen:  # a symlink loop or a second link to a folder already listed
                dirs[:] = []
                continue
            seen.add(real)
            if hidden_folders is not None:  # the visible walk: hidden folders wait for the second one
                hidden_folders.extend(os.path.join(folder, d) for d in sorted(dirs) if d.startswith("."))
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            else:
                dirs.sort()
            below = os.path.relpath(folder, top).replace(os.sep, "/")
            prefix = "" if below == "." else below + "/"
            for name in sorted(files):
                if hidden_folders is not None and _is_audio(name):
                    found.append((os.path.join(folder, name), prefix + name))
                elif _has_audio_extension(name):
                    hidden.append((os.path.join(folder, name), prefix + name))

    later: list[str] = []
    walk(top, later)
    for folder in later:
        walk(folder, None)
    return found


def list_folder(root: Path, labeled: bool) -> tuple[list[Clip], list[Rejection]]:
    """A folder: with `labeled`, one subfolder per class; otherwise any audio below it. Each
    hidden file with an audio extension is a `hidden` rejection (never read)."""
    clips: list[Clip] = []
    rejections: list[Rejection] = []
    hidden: list[tuple[str, str]] = []
    found = _walk_audio(root, rejections, hidden)
    rejections.extend(hidden_rejection(rel) for _, rel in hidden)
    for path, rel in found:
        if labeled and "/" not in rel:
            rejections.append(Rejection(rel, "list", "no_class_folder",
                                        "audio files must sit in a subfolder named after their class"))
            continue
        info = _stat(path)  # a broken link stays listed: decoding rejects it with its reason
        size, mtime = (info.st_size, info.st_mtime_ns) if info else (None, None)
        if not labeled:
            clips.append(Clip(path, rel, None, split="test", size=size, mtime_ns=mtime))
        else:
            clips.append(Clip(path, rel, rel.split("/", 1)[0], size=size, mtime_ns=mtime))
    return clips, rejections


DELIMITERS = (",", "\t", ";")
DELIMITER_NAMES = {",": "comma", "\t": "tab", ";": "semicolon"}


def sniff_delimiter(csv_path: Path) -> str:
    """The separator of a CSV/TSV: the one that makes a `path` column in the header line, else
    the one the header holds most of (comma when it holds none, as for a one-column file)."""
    with open(csv_path, encoding="utf-8", errors="replace", newline="") as handle:
        header = handle.readline().lstrip("\ufeff")
    for sep in DELIMITERS:
        row = next(csv.reader([header], delimiter=sep), [])
        if sep in header and "path" in (cell.strip().lower() for cell in row):
            return sep
    counts = {sep: header.count(sep) for sep in DELIMITERS}
    best = max(DELIMITERS, key=lambda sep: counts[sep])  # ties: the first, comma
    return best if counts[best] else ","


def list_csv(csv_path: Path, labeled: bool) -> tuple[list[Clip], list[Rejection]]:
    """A CSV with `path` (relative to the CSV's folder), `label`, optional `group` and `split`.

    Comma, tab and semicolon separators are all read (`sniff_delimiter`), whatever the extension.
    """
    import pandas as pd  # here: a folder corpus, and every preprocessing worker, never needs it

    try:
        sep = sniff_delimiter(csv_path)
        table = pd.read_csv(csv_path, sep=sep, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read CSV {csv_path}: {str(exc).splitlines()[0]}") from None
    table.columns = [c.strip().lower() for c in table.columns]
    table = table.loc[:, ~table.columns.duplicated()]  # `label` twice (e.g. "Label" and "label"): the first
    needed = ["path", "label"] if labeled else ["path"]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        layout = "path,label[,group][,split]" if labeled else "path"
        found = ", ".join(repr(c) for c in table.columns[:8]) + (", ..." if len(table.columns) > 8 else "")
        raise UsageError(f"CSV {csv_path} has no column {', '.join(missing)} (read as "
                         f"{DELIMITER_NAMES[sep]}-separated, its columns are {found or 'none'}); expected a "
                         f"header line with {layout}, separated by commas, tabs or semicolons")
    rows = len(table)
    if rows == 0:
        layout = "path,label" if labeled else "path"
        raise UsageError(f"CSV {csv_path} has a header but no rows; add one line per clip ({layout})")
    base = csv_path.parent
    clips: list[Clip] = []
    rejections: list[Rejection] = []
    column = {name: table[name].astype(str).tolist() if name in table.columns else [""] * rows
              for name in ("path", "label", "group", "split")}
    for raw_path, raw_label, raw_group, raw_split in zip(*column.values()):
        rel = raw_path.strip()
        label = raw_label.strip() or None
        group = raw_group.strip() or None
        split = raw_split.strip().lower() or None
        path, rel_posix = joined(base, rel)
        info = _stat(path) if rel else None
        if not rel:
            rejections.append(Rejection("", "list", "blank_path", "the CSV row has an empty path"))
        elif info is None or not stat.S_ISREG(info.st_mode):
            rejections.append(Rejection(rel, "list", "missing_file", f"{path} does not exist"))
        elif labeled and label is None and split != "test":
            rejections.append(Rejection(rel, "list", "blank_label", "the CSV row has an empty label"))
        elif split is not None and split not in SPLITS:
            rejections.append(Rejection(rel, "list", "bad_split",
                                        f"split '{split}' is not one of {', '.join(SPLITS)}"))
        else:
            clips.append(Clip(path, rel_posix, label, group, split if labeled else "test",
                              info.st_size, info.st_mtime_ns))
    return clips, rejections


def joined(base: Path, rel: str) -> tuple[str, str]:
    """`(str(base / rel), Path(rel).as_posix())`, by string operations when `rel` is already in
    pathlib's normal form (no `.` parts, doubled or trailing slashes): building two Path objects
    per row was most of the time a million-row CSV took to list."""
    top = str(base)
    if (top != "." and rel not in ("", ".") and not rel.startswith("./") and not rel.endswith(("/", "/."))
            and "//" not in rel and "/./" not in rel):
        return os.path.join(top, rel), rel
    return str(base / rel), Path(rel).as_posix()


def list_source(src: Path, labeled: bool = True) -> tuple[list[Clip], list[Rejection]]:
    """List a folder or CSV; a missing or empty source is a usage error. A folder's hidden audio
    files are `hidden` rejections (see the module docstring)."""
    src = Path(src)
    if not src.exists():
        raise UsageError(f"{src} does not exist; pass a folder of class subfolders or a CSV with path,label columns"
                         if labeled else f"{src} does not exist; pass a folder of audio files or a CSV with a "
                                         "path column")
    if src.is_file():
        if src.suffix.lower() not in (".csv", ".tsv", ".txt"):
            raise UsageError(f"{src} is a file but not a CSV; pass a folder or a .csv file")
        clips, rejections = list_csv(src, labeled)
    else:
        clips, rejections = list_folder(src, labeled)
    if not clips and not rejections:
        what = "one subfolder per class holding audio files" if labeled else "audio files"
        raise UsageError(f"no audio found in {src}; expected {what} "
                         f"(extensions: {', '.join(sorted(AUDIO_EXTENSIONS))})")
    return clips, rejections


def drop_duplicates(clips: list[Clip], rejections: list[Rejection]) -> list[Clip]:
    """Keep the first listing of each file (by real path); later ones become `duplicate_path`
    rejections, whose detail names both labels where a later row gives the file another one
    (the first row's label is the one used)."""
    first: dict[str, Clip] = {}
    folders: dict[str, str] = {}  # each folder's real path, resolved once
    kept = []
    for clip in clips:
        real = _real_path(clip.path, folders)
        earlier = first.get(real)
        if earlier is None:
            first[real] = clip
            kept.append(clip)
            continue
        detail = f"the same file as {earlier.rel}, listed earlier"
        if clip.label is not None and clip.label != earlier.label:
            detail += f" with label '{earlier.label}'; this row's label '{clip.label}' differs and was not used"
        rejections.append(Rejection(clip.rel, "list", "duplicate_path", detail))
    return kept


def _real_path(path: str, folders: dict[str, str]) -> str:
    """`os.path.realpath(path)`, with the folder part resolved once per folder: one `lstat` per
    file (is it a link?) instead of one per path component."""
    folder, name = os.path.split(path)
    if name in ("", ".", ".."):
        return os.path.realpath(path)
    real_folder = folders.get(folder)
    if real_folder is None:
        real_folder = folders[folder] = os.path.realpath(folder)
    candidate = os.path.join(real_folder, name)
    return os.path.realpath(candidate) if os.path.islink(candidate) else candidate
