"""`python -m trainer`: train | predict | evaluate | demo.

    python -m trainer train DIR --out RUN [options]          (see trainer/loop.py)
    python -m trainer predict RUN --input X --out submission.csv
    python -m trainer evaluate RUN --shards DIR [--split val]   (or --input labeled audio)
    python -m trainer export RUN --out model.onnx [--network-only]   (see trainer/export.py)
    python -m trainer demo                                    (synthetic corpus, end to end)

Every option can come from a TOML file (`--config`, keys as in `TrainConfig`); the command line
wins. With `--resume` the run continues from RUN/last.pt with the checkpoint's configuration
(`--resume auto`: or starts it, when RUN holds none yet).

Exit status: 0 done; 2 bad usage or configuration; 1 damaged data (a shard, the manifest, a
checkpoint) or a failed run; 128 + signal number when one of `--stop-signals` stopped training
after saving a checkpoint, or when Ctrl-C (130) or SIGTERM (143) stops `predict` or `evaluate`
(one line, no traceback, nothing half-written).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from shared.config import TrainConfig, from_dict, load_toml
from shared.console import plain
from shared.errors import MelshardError, UsageError, exit_status
from shared.interrupt import STOP_SIGNALS, Interrupts, StopRequest, main_process_interrupts
from shared.location import location
from shared.options import add_options, option_fields
from trainer.options import SHARED, PredictOptions


def build_parser(prog: str = "python -m trainer") -> argparse.ArgumentParser:
    """The trainer command line; `prog` is how usage lines name it (`melshard` for the console command)."""
    parser = argparse.ArgumentParser(prog=prog, description="Train from melshard shards.")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a model from a shard folder")
    train.add_argument("shards", help="shard folder written by preprocess (its --out), or its URL "
                                      "(https://..., s3://..., 'pipe:CMD {}')")
    train.add_argument("--out", required=True, help="run folder (checkpoints, metrics.csv, config.json)")
    train.add_argument("--resume", nargs="?", const=True, default=False, choices=["auto"], metavar="auto",
                       help="continue the run in --out from last.pt (the folder must hold a run); "
                            "--resume auto: continue it if there is one, else start it (for requeued jobs)")
    train.add_argument("--stop-signals", default=",".join(STOP_SIGNALS), metavar="SIG,...",
                       help="signals that save a checkpoint and stop, exiting with 128 + the signal's number "
                            "(default %(default)s; e.g. add SIGUSR2 for a scheduler's early warning)")
    train.add_argument("--config", help="TOML file with TrainConfig keys")
    add_options(train, TrainConfig)  # every TrainConfig field made with `option`

    predict = commands.add_parser("predict", help="predict a shard split or raw audio into a CSV")
    predict.add_argument("run", help="run folder with best.pt")
    predict.add_argument("--input", required=True, help="shard folder (or its URL, as train takes), audio folder, "
                                                        "or CSV with a path column")
    predict.add_argument("--out", required=True, help="CSV to write (filename,label)")
    predict.add_argument("--split", default="test", help="split of a shard folder (default test)")
    add_options(predict, PredictOptions)  # every PredictOptions field made with `option`

    evaluate = commands.add_parser("evaluate", help="score a run on labeled data and write RUN/report/")
    evaluate.add_argument("run", help="run folder with best.pt")
    source = evaluate.add_mutually_exclusive_group(required=True)
    source.add_argument("--shards", help="shard folder, or its URL (https://..., s3://..., 'pipe:CMD {}')")
    source.add_argument("--input", help="labeled audio: class folders or a CSV with path,label")
    evaluate.add_argument("--split", default="val", help="split of the shard folder (default val)")
    add_options(evaluate, PredictOptions, only=SHARED)
    add_options(train, PredictOptions, only=["on_bad_shard"])

    export = commands.add_parser("export", help="write the run's best model as one ONNX file (waveform -> "
                                                "class probabilities)")
    export.add_argument("run", help="run folder with best.pt, or a checkpoint file")
    export.add_argument("--out", required=True, help="ONNX file to write (e.g. model.onnx)")
    export.add_argument("--network-only", action="store_true",
                        help="the network alone: its input is the normalised log-mel [batch, 1, n_mels, frames], "
                             "not the waveform")

    demo = commands.add_parser("demo", help="generate a corpus, preprocess, train, evaluate, predict")
    demo.add_argument("--work", default="work/demo", help="folder for everything the demo makes")
    demo.add_argument("--quick", action="store_true", help="a smaller corpus and fewer epochs (for CI)")
    return parser


def train_config(args: argparse.Namespace) -> tuple[TrainConfig, set[str]]:
    """The TOML file merged with the command line; also which keys the user set explicitly."""
    data = load_toml(args.config) if args.config else {}
    given = {f.name: getattr(args, f.name) for f in option_fields(TrainConfig)}
    given = {key: value for key, value in given.items() if value is not None}
    data.update(given)
    return from_dict(TrainConfig, data), set(data)


def predict_options(args: argparse.Namespace, **fixed: Any) -> PredictOptions:
    """A `PredictOptions` from the options `predict` or `evaluate` was given (a flag left out
    takes the dataclass's default), and `fixed` ones."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(PredictOptions)
             if getattr(args, f.name, None) is not None}
    return PredictOptions(**{**given, **fixed})


