"""The preprocessing run: list -> split -> plan -> shards in parallel -> errors.csv -> manifest.

Resumable by construction: the plan is deterministic, every finished shard is journaled after
its atomic rename, and a rerun on the same `--out` keeps a journaled shard whose stat is
unchanged (else hashes it) and redoes only what is missing. The manifest is written last, so
its presence means "complete".
The output is a folder or an fsspec URL (`preprocess.output`); the steps are the same on both.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from joblib import Parallel, delayed, parallel_config
from rich.console import Console

from preprocess.journal import finished_record, listing_fingerprint, plan_fingerprint, prepare_output
from preprocess.output import Output, output
from preprocess.plan import ShardJob, plan_shards
from preprocess.report import class_warnings, imbalance_notes, track
from preprocess.settings import RunOptions
from preprocess.shards import JOURNAL, ShardRecord, write_shard
from preprocess.split import assign_splits
from shared.config import PreprocessConfig
from shared.console import plain
from shared.errors import UsageError
from shared.labels import fit_labels
from shared.location import is_remote
from shared.manifest import ERRORS, MANIFEST, Inputs, Manifest, ShardEntry, Split, Stats
from shared.rejections import rejections_csv
from shared.runtime import available_cores
from shared.sources import HIDDEN, SPLITS, Clip, Rejection, drop_duplicates, list_source
from shared.targets import check_output_folder, check_outside


@dataclass(frozen=True)
class RunResult:
    manifest: Manifest
    errors: list[list[str]]
    seconds: float
    jobs: int
    skipped_shards: int
    processed: int | None = None  # clips this run decoded (0: it only verified finished shards)


# ---------------------------------------------------------------------------------------------
# listing and planning


def gather_inputs(opts: RunOptions, cfg: PreprocessConfig,
                  notes: list[str] | None = None) -> tuple[list[Clip], list[Rejection], list[str]]:
    """All inputs as clips with a split, the rejected ones, and the label list; one-line notices
    for the user (hidden files, labels ignored, the split obtained) go to `notes`. The class
    warnings wait for the run's end (`class_warnings`): they count the clips actually written."""
    notes = notes if notes is not None else []
    clips, rejections = list_source(opts.src, labeled=True)
    if opts.test is not None:
        test_clips, test_rejections = list_source(opts.test, labeled=False)
        clips += test_clips
        rejections += test_rejections
    hidden = [r.path for r in rejections if r.reason == HIDDEN]
    if hidden:
        notes.append(f"note: {len(hidden)} hidden file(s) with an audio extension were not read (names starting "
                     f"with '.' or in hidden folders, e.g. '{min(hidden)}'): each is a row of errors.csv (reason "
                     "hidden), not counted toward --max-rejected")
    clips = drop_duplicates(clips, rejections)
    labels = fit_labels({c.label for c in clips if c.split != "test" and c.label is not None})
    known = set(labels)
    kept = []
    ignored: dict[str, int] = {}
    for clip in clips:
        if clip.label is not None and clip.label not in known:
            if clip.split == "test":  # unlabeled by definition: never rejected for its label
                ignored[clip.label] = ignored.get(clip.label, 0) + 1
                kept.append(dataclasses.replace(clip, label=None))
            else:
                rejections.append(Rejection(clip.rel, "list", "unseen_label",
                                            f"label '{clip.label}' has no training or validation clip"))
        else:
            kept.append(clip)
    if ignored:
        shown = ", ".join(f"'{name}'" for name in sorted(ignored)[:3]) + (", ..." if len(ignored) > 3 else "")
        notes.append(f"note: {sum(ignored.values())} test clip(s) have a label no training or validation "
                     f"clip has ({shown}); it is ignored and they are kept unlabeled (known labels are "
                     "kept for scoring)")
    clips = assign_splits(kept, cfg.val_fraction, cfg.seed, notes)
    return clips, rejections, labels


# ---------------------------------------------------------------------------------------------
# running


# Starting a worker process (an interpreter, its imports, the first FFT plan) costs about 0.6 s
# of a core, what a worker spends on about a hundred clips: a worker is started for each
# POOL_SAMPLES samples of work (clips plus augmented copies), up to --jobs. A smaller run, and
# any run of one shard, is done in this process; the output is the same byte for byte.
# MELSHARD_POOL_SAMPLES overrides it (1: always --jobs workers when there are that many shards).
POOL_SAMPLES = 256
POOL_BYTES = 256 * 2**20  # input bytes that count as that much work (long recordings, --segment)


def pool_size(pending: list[ShardJob], jobs: int, segmented: bool = False) -> int:
    """Processes for `pending`, at most `jobs`: 1 means this process, no pool."""
    setting = os.environ.get("MELSHARD_POOL_SAMPLES", str(POOL_SAMPLES))
    if not setting.isdigit():
        raise UsageError(f"MELSHARD_POOL_SAMPLES={setting!r} is not a whole number; unset it or give e.g. 256")
    per_worker = max(1, int(setting))
    if segmented:  # a recording's window count is not known before decoding: every worker
        return max(1, min(jobs, len(pending)))
    size = sum(item.size or 0 for job in pending for item in job.items)
    work = max(sum(job.samples for job in pending), size / POOL_BYTES * POOL_SAMPLES)  # in samples
    return max(1, min(jobs, len(pending), math.ceil(work / per_worker)))


