"""melshard's preprocessing beside what else a user could run, on the same corpus, in one run.

Generates N five-second 44.1 kHz WAV clips (as bench/preprocess_throughput.py does) and turns
them into log-mels at melshard's default setting (22,050 Hz, n_fft 2048, hop 512, 128 mels),
each with 2 processes, as real subprocesses (interpreter start and imports included), taking
turns, best of --repeat:
  - melshard: `python -m preprocess --jobs 2` (trim, pad/crop, float16 log-mels in tar shards);
  - lhotse LibrosaFbank: `CutSet.compute_and_store_features(LibrosaFbank(2048/512/128, 0 Hz to
    Nyquist), LilcomChunkyWriter, num_jobs=2)` on the clips resampled to 22,050 Hz;
  - lhotse Fbank: the same with lhotse's default (Kaldi-style) Fbank at 128 bins, at its own
    default 16 kHz (its 10 ms hop is no whole number of samples at 22,050 Hz): 25 ms frames
    every 10 ms, so 2.3x the frames of the others;
  - librosa + webdataset: a hand-written writer in a joblib pool of 2, one shard per task, as a
    user would write it: librosa.load, effects.trim, util.fix_length, melspectrogram,
    power_to_db, float16 into webdataset.TarWriter.
It prints clips/s, the ratio to melshard, output bytes per clip and the peak resident memory
of the run's whole process tree (the sum over the process and its descendants, polled from
/proc every 20 ms by bench/common.py's `run_measured`). A peer whose library is missing is
skipped with one line; `pip install -e ".[bench]"` installs them all.

    python bench/peers.py [--n 400] [--repeat 2] [--work /tmp/melshard-peers]
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import folder_bytes, machine, python_env, run_measured  # noqa: E402

SR, N_FFT, HOP, N_MELS = 22050, 2048, 512, 128  # melshard's AudioConfig defaults
JOBS = 2
HINT = 'pip install -e ".[bench]"'


def lhotse_features(src: str, out: str, kind: str) -> None:
    """lhotse's parallel feature extraction into lilcom-compressed chunked storage, and its manifest."""
    from lhotse import CutSet, Fbank, FbankConfig, LibrosaFbank, LibrosaFbankConfig, RecordingSet
    from lhotse.features.io import LilcomChunkyWriter

    if kind == "librosa":
        extractor = LibrosaFbank(LibrosaFbankConfig(sampling_rate=SR, fft_size=N_FFT, hop_size=HOP,
                                                    num_mel_bins=N_MELS, fmin=0, fmax=SR // 2))
    else:  # its default rate, 16 kHz: its 10 ms hop is no whole number of samples at 22,050 Hz
        extractor = Fbank(FbankConfig(num_filters=N_MELS))
    recordings = RecordingSet.from_dir(src, "*.wav", num_jobs=JOBS)
    cuts = CutSet.from_manifests(recordings=recordings).resample(extractor.config.sampling_rate)
    cuts = cuts.compute_and_store_features(extractor=extractor, storage_path=f"{out}/feats", num_jobs=JOBS,
                                           storage_type=LilcomChunkyWriter, progress_bar=False)
    cuts.to_file(f"{out}/cuts.jsonl.gz")


def _librosa_shard(files: list[str], target: str) -> None:
    import librosa
    import numpy as np
    import webdataset as wds

    with wds.TarWriter(target) as sink:
        for path in files:
            y, sr = librosa.load(path, sr=SR)
            y, _ = librosa.effects.trim(y, top_db=20)
            y = librosa.util.fix_length(y, size=5 * sr)
            mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS)
            label = Path(path).parent.name
            sink.write({"__key__": f"{label}_{Path(path).stem}", "mel.npy": librosa.power_to_db(mel).astype(np.float16),
                        "cls": label})


def librosa_webdataset(src: str, out: str, shard_size: int) -> None:
    """The writer a user would write: a joblib pool, one shard of files per task."""
    from joblib import Parallel, delayed

    files = sorted(str(p) for p in Path(src).rglob("*.wav"))
    Path(out).mkdir(parents=True, exist_ok=True)
    shards = [files[i:i + shard_size] for i in range(0, len(files), shard_size)]
    Parallel(n_jobs=JOBS)(delayed(_librosa_shard)(part, f"{out}/train-{i:06d}.tar") for i, part in enumerate(shards))


def peers(src: Path, out: Path, shard_size: int) -> dict[str, tuple[list[str], str | None]]:
    """Each peer's command, and the library it needs (None: none beyond melshard's own)."""
    call = "import sys; from bench.peers import {0}; {0}(*sys.argv[1:3], {1})"
    return {
        "melshard preprocess --jobs 2": ([sys.executable, "-m", "preprocess", str(src), "--out", str(out),
                                          "--jobs", str(JOBS), "--augment-copies", "0", "--val-fraction", "0",
                                          "--shard-size", str(shard_size)], None),
        "lhotse LibrosaFbank + LilcomChunkyWriter": ([sys.executable, "-c", call.format("lhotse_features", "'librosa'"),
                                                     str(src), str(out)], "lhotse"),
        "lhotse Fbank (default, 128 bins) + Lilcom": ([sys.executable, "-c", call.format("lhotse_features", "'fbank'"),
                                                      str(src), str(out)], "lhotse"),
        "librosa + webdataset, joblib pool": ([sys.executable, "-c", call.format("librosa_webdataset", shard_size),
                                              str(src), str(out)], "webdataset"),
    }


def missing(module: str | None) -> bool:
    need = [module, "librosa"] if module == "webdataset" else [module, "lilcom"] if module == "lhotse" else []
    return any(importlib.util.find_spec(name) is None for name in need)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400, help="clips")
    parser.add_argument("--repeat", type=int, default=2, help="rounds; each peer's best is kept")
    parser.add_argument("--work", default="/tmp/melshard-peers", help="scratch folder (deleted at the end)")
    args = parser.parse_args()
    from bench.preprocess_throughput import make_clips

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    print(f"# command: python bench/peers.py --n {args.n} --repeat {args.repeat}")
    print(f"# peers: {machine()}")
    src, out = work / "clips", work / "out"
    make_clips(src, args.n, seed=args.n)
    shard_size = max(8, args.n // 32)  # as bench/preprocess_throughput.py: a few shards per worker
    runs = {}
    for name, (command, module) in peers(src, out, shard_size).items():
        if missing(module):
            print(f"skipped {name}: {module} is not installed ({HINT})")
        else:
            runs[name] = command
    best: dict[str, tuple[float, int, int]] = {}
    for _ in range(args.repeat):
        for name, command in runs.items():  # peers take turns, so drifting load hits each alike
            shutil.rmtree(out, ignore_errors=True)
            seconds, peak = run_measured(command, python_env())
            size = folder_bytes(out)
            if name not in best or seconds < best[name][0]:
                best[name] = (seconds, peak, size)
    base = args.n / best["melshard preprocess --jobs 2"][0]
    print(f"{'peer (2 processes each)':44}{'clips/s':>9}{'vs melshard':>13}{'bytes/clip':>12}{'peak RSS MiB':>14}")
    for name, (seconds, peak, size) in best.items():
        rate = args.n / seconds
        print(f"{name:44}{rate:9.1f}{rate / base:12.2f}x{size / args.n:12.0f}{peak / 2**20:14.0f}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
