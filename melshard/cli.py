"""`melshard COMMAND ...`: one console command over both halves, in the manner of lhotse or
huggingface-cli. Each subcommand hands its arguments to the command line it names, so
`melshard preprocess SRC ...` is `python -m preprocess SRC ...` and `melshard train ...` is
`python -m trainer train ...`; the subcommand is always the first word, so a corpus folder may
be called `demo` or `inspect`.
"""

from __future__ import annotations

import argparse
import sys

# subcommand -> one-line help; each runs the command line it names with the rest of the arguments
COMMANDS = {
    "preprocess": "decode, trim, augment and write log-mel shards",
    "inspect": "summarise a shard folder, check every shard, draw mel examples",
    "train": "train a model from a shard folder",
    "predict": "predict a shard split or raw audio into a CSV",
    "evaluate": "score a run on labeled data and write RUN/report/",
    "export": "write a run's model as one ONNX file, from raw waveform to class probabilities",
    "demo": "generate a corpus, preprocess, train, evaluate, predict",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="melshard", description="Audio corpus -> log-mel WebDataset shards -> "
                                     "a streaming, resumable classifier.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in COMMANDS.items():
        # The subcommand's own parser does the parsing (and prints its own --help).
        commands.add_parser(name, help=text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args, rest = build_parser().parse_known_args(argv[:1])  # the subcommand alone: the rest is its own
    rest += argv[1:]
    if args.command == "preprocess":
        from preprocess.cli import preprocess_main

        return preprocess_main(rest, prog="melshard preprocess", beside="melshard")
    if args.command == "inspect":
        from preprocess.cli import inspect_main

        return inspect_main(rest, prog="melshard inspect")
    from trainer.cli import main as trainer_main

    return trainer_main([args.command, *rest], prog="melshard")  # usage lines read `melshard train ...`


if __name__ == "__main__":
    raise SystemExit(main())