def run_jobs(pending: list[ShardJob], cfg: PreprocessConfig, out: Output, jobs: int,
             scheduler: str | None = None) -> Iterator[dict]:
    """Shard records as workers finish them: on a dask cluster when `scheduler` is given, else in
    `jobs` local processes (in this process when `jobs` is 1)."""
    if scheduler:
        yield from _run_on_dask(pending, cfg, out, scheduler)
        return
    if jobs == 1:
        for job in pending:
            yield write_shard(job, cfg, str(out), in_worker=False)
        return
    # inner_max_num_threads=1 caps BLAS/OpenMP threads in the loky workers from their start.
    with parallel_config(backend="loky", inner_max_num_threads=1):
        # One shard per dispatch: shards are seconds of work each, and joblib's automatic batching
        # can hand one worker a long tail of them while the other idles.
        parallel = Parallel(n_jobs=jobs, return_as="generator_unordered", batch_size=1)
        yield from parallel(delayed(write_shard)(job, cfg, str(out)) for job in pending)


# The libraries whose exceptions mean "the object store refused" (credentials, permissions, driver).
STORE_LIBRARIES = {"botocore", "aiobotocore", "s3fs", "gcsfs", "google", "adlfs", "azure"}


def _run_on_dask(pending: list[ShardJob], cfg: PreprocessConfig, out: Output, scheduler: str) -> Iterator[dict]:
    """The same shard jobs through joblib's Dask backend. Every worker must see the inputs at the
    same paths (a shared file system) and `out` there too, or reach it as an fsspec URL with its
    own credentials; each writes whole shards exactly as a local worker does (atomic rename, or
    one upload per object), so the output is byte-identical."""
    try:
        from distributed import Client
    except ImportError:
        raise UsageError("--backend dask needs dask.distributed; pip install 'melshard[dask]'") from None
    try:
        client = Client(scheduler, timeout=30)
    except OSError as exc:
        raise UsageError(f"cannot reach the dask scheduler at {scheduler} ({exc}); start it with "
                         "`dask scheduler` and workers with `dask worker ADDRESS`") from None
    with client, parallel_config(backend="dask"):
        parallel = Parallel(n_jobs=-1, return_as="generator_unordered", batch_size=1)
        try:
            yield from parallel(delayed(write_shard)(job, cfg, str(out)) for job in pending)
        except Exception as exc:
            # This process could write (`Output.prepare` checked), so a store's own error from a
            # worker means that worker's environment lacks the driver or the credentials.
            if type(exc).__module__.split(".")[0] not in STORE_LIBRARIES:
                raise
            raise UsageError(f"a dask worker could not write to --out {out} ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); every `dask worker` "
                             "needs the store's driver and credentials in its own environment (for s3: "
                             "AWS_PROFILE or AWS_ACCESS_KEY_ID, and AWS_ENDPOINT_URL for other stores)") from None


def _stats(records: list[ShardRecord], n_mels: int) -> Stats:
    band_sum, band_sumsq, frames = np.zeros(n_mels), np.zeros(n_mels), 0
    for record in records:  # plan order: the same float sums whatever the worker count
        if record.split == "train":
            band_sum += np.asarray(record.stats["sum"])
            band_sumsq += np.asarray(record.stats["sumsq"])
            frames += record.stats["frames"]
    if frames == 0:
        return Stats((0.0,) * n_mels, (1.0,) * n_mels)
    mean = band_sum / frames
    std = np.sqrt(np.maximum(band_sumsq / frames - mean**2, 0.0))
    return Stats(tuple(mean.tolist()), tuple(std.tolist()))


def build_manifest(records: list[ShardRecord], labels: list[str], cfg: PreprocessConfig, total: int,
                   rejected: int, hidden: int, train_copies: dict[str, int]) -> Manifest:
    """The manifest: per split its counts and shards (train: also its augmented copies per
    class), the train statistics, and what became of every input (`hidden` of the `rejected`
    were hidden files)."""
    splits = {}
    for name in SPLITS:
        mine = [record for record in records if record.split == name]
        if not mine:
            continue
        per_class: dict[str, int] = {}
        for record in mine:
            for label, count in record.per_class.items():
                per_class[label] = per_class.get(label, 0) + count
        splits[name] = Split(samples=sum(r.samples for r in mine), clips=sum(r.clips for r in mine),
                             per_class=dict(sorted(per_class.items())),
                             shards=tuple(ShardEntry(r.name, r.samples, r.bytes, r.sha256) for r in mine),
                             copies_per_class=train_copies if name == "train" else None)
    inputs = Inputs(total=total, written=sum(r.clips for r in records), rejected=rejected,
                    # clips longer than duration_s, cropped to it (without audio.segment), and the audio dropped
                    cropped=sum(r.cropped for r in records), cropped_s=round(sum(r.cropped_s for r in records), 3),
                    hidden=hidden)
    return Manifest(cfg, tuple(labels), splits, _stats(records, cfg.audio.n_mels), inputs)


