"""What each command of the tree (`melshard.cli`) does with its parsed arguments, and the one
guard that turns a stop or an error into one line and an exit status.

Exit status: 0 done; 2 bad usage or configuration; 1 damaged data (a shard, the manifest, a
checkpoint), no sample written, too many rejected inputs or a failed run; 128 + signal number
when a stop signal ended the command: training saves a checkpoint first (`--stop-signals`),
preprocess keeps its finished shards (rerun the same command to resume), predict and evaluate
leave nothing half-written.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from preprocess.settings import CONFIG_OPTIONS, flat_name, resolve_options
from shared.config import TrainConfig, from_dict, load_toml
from shared.console import counted, plain
from shared.errors import MelshardError, UsageError, exit_status
from shared.interrupt import Interrupts, StopRequest, main_process_interrupts
from shared.location import location
from shared.options import option_fields
from trainer.options import PredictOptions

# What a stop (Ctrl-C, SIGTERM) leaves behind, and what to do after an error, per command.
STOPPED = {
    "preprocess": lambda args: "finished shards are kept; rerun the same command to resume",
    "train": lambda args: "rerun the same command, with --resume once a checkpoint exists",
    "predict": lambda args: f"nothing was written to {args.out}",
    "evaluate": lambda args: f"{args.run}/report was not (fully) rewritten; rerun the same command",
}
RETRY = {"preprocess": "rerun the same command (finished shards are kept)", "inspect": "rerun the same command"}


def run(args: argparse.Namespace, preprocess_as: str = "melshard preprocess") -> int:
    """Run the parsed command; its exit status. `preprocess_as` is how the user calls preprocess
    (for the hint after damaged shards)."""
    caught = Interrupts()
    try:
        if args.command == "inspect":
            return inspect(args, preprocess_as)
        return HANDLERS[args.command](args, caught)
    except KeyboardInterrupt:
        # Training saves and exits by itself on a stop signal; this is a stop anywhere else.
        # Outputs are written whole at the end, so nothing partial is left.
        what = STOPPED.get(args.command, lambda args: "")(args)
        print(plain(caught.line(what)), file=sys.stderr)
        return caught.status
    except (MelshardError, OSError) as exc:
        return exit_status(exc, RETRY.get(args.command, "rerun with --resume (the last complete checkpoint "
                                                        "is kept)"))


# ---------------------------------------------------------------------------------------------
# preprocess, inspect


def preprocess_options(args: argparse.Namespace):
    """Merge the TOML file and the command line (which wins) into `RunOptions` and a config."""
    data: dict[str, Any] = load_toml(args.config) if args.config else {}
    given = {"src": args.src, "out": args.out, "test": args.test, "jobs": args.jobs, "overwrite": args.overwrite}
    for config in CONFIG_OPTIONS:
        flat = flat_name(config)
        given.update({flat(f.name): getattr(args, flat(f.name)) for f in option_fields(config)})
    return resolve_options(data, given, args.backend, args.scheduler)


def preprocess(args: argparse.Namespace, caught: Interrupts) -> int:
    from rich.console import Console

    from preprocess.pipeline import run as run_preprocess
    from preprocess.report import summary
    from preprocess.settings import failure
    from shared.runtime import limit_threads, tune_allocator

    opts, cfg = preprocess_options(args)
    # This process only preprocesses, and a small or --jobs 1 run does its clips here: tune it
    # as a worker is tuned (a run called as a library leaves its caller's process alone).
    # --jobs 1 went from 155.7 to 242.6 clips/s steady (bench/preprocess_throughput.py,
    # BENCHMARKS.md runs C and D).
    tune_allocator()
    limit_threads()
    with main_process_interrupts(caught):  # Ctrl-C, SIGTERM: one line, no worker tracebacks
        result = run_preprocess(opts, cfg, Console(stderr=True))
    manifest = result.manifest
    summary(manifest, result.errors, result.seconds, result.jobs, Console(), result.processed)
    if result.skipped_shards:
        print(f"resumed: {result.skipped_shards} finished shard(s) were verified and kept")
    print(plain(f"wrote {opts.out}/manifest.json and {opts.out}/errors.csv"))
    problem = failure(manifest, cfg.max_rejected, opts.out)
    if problem:
        print(plain(f"error: {problem}"), file=sys.stderr)
        return 1
    return 0


def inspect(args: argparse.Namespace, preprocess_as: str) -> int:
    from preprocess.inspect import inspect as inspect_folder

    _, bad = inspect_folder(Path(args.folder))
    if bad:  # named above; the status tells a script that these shards are not fit to train on
        print(plain(f"error: {counted(len(bad), 'damaged shard')} in {args.folder}; rerun the "
                    f"same `{preprocess_as} ... --out {args.folder}` to rewrite "
                    f"{'them' if len(bad) != 1 else 'it'}"), file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------------------------------------
# train, predict, evaluate, export, demo


def train_config(args: argparse.Namespace) -> tuple[TrainConfig, set[str]]:
    """The TOML file merged with the command line; also which keys the user set explicitly."""
    data = load_toml(args.config) if args.config else {}
    given = {f.name: getattr(args, f.name) for f in option_fields(TrainConfig)}
    data.update({key: value for key, value in given.items() if value is not None})
    return from_dict(TrainConfig, data), set(data)


def predict_options(args: argparse.Namespace, **fixed: Any) -> PredictOptions:
    """A `PredictOptions` from the options a command was given (a flag left out takes the
    dataclass's default), and `fixed` ones."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(PredictOptions)
             if getattr(args, f.name, None) is not None}
    return PredictOptions(**{**given, **fixed})


