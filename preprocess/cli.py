"""`python -m preprocess SRC --out DIR`: an audio corpus -> WebDataset shards + manifest.

`python -m preprocess demo` generates a synthetic corpus and preprocesses it (no data needed);
`python -m preprocess inspect DIR` summarises a shard folder and draws mel examples per class.

SRC is a folder with one subfolder per class, or a CSV `path,label[,group][,split]`. Every
option can come from a TOML file (`--config`): top-level keys for the options below, `[audio]`
and `[augment]` tables for the feature and augmentation settings; the command line wins.

Exit status: 0 done; 2 bad usage or configuration; 1 no sample written, too many rejected
inputs, damaged data (`inspect`: a shard, the manifest) or a failed run; 130 interrupted (rerun
the same command to resume).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from preprocess.pipeline import RunOptions, run
from preprocess.report import summary
from preprocess.settings import CONFIG_OPTIONS, DEMO_CONFIG, failure, flat_name, resolve_options
from preprocess.synth import make_demo_corpus
from shared.config import PreprocessConfig, load_toml
from shared.console import counted, plain
from shared.errors import MelshardError, exit_status
from shared.interrupt import Interrupts, main_process_interrupts
from shared.manifest import Manifest
from shared.options import add_options, option_fields
from shared.runtime import limit_threads, tune_allocator


def build_parser(prog: str = "python -m preprocess", beside: str = "python -m preprocess") -> argparse.ArgumentParser:
    """The preprocess command line. `prog` is how usage lines name it, `beside` the prefix of its
    sibling commands (`melshard preprocess` has `melshard inspect` and `melshard demo`)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Decode, trim, augment and turn audio into log-mel WebDataset shards.",
        epilog=f"Also: `{beside} inspect DIR` summarises a shard folder, checks every shard and draws mel "
               f"examples per class; `{beside} demo` preprocesses a generated corpus (no data needed).",
    )
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
    return parser


def resolve(args: argparse.Namespace) -> tuple[RunOptions, PreprocessConfig]:
    """Merge the TOML file and the command line (which wins) into options and a config."""
    data: dict[str, Any] = load_toml(args.config) if args.config else {}
    given = {"src": args.src, "out": args.out, "test": args.test, "jobs": args.jobs, "overwrite": args.overwrite}
    for config in CONFIG_OPTIONS:
        flat = flat_name(config)
        given.update({flat(f.name): getattr(args, flat(f.name)) for f in option_fields(config)})
    return resolve_options(data, given, args.backend, args.scheduler)


def demo_parser(prog: str = "python -m preprocess demo") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Generate a synthetic 8-class corpus (with a test set and a few broken "
                    "files) and preprocess it into shards.",
    )
    parser.add_argument("--work", default="work/demo", help="folder for the generated corpus")
    parser.add_argument("--out", default="shards/demo", help="output folder for the shards")
    parser.add_argument("--jobs", type=int, default=0, help="worker processes (default: all cores)")
    return parser


def demo_options(args: argparse.Namespace) -> tuple[RunOptions, PreprocessConfig]:
    corpus = Path(args.work) / "corpus"
    if not (corpus / "test_labels.csv").exists():
        print(plain(f"generating the demo corpus in {corpus}"), file=sys.stderr)
        make_demo_corpus(corpus)
    return RunOptions(corpus / "train", Path(args.out), corpus / "test", args.jobs), DEMO_CONFIG


def inspect_main(argv: list[str], prog: str = "python -m preprocess inspect") -> int:
    parser = argparse.ArgumentParser(prog=prog,
                                     description="Summarise a shard folder and draw mel examples per class.")
    parser.add_argument("folder", help="shard folder with manifest.json")
    args = parser.parse_args(argv)
    from preprocess.inspect import inspect

    try:
        _, bad = inspect(Path(args.folder))
    except (MelshardError, OSError) as exc:  # a damaged manifest or shard: one line, as everywhere
        return exit_status(exc, "rerun the same command")
    if bad:  # named above; the status tells a script that these shards are not fit to train on
        print(plain(f"error: {counted(len(bad), 'damaged shard')} in {args.folder}; rerun the "
                    f"same `python -m preprocess ... --out {args.folder}` to rewrite "
                    f"{'them' if len(bad) != 1 else 'it'}"), file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m preprocess SRC ...`, `... demo ...` or `... inspect DIR`. A first word `demo` or
    `inspect` names the subcommand unless a file or folder of that name exists (then it is the
    corpus); `melshard preprocess|demo|inspect` never has to guess."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "inspect" and not Path(argv[0]).exists():
        return inspect_main(argv[1:])
    if argv and argv[0] == "demo" and not Path(argv[0]).exists():
        return preprocess_main(argv[1:], demo=True)
    return preprocess_main(argv)


def preprocess_main(argv: list[str], demo: bool = False, prog: str = "python -m preprocess",
                    beside: str = "python -m preprocess") -> int:
    """Preprocess a corpus (`demo`: the generated demo corpus) into shards; the exit status.
    `prog` and `beside` name the command and its siblings in --help (`build_parser`)."""
    args = (demo_parser(f"{beside} demo") if demo else build_parser(prog, beside)).parse_args(argv)
    console = Console(stderr=True)
    caught = Interrupts()
    try:
        opts, cfg = demo_options(args) if demo else resolve(args)
        # This process only preprocesses, and a small or --jobs 1 run does its clips here: tune it
        # as a worker is tuned (a run called as a library leaves its caller's process alone).
        # --jobs 1 went from 155.7 to 242.6 clips/s steady (bench/preprocess_throughput.py,
        # BENCHMARKS.md runs C and D).
        tune_allocator()
        limit_threads()
        with main_process_interrupts(caught):  # Ctrl-C, SIGTERM: the line below, no worker tracebacks
            result = run(opts, cfg, console)
    except KeyboardInterrupt:
        print(caught.line("finished shards are kept; rerun the same command to resume"), file=sys.stderr)
        return caught.status
    except (MelshardError, OSError) as exc:
        return exit_status(exc, "rerun the same command (finished shards are kept)")
    manifest = Manifest.from_dict(result.manifest)
    summary(manifest, result.errors, result.seconds, result.jobs, Console(), result.processed)
    if result.skipped_shards:
        print(f"resumed: {result.skipped_shards} finished shard(s) were verified and kept")
    print(plain(f"wrote {opts.out}/manifest.json and {opts.out}/errors.csv"))
    problem = failure(manifest, cfg.max_rejected, opts.out)
    if problem:
        print(plain(f"error: {problem}"), file=sys.stderr)
        return 1
    return 0