def rejected_items(plan: list[ShardJob], records: list[ShardRecord]) -> set[tuple[str, str]]:
    """(split, relative path) of every planned clip its shard's worker rejected."""
    return {(job.split, row[0]) for job, record in zip(plan, records) for row in record.errors}


def train_counts(plan: list[ShardJob], rejected: set[tuple[str, str]] | None = None,
                 ) -> tuple[dict[str, int], dict[str, int]]:
    """(clips, augmented copies) per train class written, from the plan less the `rejected`
    clips (what `balance_classes` added shows in the copies)."""
    clips: dict[str, int] = {}
    copies: dict[str, int] = {}
    for job in plan:
        if job.split == "train":
            for item in job.items:
                if rejected and (job.split, item.rel) in rejected:
                    continue
                label = item.label or ""
                clips[label] = clips.get(label, 0) + 1
                copies[label] = copies.get(label, 0) + item.copies
    return dict(sorted(clips.items())), dict(sorted(copies.items()))


def check_targets(opts: RunOptions) -> None:
    """A local `--out` that cannot be a writable folder, or lies in a source folder, is refused
    before the inputs are even listed (an object store URL is checked by `Output.prepare`)."""
    if is_remote(opts.out):
        return
    check_output_folder(opts.out)
    for source in (opts.src, opts.test):
        if source is not None:
            check_outside(opts.out, source)


def run(opts: RunOptions, cfg: PreprocessConfig, console: Console | None = None) -> RunResult:
    """Preprocess `opts.src` into shards under `opts.out`; see the module docstring."""
    console = console or Console(stderr=True)
    start = time.perf_counter()
    jobs = opts.jobs or available_cores()
    notes: list[str] = []
    check_targets(opts)
    clips, rejections, labels = gather_inputs(opts, cfg, notes)
    plan = plan_shards(clips, labels, cfg)
    out = output(opts.out)
    out.prepare()

    with out.lock(f"{JOURNAL}/lock"):
        prepare_output(out, plan_fingerprint(plan, labels, cfg), cfg, opts.overwrite, listing_fingerprint(plan))
        for line in notes:  # once the run is under way: a refused run prints only its error
            print(plain(line), file=sys.stderr, flush=True)  # lines that name classes
        records: dict[str, ShardRecord] = {}
        for job in plan:
            record = finished_record(out, job, cfg)
            if record is not None:
                records[job.name] = record
        pending = [job for job in plan if job.name not in records]
        if pending:
            out.remove(MANIFEST)  # present only when everything is
        done_clips = sum(len(j.items) for j in plan if j.name in records)
        total_clips = sum(len(j.items) for j in plan)
        if opts.backend != "dask":
            jobs = pool_size(pending, jobs, cfg.audio.segment)
        shards = run_jobs(pending, cfg, out, jobs, opts.scheduler if opts.backend == "dask" else None)
        try:
            # closing: a stop (Ctrl-C, SIGTERM) that lands outside the pool's own code still ends the
            # pool at once, which kills its workers; left to the garbage collector they outlive us.
            with contextlib.closing(shards):
                for record in track(shards, total_clips, done_clips, console):
                    records[record.name] = record
        except OSError:  # e.g. a full disk: joblib has stopped the workers; free what they left
            out.remove_temporaries()
            raise

        ordered = [records[job.name] for job in plan]
        errors = [[r.path, r.stage, r.reason, r.detail] for r in rejections]
        errors += [row for record in ordered for row in record.errors]
        errors.sort(key=lambda row: (row[0], row[1]))
        total = total_clips + len(rejections)
        failed = rejected_items(plan, ordered)
        train_clips, train_copies = train_counts(plan, failed)
        manifest = build_manifest(ordered, labels, cfg, total, len(errors),
                                  sum(r.reason == HIDDEN for r in rejections), train_copies)
        if manifest.inputs.written + len(errors) != total:
            raise RuntimeError("internal error: an input was neither written nor rejected")
        out.write(ERRORS, rejections_csv(errors))
        out.write(MANIFEST, manifest.to_json())
    written = [clip for clip in clips if (clip.split, clip.rel) not in failed]
    lost: dict[str, int] = {}
    for clip in clips:
        if clip.split != "test" and clip.label is not None and (clip.split, clip.rel) in failed:
            lost[clip.label] = lost.get(clip.label, 0) + 1
    warnings = class_warnings(written, labels, lost) + imbalance_notes(train_clips, cfg.augment.balance_classes)
    for line in warnings:  # from the clips written: a class whose every clip was rejected has none
        print(plain(line), file=sys.stderr, flush=True)
    return RunResult(manifest, errors, time.perf_counter() - start, jobs, len(plan) - len(pending),
                     total_clips - done_clips)
