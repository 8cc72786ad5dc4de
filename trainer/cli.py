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

from shared.config import AGGREGATES, DEFAULT_AGGREGATE, DEVICES, TrainConfig, from_dict, load_toml
from shared.console import plain
from shared.errors import DataError, UsageError, report
from shared.integrity import POLICIES
from shared.interrupt import STOP_SIGNALS, Interrupts, StopRequest, main_process_interrupts
from shared.location import location
from shared.options import add_options, option_fields
from shared.targets import check_output_folder

ADAPT_HELP = ("re-estimate the BatchNorm statistics on these inputs before predicting (a new domain: unseen "
              "speakers, another microphone); needs many clips of every class")


def _tta_option(command: argparse.ArgumentParser) -> None:
    command.add_argument("--tta", nargs="?", const="shift", default="", choices=["shift", "warp"],
                         help="average the probabilities of three views of each clip: time shifts (shift, the "
                              "default of --tta alone) or frequency warps of 10%% either way (warp)")


def _bad_shard_option(command: argparse.ArgumentParser) -> None:
    command.add_argument("--on-bad-shard", choices=list(POLICIES), default="fail",
                         help="a shard whose size or sha256 differs from the manifest: stop (default) "
                              "or go on without it, reporting the samples lost")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer", description="Train from melshard shards.")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a model from a shard folder")
    train.add_argument("shards", help="shard folder written by python -m preprocess, or its URL "
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
    predict.add_argument("--probabilities", action="store_true", help="add one probability column per class")
    _tta_option(predict)
    predict.add_argument("--adapt-bn", action="store_true", help=ADAPT_HELP)
    predict.add_argument("--allow-missing", action="store_true", help="exit 0 even if some inputs fail")
    predict.add_argument("--device", default="auto", choices=list(DEVICES))
    predict.add_argument("--jobs", type=int, default=0, help="feature processes for raw audio (default all cores)")
    predict.add_argument("--aggregate", choices=list(AGGREGATES), default=DEFAULT_AGGREGATE,
                         help="how the windows of a segmented recording combine into its row: mean, max, or "
                              "confidence (default: a mean weighted by each window's confidence)")
    predict.add_argument("--windows", action="store_true", help="also write OUT.windows.csv, one row per window")

    evaluate = commands.add_parser("evaluate", help="score a run on labeled data and write RUN/report/")
    evaluate.add_argument("run", help="run folder with best.pt")
    source = evaluate.add_mutually_exclusive_group(required=True)
    source.add_argument("--shards", help="shard folder, or its URL (https://..., s3://..., 'pipe:CMD {}')")
    source.add_argument("--input", help="labeled audio: class folders or a CSV with path,label")
    evaluate.add_argument("--split", default="val", help="split of the shard folder (default val)")
    _tta_option(evaluate)
    evaluate.add_argument("--adapt-bn", action="store_true", help=ADAPT_HELP)
    evaluate.add_argument("--device", default="auto", choices=list(DEVICES))
    evaluate.add_argument("--jobs", type=int, default=0)
    evaluate.add_argument("--aggregate", choices=list(AGGREGATES), default=DEFAULT_AGGREGATE,
                          help="how the windows of a segmented recording combine into its prediction "
                               "(default %(default)s)")
    for command in (train, predict, evaluate):
        _bad_shard_option(command)

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


def predict_options(args: argparse.Namespace, **fixed: Any):
    """A `PredictOptions` from the options `predict` or `evaluate` was given, and `fixed` ones."""
    from trainer.predict import PredictOptions

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(PredictOptions) if f.name in vars(args)}
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    caught = Interrupts()
    try:
        if args.command == "train":
            with stop_request(args.stop_signals) as stop:  # from here on, before the slow imports
                from trainer.loop import train

                cfg, explicit = train_config(args)
                status = train(location(args.shards), Path(args.out), cfg, args.resume, explicit, args.on_bad_shard,
                               stop)
                stop.ignore_from_now()  # the run is saved: a signal while the process exits changes nothing
                return status
        if args.command == "predict":
            from trainer.predict import run_predict

            with main_process_interrupts(caught):  # Ctrl-C, SIGTERM: one line here, no worker tracebacks
                return run_predict(Path(args.run), location(args.input), Path(args.out), predict_options(args))
        if args.command == "evaluate":
            from trainer.inference import by_file
            from trainer.predict import lost_clips, predict_any
            from trainer.report import evaluate

            source = location(args.shards) if args.shards else local_input(args.input)
            check_output_folder(Path(args.run) / "report", "the report folder")
            with main_process_interrupts(caught):
                predictor, predicted = predict_any(Path(args.run), source, predict_options(args, labeled=True))
                where = f"{source} [{args.split}]" if args.shards else str(source)
                files, windows = by_file(predicted, args.aggregate)
                evaluate(Path(args.run), predictor.labels, files, where, windows=windows, adapted=predictor.adapted,
                         lost=lost_clips(files.rejected, source, args.split))
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
    except (UsageError, DataError, OSError) as exc:
        status = report(exc, "rerun with --resume (the last complete checkpoint is kept)")
        if status is None:
            raise
        return status
    return 2
