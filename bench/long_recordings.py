"""Long recordings with file-level labels: per-file accuracy of each `--aggregate` on FSDD digits
preceded by seconds of loud background.

Each generated recording is `--seconds` long (default 6 s): loud background (white, pink or
brown noise, or a machine hum with a wandering tone, at a level drawn around the word's own)
fills the first `--background` seconds (default 4), then the background drops to a faint
floor and one FSDD recording of a spoken digit is placed at a random point of the last third.
The recording's label is the digit, its group the speaker. With `--segment` every 1 s window
takes the recording's label, though only one or two of the six hear the word.

Splits are by speaker: `--val-speakers` are the validation split (the figures that choose an
aggregation), `--test-speakers` are held out and scored last; the others train. For each seed
the corpus is preprocessed once per window hop (`--hops`: 0 is no overlap) and trained once,
then every window's probabilities are computed once and combined by every aggregation in
`shared.config.AGGREGATES` (`trainer.inference.by_file`, what predict and evaluate run).
"last third" is the mean over the windows that start in the last third only, an oracle that
knows where the word is: the ceiling for the model, with no background to discount.

    python bench/long_recordings.py [--seeds 1,2] [--hops 0,0.5] [--recipe centred|defaults] [--epochs 20]

`write_corpus` and `long_recording` build such corpora for tests too (from any short clips).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import FSDD, REPO, machine, python_env  # noqa: E402

SR = 8000
BACKGROUNDS = ("white", "pink", "brown", "hum")
SNR_DB = (-6.0, 6.0)  # the background's RMS against the word's, drawn per recording: as loud or louder
FLOOR_DB = -40.0  # the background's level under the word, against its loud part


def background(kind: str, n: int, rng: np.random.Generator, sr: int = SR) -> np.ndarray:
    """`n` samples of unit-RMS background: coloured noise (power ~ 1/f^0, 1/f, 1/f^2), or a
    machine hum (mains harmonics with a slowly wandering tone over a little noise)."""
    if kind == "hum":
        t = np.arange(n) / sr
        mains = rng.choice([50.0, 60.0])
        y = sum(rng.uniform(0.2, 1.0) * np.sin(2 * np.pi * mains * k * t + rng.uniform(0, 2 * np.pi))
                for k in (1, 2, 3, 5))
        wander = rng.uniform(300, 1500) * (1 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t))
        y = y + rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * np.cumsum(wander) / sr) + 0.1 * rng.standard_normal(n)
    else:
        exponent = {"white": 0.0, "pink": 1.0, "brown": 2.0}[kind]
        spectrum = np.fft.rfft(rng.standard_normal(n))
        frequencies = np.fft.rfftfreq(n, 1 / sr)
        spectrum[1:] /= frequencies[1:] ** (exponent / 2)
        spectrum[0] = 0.0
        y = np.fft.irfft(spectrum, n)
    # a slow swell, so the level is not one constant the model could learn a class from
    y = y * (1 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.05, 0.3) * np.arange(n) / sr + rng.uniform(0, 2 * np.pi)))
    return (y / (np.sqrt(np.mean(y**2)) + 1e-12)).astype(np.float32)


def long_recording(event: np.ndarray, rng: np.random.Generator, sr: int = SR, seconds: float = 6.0,
                   background_s: float = 4.0, kind: str | None = None) -> np.ndarray:
    """`seconds` of audio: loud background for the first `background_s`, then a faint floor of
    it with `event` (a short clip at `sr`) at a random point after `background_s`."""
    n, loud = int(seconds * sr), int(background_s * sr)
    event = event[: n - loud].astype(np.float32)
    event = event * (rng.uniform(0.2, 0.6) / (np.abs(event).max() + 1e-12))  # the word's peak level
    event_rms = np.sqrt(np.mean(event**2))
    level = event_rms * 10 ** (rng.uniform(*SNR_DB) / 20)
    y = background(kind or str(rng.choice(BACKGROUNDS)), n, rng, sr) * level
    y[loud:] *= 10 ** (FLOOR_DB / 20)
    start = loud + int(rng.integers(0, n - loud - event.size + 1))
    y[start : start + event.size] += event
    return np.clip(y, -1.0, 1.0)


def write_corpus(root: Path, events: Iterable[tuple[str, np.ndarray, str, str, str]], seed: int = 0,
                 sr: int = SR, seconds: float = 6.0, background_s: float = 4.0) -> Path:
    """Write one long recording per event `(name, samples at sr, label, group, split)` under
    `root/audio/` and `root/corpus.csv` (`path,label,group,split`); the CSV's path."""
    rng = np.random.default_rng(seed)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    rows = []
    for name, samples, label, group, split in events:
        path = root / "audio" / f"{name}.wav"
        sf.write(path, long_recording(samples, rng, sr, seconds, background_s), sr, subtype="PCM_16")
        rows.append((f"audio/{name}.wav", label, group, split))
    with (root / "corpus.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "group", "split"])
        writer.writerows(rows)
    return root / "corpus.csv"


def fsdd_events(takes: int, val: set[str], test: set[str]) -> Iterable[tuple[str, np.ndarray, str, str, str]]:
    """FSDD's takes 0 .. takes-1 of every speaker and digit, split by speaker."""
    for path in sorted(FSDD.glob("*.wav")):
        digit, speaker, take = path.stem.split("_")
        if int(take) < takes:
            y, rate = sf.read(path, dtype="float32")
            assert rate == SR, path
            split = "test" if speaker in test else "val" if speaker in val else "train"
            yield path.stem, y, digit, speaker, split


# --- the benchmark ---------------------------------------------------------------------------

# Training recipes beside the shared ones (cnn, --width, --epochs, batch 64, lr 3e-3):
# centred: each window's band means taken out, no MixUp; defaults: the trainer's own (MixUp on).
RECIPES = {"centred": ("--centre-bands", "--mixup-p", "0"), "defaults": ()}
AUDIO = ("[audio]\nsr = 8000\nduration_s = 1.0\nn_fft = 256\nhop_length = 64\nn_mels = 32\nfmin = 20.0\n"
         "fmax = 4000.0\ntop_db = 50.0\ndb_reference = \"clip_max\"\nsegment = true\nsegment_hop_s = {hop}\n")


def run(*args: str) -> None:
    result = subprocess.run([sys.executable, *args], cwd=REPO, env=python_env(), capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"failed ({result.returncode}): {' '.join(args)}\n{result.stderr[-3000:]}")


def scores(run_dir: Path, shards: Path, split: str, seconds: float, background_s: float) -> dict[str, float]:
    """Per-file accuracy of every aggregation, per-window accuracy, and the last-third oracle."""
    from shared.config import AGGREGATES
    from trainer.inference import by_file, load_predictor, predict_shards

    predictor = load_predictor(run_dir, "cpu")
    windows = predict_shards(predictor, shards, split, workers=1)
    found = {}
    for how in AGGREGATES:
        files, _ = by_file(windows, how)
        found[how] = float(np.mean([predictor.labels[i] == t for i, t in zip(files.probs.argmax(1), files.truth)]))
    names = np.array(predictor.labels)[windows.probs.argmax(1)]
    found["windows"] = float(np.mean(names == np.array(windows.truth)))
    last = [i for i, offset in enumerate(windows.offsets) if offset >= background_s]
    oracle, _ = by_file(type(windows)([windows.paths[i] for i in last], windows.probs[last],
                                      [windows.truth[i] for i in last], [None] * len(last), []), "mean")
    found["last third"] = float(np.mean([predictor.labels[i] == t for i, t in zip(oracle.probs.argmax(1),
                                                                                  oracle.truth)]))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/melshard-long", help="folder for corpora, shards and runs")
    parser.add_argument("--seeds", default="1,2", help="training seeds (the corpus is generated with seed 0)")
    parser.add_argument("--hops", default="0", help="window hops in seconds to compare (0: no overlap)")
    parser.add_argument("--takes", type=int, default=30, help="takes of each speaker and digit")
    parser.add_argument("--val-speakers", default="nicolas")
    parser.add_argument("--test-speakers", default="jackson,theo")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--background", type=float, default=4.0)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--recipe", default="centred", choices=list(RECIPES))
    args = parser.parse_args()
    if not FSDD.is_dir():
        sys.exit(f"{FSDD} is absent: this benchmark needs the FSDD recordings")
    work = Path(args.work)
    val, test = set(args.val_speakers.split(",")), set(args.test_speakers.split(","))
    corpus = work / f"corpus-{args.takes}-{args.seconds:g}-{args.background:g}"
    if not (corpus / "corpus.csv").exists():
        write_corpus(corpus, fsdd_events(args.takes, val, test), 0, SR, args.seconds, args.background)
    print(f"# long recordings: {machine()}")
    print("# command: python bench/long_recordings.py " + " ".join(sys.argv[1:]))
    results = []
    for hop in [float(h) for h in args.hops.split(",")]:
        shards = corpus / f"shards-hop{hop:g}"
        if not (shards / "manifest.json").exists():
            config = corpus / f"preprocess-hop{hop:g}.toml"
            config.write_text(AUDIO.format(hop=hop) + "\n[augment]\ncopies = 0\n")
            run("-m", "preprocess", str(corpus / "corpus.csv"), "--out", str(shards), "--config", str(config),
                "--overwrite")
        for seed in [int(s) for s in args.seeds.split(",")]:
            tag = "" if args.recipe == "centred" else f"-{args.recipe}"
            run_dir = corpus / f"run-hop{hop:g}-seed{seed}-e{args.epochs}-w{args.width:g}{tag}"
            start = time.perf_counter()
            if not (run_dir / "best.pt").exists():
                run("-m", "trainer", "train", str(shards), "--out", str(run_dir), "--model", "cnn",
                    "--width", str(args.width), "--epochs", str(args.epochs), "--seed", str(seed),
                    "--num-workers", "1", "--batch-size", "64", "--lr", "3e-3", *RECIPES[args.recipe])
            trained = time.perf_counter() - start
            for split in ("val", "test"):
                row = {"hop": hop, "seed": seed, "split": split, "train_s": round(trained),  # 0: trained earlier
                       **scores(run_dir, shards, split, args.seconds, args.background)}
                results.append(row)
                print(json.dumps(row), flush=True)
    keys = [k for k in results[0] if k not in ("hop", "seed", "split", "train_s")]
    print("\n| hop (s) | split | " + " | ".join(keys) + " |")
    print("|---|---|" + "---|" * len(keys))
    for hop in sorted({r["hop"] for r in results}):
        for split in ("val", "test"):
            rows = [r for r in results if r["hop"] == hop and r["split"] == split]
            cells = [" / ".join(f"{r[k]:.3f}" for r in rows) + f" (mean {np.mean([r[k] for r in rows]):.3f})"
                     for k in keys]
            print(f"| {hop:g} | {split} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
