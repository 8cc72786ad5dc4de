"""FSDD accuracy through the public commands: preprocess -> train -> evaluate -> predict.

Protocols:
  official  train+val from takes 5-49 (val: 5 takes of every speaker and digit, seeded),
            test = takes 0-4 of every speaker (300 clips);
  loso      leave one speaker out: six folds, each testing on a speaker never heard in training
            (val drawn from the other five the same way); prints each fold and the mean.
            Its defaults: one stored copy (configs/fsdd_loso_one_copy_preprocess.toml) and
            centred mel bands at 25 epochs (configs/fsdd_centred_train.toml), the recipe that
            with --adapt-bn --tta warp kept the worst speaker highest over two seeds.

Prints test accuracy, macro-F1, epochs, wall time and training samples/s per fold, and beside
the accuracy the same model's with `evaluate --tta warp` (probabilities averaged over frequency
warps of 10% either way), with `--adapt-bn` (the BatchNorm statistics re-estimated on the test
clips, no labels used: trainer/adapt.py), and with both.

    python bench/fsdd.py --protocol official --model cnn [--width 0.5] [--epochs N]
    python bench/fsdd.py --protocol loso --model cnn [--folds george,lucas]
    python bench/fsdd.py ... --mel-encoding uint8 --work /tmp/melshard-fsdd-u8   (8-bit stored mels)
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import FSDD, REPO, machine, python_env  # noqa: E402

SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
CONFIGS = Path(__file__).resolve().parent / "configs"
# How each fold's test split is scored, beside the plain figure (`accuracy`, scored last):
# test-time augmentation over frequency warps, BatchNorm adapted to the test clips, and both.
VARIANTS = {"warp": ("--tta", "warp"), "adapted": ("--adapt-bn",), "adapted_warp": ("--adapt-bn", "--tta", "warp"),
            "accuracy": ()}


def write_csv(path: Path, test_speaker: str | None, seed: int = 0) -> None:
    """path,label,group,split for one protocol (test_speaker None: the official split)."""
    rng = np.random.default_rng(seed)
    rows = []
    files = sorted(FSDD.glob("*.wav"))
    by_pair: dict[tuple[str, str], list[Path]] = {}
    for file in files:
        digit, speaker, take = file.stem.split("_")
        if (test_speaker is None and int(take) < 5) or speaker == test_speaker:
            rows.append((str(file), digit, speaker, "test"))
        else:
            by_pair.setdefault((speaker, digit), []).append(file)
    for (speaker, digit), group in sorted(by_pair.items()):
        val = set(rng.choice(len(group), size=5, replace=False).tolist())
        rows += [(str(f), digit, speaker, "val" if i in val else "train") for i, f in enumerate(group)]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "group", "split"])
        writer.writerows(rows)


def command(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=python_env(), capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"failed: python -m {' '.join(args)}\n{result.stderr[-2000:]}")
    return result


def fold(work: Path, name: str, test_speaker: str | None, args: argparse.Namespace) -> dict:
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    table = folder / "fsdd.csv"
    write_csv(table, test_speaker)
    start = time.perf_counter()
    command("preprocess", str(table), "--out", str(folder / "shards"), "--config",
            str(args.preprocess_config), "--overwrite", *(["--mel-encoding", args.mel_encoding]
                                                          if args.mel_encoding else []))
    prep = time.perf_counter() - start
    splits = json.loads((folder / "shards" / "manifest.json").read_text())["splits"].values()
    per_sample = sum(e["bytes"] for s in splits for e in s["shards"]) / sum(s["samples"] for s in splits)
    run = folder / f"run-{args.model}"
    train = ["trainer", "train", str(folder / "shards"), "--out", str(run), "--model", args.model,
             "--width", str(args.width), "--config", str(args.train_config)]
    if args.epochs:
        train += ["--epochs", str(args.epochs)]
    if args.seed is not None:
        train += ["--seed", str(args.seed)]
    if (run / "last.pt").exists():
        train.append("--resume")
    command(*train)
    trained = time.perf_counter() - start - prep
    evaluate = ["trainer", "evaluate", str(run), "--shards", str(folder / "shards"), "--split", "test"]
    scored = {}
    for key, options in VARIANTS.items():  # the plain one last: its report is the one left in RUN/report
        command(*evaluate, *options)
        scored[key] = json.loads((run / "report" / "metrics.json").read_text())["accuracy"]
    command("trainer", "predict", str(run), "--input", str(folder / "shards"), "--out", str(folder / "submission.csv"))
    metrics = json.loads((run / "report" / "metrics.json").read_text())
    with (run / "metrics.csv").open() as handle:
        history = list(csv.DictReader(handle))
    result = {"fold": name, **scored, "macro_f1": metrics["macro_f1"],
              "epochs": len(history), "shard_bytes_per_sample": per_sample, "preprocess_s": prep, "train_s": trained,
              "samples_per_s": float(np.mean([float(r["samples_per_s"]) for r in history])),
              "data_wait": float(np.mean([float(r["data_wait_fraction"]) for r in history])),
              "worst_group": metrics.get("worst_group")}
    print(f"{name:10s} test accuracy {result['accuracy']:.2%}  macro-F1 {result['macro_f1']:.4f}  "
          + "".join(f"{' '.join(options)} {result[key]:.2%}  " for key, options in VARIANTS.items() if options)
          + f"epochs {result['epochs']}  {per_sample:,.0f} shard bytes/sample  "
          f"preprocess {prep:.0f} s  train {trained:.0f} s  "
          f"{result['samples_per_s']:.0f} samples/s  data wait {result['data_wait']:.1%}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", choices=["official", "loso"], default="official")
    parser.add_argument("--model", choices=["cnn", "resnet9"], default="cnn")
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=0, help="override the config's epochs")
    parser.add_argument("--seed", type=int, default=None, help="override the config's seed (a fold moves 5-11 "
                                                                "points between seeds: compare recipes over several)")
    parser.add_argument("--mel-encoding", choices=["float16", "uint8"], default=None,
                        help="how the shards store each log-mel (default: the preprocess config's, float16)")
    parser.add_argument("--folds", default=",".join(SPEAKERS), help="loso: speakers to hold out")
    parser.add_argument("--work", default="/tmp/melshard-fsdd")
    parser.add_argument("--preprocess-config", type=Path, default=None,
                        help="default: configs/fsdd_preprocess.toml (official), "
                             "fsdd_loso_one_copy_preprocess.toml (loso)")
    parser.add_argument("--train-config", type=Path, default=None,
                        help="default: configs/fsdd_train.toml (official), fsdd_centred_train.toml (loso)")
    args = parser.parse_args()
    if not FSDD.is_dir():
        sys.exit(f"{FSDD} is absent: this benchmark needs the FSDD recordings")
    loso = args.protocol == "loso"
    if args.preprocess_config is None:
        args.preprocess_config = CONFIGS / ("fsdd_loso_one_copy_preprocess.toml" if loso else "fsdd_preprocess.toml")
    if args.train_config is None:
        args.train_config = CONFIGS / ("fsdd_centred_train.toml" if loso else "fsdd_train.toml")
    work = Path(args.work)
    print(f"# fsdd: {machine()}")
    print(f"# command: python bench/fsdd.py --protocol {args.protocol} --model {args.model} --width {args.width}"
          + (f" --epochs {args.epochs}" if args.epochs else "")
          + (f" --seed {args.seed}" if args.seed is not None else "")
          + (f" --mel-encoding {args.mel_encoding}" if args.mel_encoding else "")
          + (f" --folds {args.folds}" if args.protocol == "loso" else ""))
    print(f"# features: {args.preprocess_config.name}; training: {args.train_config.name}")
    if args.protocol == "official":
        fold(work, "official", None, args)
        return
    results = [fold(work, f"loso-{s}", s, args) for s in args.folds.split(",")]
    for key, options in {"accuracy": (), **VARIANTS}.items():
        how = f" with {' '.join(options)}" if options else ""
        accuracies = [r[key] for r in results]
        worst = results[int(np.argmin(accuracies))]
        print(f"loso mean test accuracy{how} {np.mean(accuracies):.2%} over {len(results)} folds; "
              f"worst speaker {worst['fold'][5:]} at {worst[key]:.2%}")


if __name__ == "__main__":
    main()
