"""The development suite: one training recipe scored on every development corpus, held-out groups.

Corpora (read-only, beside the checkout in ../shared/data): FSDD (spoken digits, 6 speakers,
leave one speaker out: 6 folds), RAVDESS (8 emotions, 24 actors, 3 folds of 8 actors) and the
Speech Commands test set (12 classes, 239 speakers, 3 folds of speakers; its background-noise
clips have no speaker and are spread over the folds one by one). A fold's groups are never in
its training data. A recipe is a TOML of `TrainConfig` keys, with optional `[audio]` and
`[augment]` tables that change the suite's features for every corpus (no recipe: the defaults).

Two modes, so that a recipe is chosen without looking at the test folds:
  --select  for each outer fold, a fifth of its training groups (at least one) is held out as
            selection groups; the model trains on the rest and is scored on them. The fold's
            own test groups are not in these shards at all. Every figure is appended to
            bench/results/recipes.jsonl, and a run already recorded there is not repeated.
  --test    the chosen recipe trains on the whole training fold and is scored once on the test
            fold; figures go to bench/results/tests.jsonl (a recorded run is not repeated).
In both, early stopping and best.pt follow a 10% clip-level validation split of the training
groups (stratified by label), never the scored groups. Every run's best.pt is also scored with
each test-time option (`TEST_TIME`: --adapt-bn, --tta shift, --tta warp); `--report` ends with
their suite means against the plain prediction's.

Each fold's shards are made once per features config and fold split (the split CSV and the
features hashed into the folder's name under --cache) and shared by every recipe and seed:
preprocessing all three corpora once takes about 26 s here, a fold's training minutes.
Training uses `--threads` torch threads (default 1) and one loader worker. At cnn width 0.5 and
the default 8 epochs, two seeds of the whole suite take about an hour on this 2-core machine.

    python bench/suite.py --select [--recipe bench/configs/fsdd_centred_train.toml] [--seeds 0,1]
                          [--corpora fsdd,ravdess,speech_commands] [--folds 0,2] [--epochs 8]
    python bench/suite.py --test --recipe R
    python bench/suite.py --select --recipe R --report      # print what is recorded, train nothing
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, machine  # noqa: E402
from shared.config import TrainConfig, from_dict, load_toml  # noqa: E402
from shared.errors import UsageError, one_line  # noqa: E402

DATA = REPO.parent / "shared" / "data"
CONFIGS = Path(__file__).resolve().parent / "configs"
RESULTS = Path(__file__).resolve().parent / "results"
PROTOCOL = "suite/1"  # bump when folds, carving or scoring change: older records then no longer match
PROTOCOL_SEED = 0  # folds and carved groups: fixed, whatever the training seed
SELECT_FRACTION = 0.2  # share of a training fold's clips held out as selection groups (--select)
VAL_FRACTION = 0.1  # clip-level validation split of the training groups, for early stopping
BASE_TRAIN = {"model": "cnn", "width": 0.5}  # a recipe's keys override these

# ---------------------------------------------------------------------------------------------
# corpora


@dataclass(frozen=True)
class Corpus:
    name: str
    listing: Callable[[], pd.DataFrame]  # path (absolute), label, group: one row per clip
    folds: int  # 0: one fold per group (leave one group out)
    features: dict  # preprocess config in the TOML layout: `audio` and `augment` tables
    loose_groups: tuple[str, ...] = ()  # groups that are no one's: their clips are spread one by one
    present: Callable[[], bool] = field(default=lambda: True)


def _fsdd() -> pd.DataFrame:
    files = sorted((DATA / "fsdd" / "recordings").glob("*.wav"))
    parts = [f.stem.split("_") for f in files]
    return pd.DataFrame({"path": [str(f) for f in files], "label": [p[0] for p in parts],
                         "group": [p[1] for p in parts]})


def _labels_csv(folder: Path) -> Callable[[], pd.DataFrame]:
    def listing() -> pd.DataFrame:
        frame = pd.read_csv(folder / "labels.csv", dtype=str)
        frame["path"] = [str(folder / p) for p in frame["path"]]
        return frame[["path", "label", "group"]]
    return listing


def _features(sr: int, duration_s: float, n_fft: int, hop: int, shift_s: float) -> dict:
    """Speech features as FSDD's were measured (bench/configs/fsdd_preprocess.toml: trim at 50 dB,
    dB relative to each clip's maximum, 64 mels) at the corpus's own rate, one augmented copy."""
    return {"audio": {"sr": sr, "duration_s": duration_s, "n_fft": n_fft, "hop_length": hop, "n_mels": 64,
                      "fmin": 20.0, "fmax": sr / 2, "top_db": 50.0, "db_reference": "clip_max"},
            "augment": {"copies": 1, "shift_s": shift_s}}


def _fsdd_features() -> dict:
    data = load_toml(CONFIGS / "fsdd_loso_one_copy_preprocess.toml")
    return {"audio": data["audio"], "augment": data["augment"]}


CORPORA = {
    # one stored copy of the leave-one-speaker-out features (pitch up to 3 semitones, speed, cut...)
    "fsdd": Corpus("fsdd", _fsdd, 0, _fsdd_features(), present=lambda: (DATA / "fsdd" / "recordings").is_dir()),
    # 2.9-5.3 s recordings, trimmed: 3 s keeps the sentence; 16 ms hop (188 frames)
    "ravdess": Corpus("ravdess", _labels_csv(DATA / "ravdess"), 3, _features(16000, 3.0, 512, 256, 0.3),
                      present=lambda: (DATA / "ravdess" / "labels.csv").is_file()),
    # one-second words; 8 ms hop (126 frames, as FSDD's)
    "speech_commands": Corpus("speech_commands", _labels_csv(DATA / "speech_commands_test"), 3,
                              _features(16000, 1.0, 512, 128, 0.1), loose_groups=("noise",),
                              present=lambda: (DATA / "speech_commands_test" / "labels.csv").is_file()),
}

# ---------------------------------------------------------------------------------------------
# folds and splits


def units(frame: pd.DataFrame, loose: tuple[str, ...] = ()) -> pd.Series:
    """The unit each clip moves with between folds and splits: its group, or itself when its
    group is loose (background noise belongs to no speaker)."""
    return pd.Series([p if g in loose else g for p, g in zip(frame["path"], frame["group"])], index=frame.index)


def _balanced(unit_sizes: pd.Series, k: int, seed: int) -> dict[str, int]:
    """Units into k bins of about equal clip counts: largest first (ties in a seeded order), each
    to the bin with the fewest clips so far."""
    rng = np.random.default_rng(seed)
    order = unit_sizes.index[rng.permutation(len(unit_sizes))]
    ranked = sorted(order, key=lambda u: -unit_sizes[u])  # stable: ties keep the seeded order
    totals, where = [0] * k, {}
    for unit in ranked:
        b = int(np.argmin(totals))
        where[unit] = b
        totals[b] += int(unit_sizes[unit])
    return where


def assign_folds(frame: pd.DataFrame, corpus: Corpus) -> tuple[pd.Series, list[str]]:
    """Each clip's outer fold index, and the folds' names (the group's name when one per group)."""
    unit = units(frame, corpus.loose_groups)
    if corpus.folds == 0:
        names = sorted(frame["group"].unique())
        return frame["group"].map({g: i for i, g in enumerate(names)}), names
    where = _balanced(unit.value_counts(), corpus.folds, PROTOCOL_SEED)
    return unit.map(where), [f"fold{i}" for i in range(corpus.folds)]


def carve(unit: pd.Series, fraction: float, seed: int, among: set[str] | None = None) -> set[str]:
    """Whole units, in a seeded order, until they hold `fraction` of the clips (at least one
    unit, never all of them); only units in `among` when given."""
    sizes = unit.value_counts().sort_index()
    order = sizes.index[np.random.default_rng(seed).permutation(len(sizes))]
    if among is not None:
        order = [u for u in order if u in among]
    chosen, held = set(), 0
    for u in order[: len(sizes) - 1]:
        if chosen and held >= fraction * len(unit):
            break
        chosen.add(u)
        held += int(sizes[u])
    return chosen


def _val_clips(frame: pd.DataFrame, fraction: float, seed: int) -> pd.Series:
    """A clip-level validation split of training rows, stratified by label (early stopping only)."""
    rng = np.random.default_rng(seed)
    val = pd.Series(False, index=frame.index)
    for _, rows in frame.groupby("label", sort=True):
        n = int(round(fraction * len(rows)))
        if 0 < n < len(rows):
            val[rng.choice(rows.index.to_numpy(), size=n, replace=False)] = True
    return val


def split_table(frame: pd.DataFrame, corpus: Corpus, fold: int, mode: str) -> pd.DataFrame:
    """path,label,group,split for one outer fold. select: the fold's test clips left out, selection
    groups as `test`, drawn from the next fold's groups (so each fold's are different ones, and
    leaving one speaker out each speaker is scored once); test: the fold as `test`. Either way a
    clip-level `val` of the training groups for early stopping."""
    folds, names = assign_folds(frame, corpus)
    unit = units(frame, corpus.loose_groups)
    if mode == "select":
        rest = frame[folds != fold]
        following = set(unit[folds == (fold + 1) % len(names)])
        scored = unit[rest.index].isin(carve(unit[rest.index], SELECT_FRACTION, PROTOCOL_SEED + 1 + fold, following))
        table = rest.assign(split=np.where(scored, "test", "train"))
    else:
        table = frame.assign(split=np.where(folds == fold, "test", "train"))
    training = table[table["split"] == "train"]
    val = _val_clips(training, VAL_FRACTION, PROTOCOL_SEED + 100 + fold)
    table.loc[val[val].index, "split"] = "val"
    return table.sort_values("path").reset_index(drop=True)

# ---------------------------------------------------------------------------------------------
# recipes, shards, runs


def digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def merged(base: dict, extra: dict) -> dict:
    """`base` with each table of `extra` laid over it key by key."""
    out = copy.deepcopy(base)
    for table, values in extra.items():
        out.setdefault(table, {}).update(values)
    return out


@dataclass(frozen=True)
class Recipe:
    name: str
    train: dict  # TrainConfig keys, the suite's base included, the seed not
    features: dict  # [audio] / [augment] overrides for every corpus

    @classmethod
    def load(cls, path: Path | None, name: str | None, epochs: int) -> Recipe:
        data = load_toml(path) if path else {}
        features = {k: data.pop(k) for k in ("audio", "augment") if k in data}
        train = {**BASE_TRAIN, **data}
        if epochs:
            train["epochs"] = epochs
        from_dict(TrainConfig, dict(train))  # an unknown or bad key: one line now, not after preprocessing
        return cls(name or (path.stem if path else "defaults"), train, features)


def fold_shards(corpus: Corpus, features: dict, table: pd.DataFrame, cache: Path, jobs: int) -> tuple[Path, float]:
    """The shard folder of one fold split with these features, made unless already there; and
    the seconds spent making it (0 when cached)."""
    import melshard

    csv = table.to_csv(index=False)
    folder = cache / "shards" / corpus.name / digest([features, csv])[:16]
    if (folder / "manifest.json").exists():  # written last by preprocess: the folder is complete
        return folder, 0.0
    folder.parent.mkdir(parents=True, exist_ok=True)
    table_csv = folder.with_suffix(".csv")
    table_csv.write_text(csv)
    start = time.perf_counter()
    melshard.preprocess(table_csv, folder, config=features, jobs=jobs, progress=False)  # a killed run resumes
    return folder, time.perf_counter() - start


# Test-time options scored beside the plain prediction of every run (the same best.pt): they
# become predict's defaults only if they help on the suite's average.
TEST_TIME = {"adapt_bn": {"adapt": True}, "tta_shift": {"tta": "shift"}, "tta_warp": {"tta": "warp"}}


def figures(predictor, predicted) -> dict:
    from trainer.evaluation import balanced_accuracy, macro_f1

    index = {name: i for i, name in enumerate(predictor.labels)}
    y_true = np.array([index[t] for t in predicted.truth])
    y_pred = predicted.probs.argmax(axis=1)
    return {"accuracy": float(np.mean(y_true == y_pred)), "macro_f1": macro_f1(y_true, y_pred, len(index)),
            "balanced_accuracy": balanced_accuracy(y_true, y_pred), "clips": int(len(y_true))}


def score(run: Path, shards: Path) -> dict:
    """Accuracy, macro-F1 and balanced accuracy of a run's best.pt on the shards' test split; and
    under `test_time`, the same with each of `TEST_TIME`'s options (or why it was not scored),
    with the seconds they took in `test_time_s`."""
    from trainer.inference import load_predictor, predict_shards

    def scored(tta: str = "", adapt: bool = False) -> dict:
        predictor = load_predictor(run, "auto", tta=tta)  # a fresh one: adapting changes its statistics
        return figures(predictor, predict_shards(predictor, shards, "test", workers=1, adapt=adapt))

    plain, start = scored(), time.perf_counter()
    options = {}
    for name, option in TEST_TIME.items():
        try:
            options[name] = scored(**option)
        except UsageError as exc:  # an option this run cannot take (--adapt-bn on too few clips)
            options[name] = {"skipped": one_line(exc)}
    return {**plain, "test_time": options, "test_time_s": round(time.perf_counter() - start, 1)}


def commit() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True,
                           text=True)
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def read_records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_record(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:  # one line per write: a killed suite leaves whole records
        handle.write(json.dumps(record, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())

# ---------------------------------------------------------------------------------------------
# the suite


@dataclass
class Options:
    mode: str  # select | test
    recipe: Recipe
    corpora: dict[str, Corpus]
    seeds: list[int]
    folds: list[int] | None  # None: every fold
    cache: Path
    results: Path
    jobs: int = 1
    device: str = "auto"
    keep_runs: bool = False
    report_only: bool = False


def run_key(opts: Options, corpus: Corpus, fold: str, seed: int, features: dict) -> str:
    return digest({"protocol": PROTOCOL, "mode": opts.mode, "corpus": corpus.name, "folds": corpus.folds,
                   "fold": fold, "seed": seed, "train": opts.recipe.train, "features": features})


def run_suite(opts: Options, say: Callable[[str], None] = print) -> list[dict]:
    """Train and score every (corpus, fold, seed) not yet recorded; return the records of all of them."""
    import melshard

    recorded = {r["key"]: r for r in read_records(opts.results)}
    code = commit()  # the code this run started with, whatever is committed while it runs
    out = []
    for corpus in opts.corpora.values():
        frame = corpus.listing()
        _, names = assign_folds(frame, corpus)
        features = merged(corpus.features, opts.recipe.features)
        for fold in opts.folds if opts.folds is not None else range(len(names)):
            if fold >= len(names):
                continue
            shards = None
            for seed in opts.seeds:
                key = run_key(opts, corpus, names[fold], seed, features)
                if key in recorded or opts.report_only:
                    if key in recorded:
                        out.append(recorded[key])
                    continue
                start = time.perf_counter()
                if shards is None:
                    table = split_table(frame, corpus, fold, opts.mode)
                    scored = sorted(set(table["group"][table["split"] == "test"]))
                    shards, prep = fold_shards(corpus, features, table, opts.cache, opts.jobs)
                else:
                    prep = 0.0
                run = opts.cache / "runs" / key[:16]
                trained = time.perf_counter()
                result = melshard.train(shards, run, resume=(run / "last.pt").exists(),
                                        **{**opts.recipe.train, "seed": seed, "num_workers": 1, "device": opts.device})
                if result.status:  # stopped by a signal after a checkpoint: the next suite run resumes it
                    raise SystemExit(result.status)
                metrics = pd.read_csv(run / "metrics.csv")
                train_s = time.perf_counter() - trained
                result = score(run, shards)
                record = {"key": key, "protocol": PROTOCOL, "mode": opts.mode, "recipe": opts.recipe.name,
                          "train": opts.recipe.train, "features": features, "corpus": corpus.name,
                          "fold": names[fold], "seed": seed,
                          "scored_groups": len(scored), "scored": scored[:6], **result, "epochs": int(len(metrics)),
                          "preprocess_s": round(prep, 1), "train_s": round(train_s, 1),
                          # as before test-time options were scored too
                          "wall_s": round(time.perf_counter() - start - result["test_time_s"], 1), "commit": code,
                          "date": time.strftime("%Y-%m-%d %H:%M")}
                append_record(opts.results, record)
                if not opts.keep_runs:
                    shutil.rmtree(run, ignore_errors=True)
                where = ", ".join(scored) if len(scored) <= 2 else f"{len(scored)} groups"
                say(f"{corpus.name:16s} {names[fold]:10s} seed {seed} (scored on {where}): "
                    f"accuracy {result['accuracy']:.2%}  "
                    f"macro-F1 {result['macro_f1']:.4f}  balanced {result['balanced_accuracy']:.2%}  "
                    f"({result['clips']} clips, {record['epochs']} epochs, {record['wall_s']:.0f} s)")
                out.append(record)
    return out


def summary(records: list[dict]) -> str:
    """Per corpus and fold: mean and spread (sd) over seeds; per corpus: the fold means' mean, and
    the spread of each seed's mean over folds."""
    if not records:
        return "nothing recorded yet for this selection"
    frame = pd.DataFrame(records)
    lines = [f"{'corpus':16s} {'fold':10s} {'scored on':12s} {'seeds':>5s}  {'accuracy':>15s}  {'macro-F1':>15s}  "
             f"{'balanced acc':>15s}  {'wall s':>7s}"]

    def where(record: dict) -> str:
        if record.get("mode") == "test":
            return "the fold"
        scored = record.get("scored") or []
        return ", ".join(scored) if len(scored) == record.get("scored_groups", -1) <= 2 else \
            f"{record.get('scored_groups', '?')} groups"

    def cell(values: pd.Series, percent: bool) -> str:
        mean, sd = values.mean(), values.std(ddof=0)
        return f"{mean:8.2%} ± {sd:4.1%}" if percent else f"{mean:8.4f} ± {sd:.3f}"

    for corpus, rows in frame.groupby("corpus", sort=False):
        for fold, seeds in rows.groupby("fold", sort=False):
            lines.append(f"{corpus:16s} {fold:10s} {where(seeds.iloc[0].to_dict()):12s} {len(seeds):5d}  "
                         f"{cell(seeds['accuracy'], True):>15s}  "
                         f"{cell(seeds['macro_f1'], False):>15s}  {cell(seeds['balanced_accuracy'], True):>15s}  "
                         f"{seeds['wall_s'].mean():7.0f}")
        per_seed = rows.groupby("seed")[["accuracy", "macro_f1", "balanced_accuracy"]].mean()
        complete = rows.groupby("seed")["fold"].nunique().eq(rows["fold"].nunique()).all()
        lines.append(f"{corpus:16s} {'mean':10s} {'':12s} {len(per_seed):5d}  {cell(per_seed['accuracy'], True):>15s}  "
                     f"{cell(per_seed['macro_f1'], False):>15s}  {cell(per_seed['balanced_accuracy'], True):>15s}  "
                     f"{rows['wall_s'].sum():7.0f}" + ("" if complete else "  (seeds cover different folds)"))
    # What a recipe is chosen by: every corpus counted equally, whatever its fold count.
    corpora = frame.groupby(["corpus", "seed"])[["accuracy", "macro_f1", "balanced_accuracy"]].mean()
    suite = corpora.groupby("seed").mean()
    lines.append(f"{'suite':16s} {'mean':10s} {f'{frame.corpus.nunique()} corpora':12s} {len(suite):5d}  "
                 f"{cell(suite['accuracy'], True):>15s}  {cell(suite['macro_f1'], False):>15s}  "
                 f"{cell(suite['balanced_accuracy'], True):>15s}  {frame['wall_s'].sum():7.0f}")
    lines += test_time_lines(frame)
    return "\n".join(lines)


def test_time_lines(frame: pd.DataFrame) -> list[str]:
    """The suite's mean macro-F1 with each test-time option against the plain prediction, over
    the records that scored them (every corpus counted equally)."""
    if "test_time" not in frame:
        return []
    frame = frame[frame["test_time"].apply(lambda value: isinstance(value, dict))]
    lines = []
    for name in TEST_TIME:
        rows = frame[frame["test_time"].apply(lambda value: "macro_f1" in value.get(name, {}))]
        if rows.empty:
            continue
        option = rows["test_time"].apply(lambda value: value[name]["macro_f1"])
        pair = pd.DataFrame({"corpus": rows["corpus"], "plain": rows["macro_f1"], "option": option})
        means = pair.groupby("corpus")[["plain", "option"]].mean().mean()
        lines.append(f"test-time {name:9s} suite mean macro-F1 {means['option']:.4f} against {means['plain']:.4f} "
                     f"without ({means['option'] - means['plain']:+.4f}, {len(rows)} runs)")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--select", action="store_const", const="select", dest="mode",
                      help="score on selection groups carved from each training fold (never the test folds)")
    mode.add_argument("--test", action="store_const", const="test", dest="mode",
                      help="score the chosen recipe on the test folds, once")
    parser.add_argument("--recipe", type=Path, default=None, help="TOML of TrainConfig keys (+ [audio], [augment])")
    parser.add_argument("--name", default=None, help="the recipe's name in the results (default: the file's stem)")
    parser.add_argument("--corpora", default=",".join(CORPORA))
    parser.add_argument("--folds", default="", help="fold indices to run, e.g. 0,2 (default: all)")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--epochs", type=int, default=8, help="epochs for every recipe (0: the recipe's own)")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/melshard-suite"), help="fold shards and runs")
    parser.add_argument("--results", type=Path, default=None,
                        help="default: bench/results/recipes.jsonl (--select), tests.jsonl (--test)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--jobs", type=int, default=1, help="preprocessing processes")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--keep-runs", action="store_true", help="keep each run folder under --cache/runs")
    parser.add_argument("--report", action="store_true", help="print what is recorded; train nothing")
    args = parser.parse_args(argv)
    try:
        recipe = Recipe.load(args.recipe, args.name, args.epochs)
    except UsageError as exc:
        sys.exit(f"error: {exc}")
    unknown = [c for c in args.corpora.split(",") if c not in CORPORA]
    if unknown:
        sys.exit(f"error: unknown corpus {unknown}; choose from {', '.join(CORPORA)}")
    corpora = {}
    for name in args.corpora.split(","):
        if CORPORA[name].present():
            corpora[name] = CORPORA[name]
        else:
            print(f"# {name}: absent under {DATA}, skipped")
    results = args.results or RESULTS / ("recipes.jsonl" if args.mode == "select" else "tests.jsonl")
    opts = Options(args.mode, recipe, corpora, [int(s) for s in args.seeds.split(",")],
                   [int(f) for f in args.folds.split(",")] if args.folds else None, args.cache, results,
                   args.jobs, args.device, args.keep_runs, args.report)
    import torch

    torch.set_num_threads(args.threads)
    print(f"# suite: {machine()}")
    print(f"# command: python bench/suite.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    print(f"# recipe {recipe.name}: {json.dumps(recipe.train, sort_keys=True)}"
          + (f" features {json.dumps(recipe.features, sort_keys=True)}" if recipe.features else ""))
    start = time.perf_counter()
    records = run_suite(opts, lambda line: print(line, flush=True))
    scored = ("selection groups carved from each fold's training groups; the fold's own groups left out"
              if opts.mode == "select" else "each fold's own groups")
    print(f"# {opts.mode} figures ({scored}), {time.perf_counter() - start:.0f} s of wall time in this run; "
          f"records in {results}")
    print(summary(records))


if __name__ == "__main__":
    main()