def stop_request(names: str) -> StopRequest:
    """`--stop-signals SIGTERM,SIGUSR1` as a `StopRequest`; a name that is no stop signal is refused."""
    try:
        return StopRequest(names.split(","))
    except ValueError as exc:
        raise UsageError(f"--stop-signals: {exc}") from None


def local_input(text: str) -> Path:
    """`evaluate --input`: labeled raw audio, which must be local (a URL names a shard folder)."""
    where = location(text)
    if not isinstance(where, Path):
        raise UsageError(f"--input {text}: labeled audio must be a local folder or CSV; a URL can only name a "
                         "shard folder (evaluate --shards URL, predict --input URL, train URL)")
    return where


def main(argv: list[str] | None = None, prog: str = "python -m trainer") -> int:
    args = build_parser(prog).parse_args(argv)
    caught = Interrupts()
    try:
        if args.command == "train":
            with stop_request(args.stop_signals) as stop:  # from here on, before the slow imports
                from trainer.loop import train

                cfg, explicit = train_config(args)
                status = train(location(args.shards), Path(args.out), cfg, args.resume, explicit,
                               predict_options(args).on_bad_shard,
                               stop)
                stop.ignore_from_now()  # the run is saved: a signal while the process exits changes nothing
                return status
        if args.command == "predict":
            from trainer.predict import run_predict

            with main_process_interrupts(caught):  # Ctrl-C, SIGTERM: one line here, no worker tracebacks
                return run_predict(Path(args.run), location(args.input), Path(args.out), predict_options(args))
        if args.command == "evaluate":
            from trainer.predict import run_evaluate

            source = location(args.shards) if args.shards else local_input(args.input)
            with main_process_interrupts(caught):
                run_evaluate(Path(args.run), source, predict_options(args))
            print(plain(f"wrote {Path(args.run) / 'report'}"))
            return 0
        if args.command == "export":
            from trainer.export import export, run_checkpoint

            written = export(run_checkpoint(Path(args.run)), Path(args.out), args.network_only)
            (name, shape), = written["inputs"].items()
            rate = f" at {written['sample_rate']} Hz" if name == "waveform" else ""
            print(plain(f"wrote {written['path']}: {name} [{', '.join(map(str, shape))}]{rate} -> probabilities "
                        f"over {len(written['labels'])} classes"))
            return 0
        if args.command == "demo":
            # The demo spans both halves and lives above them (melshard/demo.py); this command
            # is kept as an alias of `melshard demo`, the one place trainer/ reaches up.
            from melshard.demo import run_demo

            return run_demo(Path(args.work), args.quick)
    except KeyboardInterrupt:
        # Training saves and exits by itself on Ctrl-C; this is Ctrl-C anywhere else (loading, setting up,
        # predicting, scoring). Outputs are written whole at the end, so nothing partial is left.
        what = {"predict": f"nothing was written to {getattr(args, 'out', '')}",
                "evaluate": f"{getattr(args, 'run', 'RUN')}/report was not (fully) rewritten; rerun the same command",
                "train": "rerun the same command, with --resume once a checkpoint exists"}.get(args.command, "")
        print(plain(caught.line(what)), file=sys.stderr)
        return caught.status
    except (MelshardError, OSError) as exc:
        return exit_status(exc, "rerun with --resume (the last complete checkpoint is kept)")
    return 2
