"""`python -m trainer train DIR --out RUN`: train a classifier from shards (see trainer/loop.py).

Every option can come from a TOML file (`--config`, keys as in `TrainConfig`); the command line
wins. With `--resume` the run continues from RUN/last.pt with the checkpoint's configuration.

Exit status: 0 done; 2 bad usage or configuration; 1 a failed run; 128 + signal number when
stopped by SIGTERM or Ctrl-C after saving a checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shared.config import TrainConfig, from_dict, load_toml
from shared.errors import UsageError

# command-line option -> TrainConfig field (argparse dest)
TRAIN_OPTIONS = {
    "--model": dict(choices=["cnn", "resnet9"], help="classifier (default cnn)"),
    "--width": dict(type=float, help="channel multiplier (default 1.0)"),
    "--epochs": dict(type=int, help="maximum epochs (default 80)"),
    "--batch-size": dict(type=int, help="samples per batch (default 32)"),
    "--lr": dict(type=float, help="peak learning rate (default 1e-3)"),
    "--schedule": dict(choices=["cosine", "onecycle"], help="LR schedule (default cosine)"),
    "--amp": dict(choices=["auto", "off", "bf16", "fp16"], help="mixed precision (default auto: on for CUDA)"),
    "--mixup-p": dict(type=float, help="probability of mixing a batch (default 0.5)"),
    "--patience": dict(type=int, help="early-stopping patience in epochs (default 10)"),
    "--early-stop-metric": dict(choices=["val_loss", "val_acc", "val_f1"], help="default val_loss"),
    "--device": dict(choices=["auto", "cpu", "cuda"], help="default auto"),
    "--seed": dict(type=int, help="default 42"),
    "--num-workers": dict(type=int, help="loader processes (default cores - 1)"),
    "--checkpoint-every": dict(type=int, help="also save last.pt every N steps"),
    "--channels-last": dict(action="store_true", default=None, help="channels-last memory format"),
    "--compile": dict(action="store_true", default=None, help="torch.compile the model"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer", description="Train from melshard shards.")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a model from a shard folder")
    train.add_argument("shards", help="shard folder written by python -m preprocess")
    train.add_argument("--out", required=True, help="run folder (checkpoints, metrics.csv, config.json)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from last.pt")
    train.add_argument("--config", help="TOML file with TrainConfig keys")
    for flag, spec in TRAIN_OPTIONS.items():
        train.add_argument(flag, **spec)
    return parser


def train_config(args: argparse.Namespace) -> tuple[TrainConfig, set[str]]:
    """The TOML file merged with the command line; also which keys the user set explicitly."""
    data = load_toml(args.config) if args.config else {}
    given = {flag[2:].replace("-", "_"): getattr(args, flag[2:].replace("-", "_")) for flag in TRAIN_OPTIONS}
    given = {key: value for key, value in given.items() if value is not None}
    data.update(given)
    return from_dict(TrainConfig, data), set(data)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            from trainer.loop import train

            cfg, explicit = train_config(args)
            return train(Path(args.shards), Path(args.out), cfg, args.resume, explicit)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 2
