"""The one command tree: `melshard COMMAND ...`, every subcommand's parser built here from the
option declarations (`shared.config.option` fields of the configs and of `PredictOptions`).

`python -m preprocess` and `python -m trainer` (and the `melshard-preprocess` / `melshard-train`
scripts) are aliases of this tree that name themselves in usage lines. `python -m trainer X` is
`melshard X`. `python -m preprocess` has a default command: `python -m preprocess SRC ...` is
`melshard preprocess SRC ...`, while a first word naming a command (`inspect DIR`, `demo`) runs
that command, unless a file or folder of that name exists, which is then the corpus.

Light on purpose: what runs a command is imported only once its arguments have parsed
(`melshard.commands`), so `--help` and a usage error answer at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from preprocess.settings import CONFIG_OPTIONS, flat_name
from shared.config import TrainConfig
from shared.interrupt import STOP_SIGNALS
from shared.options import add_options
from trainer.options import SHARED, PredictOptions

SHARDS_URL = "(https://..., s3://..., 'pipe:CMD {}')"


def _preprocess(parser: argparse.ArgumentParser, prefix: str) -> None:
    parser.epilog = (f"Also: `{prefix} inspect DIR` summarises a shard folder, checks every shard and draws mel "
                     f"examples per class; `{prefix} demo` runs the whole pipeline on a generated corpus.")
    parser.add_argument("src", nargs="?", help="folder of class subfolders, or CSV path,label[,group][,split]")
    parser.add_argument("--out", help="output folder (or fsspec URL, e.g. s3://bucket/shards) for shards, "
                        "manifest.json and errors.csv (default shards/NAME, NAME being SRC's name without "
                        "its extension)")
    parser.add_argument("--test", help="unlabeled folder or CSV (path column): the test split")
    parser.add_argument("--jobs", type=int, help="worker processes (default: all cores)")
    parser.add_argument("--config", help="TOML file with any of these options")
    parser.add_argument("--overwrite", action="store_true", default=None,
                        help="replace an --out made with a different config")
    for config in CONFIG_OPTIONS:  # every field made with `shared.config.option`
        add_options(parser, config, flat_name(config))
    parser.add_argument("--backend", choices=["local", "dask"],
                        help="where shard jobs run: local joblib processes (default), or a dask.distributed cluster")
    parser.add_argument("--scheduler", help="with --backend dask: the scheduler address, e.g. tcp://HOST:8786")


def _inspect(parser: argparse.ArgumentParser, prefix: str) -> None:
    parser.add_argument("folder", help="shard folder with manifest.json")


def _train(parser: argparse.ArgumentParser, prefix: str) -> None:
    parser.add_argument("shards", help=f"shard folder written by preprocess (its --out), or its URL {SHARDS_URL}")
    parser.add_argument("--out", required=True, help="run folder (checkpoints, metrics.csv, config.json)")
    parser.add_argument("--resume", nargs="?", const=True, default=False, choices=["auto"], metavar="auto",
                        help="continue the run in --out from last.pt (the folder must hold a run); "
                             "--resume auto: continue it if there is one, else start it (for requeued jobs)")
    parser.add_argument("--stop-signals", default=",".join(STOP_SIGNALS), metavar="SIG,...",
                        help="signals that save a checkpoint and stop, exiting with 128 + the signal's number "
                             "(default %(default)s; e.g. add SIGUSR2 for a scheduler's early warning)")
    parser.add_argument("--config", help="TOML file with TrainConfig keys")
    add_options(parser, TrainConfig)  # every TrainConfig field made with `option`
    add_options(parser, PredictOptions, only=["on_bad_shard"])


def _predict(parser: argparse.ArgumentParser, prefix: str) -> None:
    parser.add_argument("run", help="run folder with best.pt")
    parser.add_argument("--input", required=True, help="shard folder (or its URL, as train takes), audio folder, "
                                                       "or CSV with a path column")
    parser.add_argument("--out", required=True, help="CSV to write (filename,label)")
    parser.add_argument("--split", default="test", help="split of a shard folder (default test)")
    add_options(parser, PredictOptions)  # every PredictOptions field made with `option`


def _evaluate(parser: argparse.ArgumentParser, prefix: str) -> None:
    parser.add_argument("run", help="run folder with best.pt")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--shards", help=f"shard folder, or its URL {SHARDS_URL}")
    source.add_argument("--input", help="labeled audio: class folders or a CSV with path,label")
    parser.add_argument("--split", default="val", help="split of the shard folder (default val)")
    add_options(parser, PredictOptions, only=SHARED)


def _export(parser: argparse.ArgumentParser, prefix: str) -> None:
    parser.add_argument("run", help="run folder with best.pt, or a checkpoint file")
    parser.add_argument("--out", required=True, help="ONNX file to write (e.g. model.onnx)")
    parser.add_argument("--network-only", action="store_true",
                        help="the network alone: its input is the normalised log-mel [batch, 1, n_mels, frames], "
                             "not the waveform")


def _demo(parser: argparse.ArgumentParser, prefix: str) -> None:
    parser.add_argument("--work", default="work/demo", help="folder for everything the demo makes")
    parser.add_argument("--quick", action="store_true", help="a smaller corpus and fewer epochs (for CI)")


# subcommand -> (one-line help, what adds its arguments); `melshard.commands` runs each
COMMANDS = {
    "preprocess": ("decode, trim, augment and write log-mel shards", _preprocess),
    "inspect": ("summarise a shard folder, check every shard, draw mel examples", _inspect),
    "train": ("train a model from a shard folder", _train),
    "predict": ("predict a shard split or raw audio into a CSV", _predict),
    "evaluate": ("score a run on labeled data and write RUN/report/", _evaluate),
    "export": ("write a run's model as one ONNX file, from raw waveform to class probabilities", _export),
    "demo": ("generate a corpus, preprocess, train, evaluate, predict", _demo),
}


def build_parser(prog: str = "melshard", default: str | None = None) -> argparse.ArgumentParser:
    """The tree, its usage lines naming `prog`. The `default` command's parser is named `prog`
    itself (`python -m preprocess SRC`), its siblings `prog NAME`."""
    parser = argparse.ArgumentParser(prog=prog, description="Audio corpus -> log-mel WebDataset shards -> "
                                                            "a streaming, resumable classifier.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (text, add) in COMMANDS.items():
        sub = commands.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".",
                                  prog=prog if name == default else f"{prog} {name}")
        add(sub, prog)
    return parser


def command_parser(name: str, prog: str = "melshard") -> argparse.ArgumentParser:
    """One command's parser in the tree (its flags, its help)."""
    commands = next(a for a in build_parser(prog)._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices[name]


def parse(argv: list[str], prog: str = "melshard", default: str | None = None) -> argparse.Namespace:
    """The arguments of one command line. With a `default` command, the words go to it unless the
    first one names another command and no file or folder of that name exists."""
    if default is not None and not (argv and argv[0] in COMMANDS and not Path(argv[0]).exists()):
        argv = [default, *argv]
    return build_parser(prog, default).parse_args(argv)


def main(argv: list[str] | None = None, prog: str = "melshard", default: str | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else list(argv), prog, default)
    from melshard.commands import run

    return run(args, preprocess_as=prog if default == "preprocess" else f"{prog} preprocess")


def preprocess_alias() -> int:
    """`python -m preprocess`, `melshard-preprocess`: the tree, `preprocess` by default."""
    return main(prog=_invoked_as("preprocess"), default="preprocess")


def trainer_alias() -> int:
    """`python -m trainer`, `melshard-train`: the tree under that name."""
    return main(prog=_invoked_as("trainer"))


def _invoked_as(module: str) -> str:
    script = Path(sys.argv[0]).name
    return f"python -m {module}" if script == "__main__.py" else script


if __name__ == "__main__":
    raise SystemExit(main())