def stop_request(names: str) -> StopRequest:
    """`--stop-signals SIGTERM,SIGUSR1` as a `StopRequest`; a name that is no stop signal is refused."""
    try:
        return StopRequest(names.split(","))
    except ValueError as exc:
        raise UsageError(f"--stop-signals: {exc}") from None


def train(args: argparse.Namespace, caught: Interrupts) -> int:
    with stop_request(args.stop_signals) as stop:  # from here on, before the slow imports
        from trainer.loop import train as train_run

        cfg, explicit = train_config(args)
        status = train_run(location(args.shards), Path(args.out), cfg, args.resume, explicit,
                           predict_options(args).on_bad_shard, stop)
        stop.ignore_from_now()  # the run is saved: a signal while the process exits changes nothing
        return status


def predict(args: argparse.Namespace, caught: Interrupts) -> int:
    from trainer.predict import run_predict

    with main_process_interrupts(caught):  # Ctrl-C, SIGTERM: one line here, no worker tracebacks
        return run_predict(Path(args.run), location(args.input), Path(args.out), predict_options(args))


def local_input(text: str) -> Path:
    """`evaluate --input`: labeled raw audio, which must be local (a URL names a shard folder)."""
    where = location(text)
    if not isinstance(where, Path):
        raise UsageError(f"--input {text}: labeled audio must be a local folder or CSV; a URL can only name a "
                         "shard folder (evaluate --shards URL, predict --input URL, train URL)")
    return where


def evaluate(args: argparse.Namespace, caught: Interrupts) -> int:
    from trainer.predict import run_evaluate

    source = location(args.shards) if args.shards else local_input(args.input)
    with main_process_interrupts(caught):
        run_evaluate(Path(args.run), source, predict_options(args))
    print(plain(f"wrote {Path(args.run) / 'report'}"))
    return 0


def export(args: argparse.Namespace, caught: Interrupts) -> int:
    from trainer.export import export as export_onnx
    from trainer.export import run_checkpoint

    written = export_onnx(run_checkpoint(Path(args.run)), Path(args.out), args.network_only)
    (name, shape), = written["inputs"].items()
    rate = f" at {written['sample_rate']} Hz" if name == "waveform" else ""
    print(plain(f"wrote {written['path']}: {name} [{', '.join(map(str, shape))}]{rate} -> probabilities "
                f"over {len(written['labels'])} classes"))
    return 0


def demo(args: argparse.Namespace, caught: Interrupts) -> int:
    from melshard.demo import run_demo

    return run_demo(Path(args.work), args.quick)


HANDLERS = {"preprocess": preprocess, "train": train, "predict": predict, "evaluate": evaluate,
            "export": export, "demo": demo}
