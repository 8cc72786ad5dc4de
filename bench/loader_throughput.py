"""Loader throughput: melshard's shard DataLoader vs the seeds' map-style librosa Dataset, and
melshard's tar reader vs webdataset's own tar iterator.

Both deliver batches of 128 x 216 log-mels (22.05 kHz, 5 s, the seeds' setting) from the same
clips (FSDD's 3,000 recordings, or a synthetic corpus when they are absent), with the same
worker count and batch size, in one run. The baseline runs librosa load -> trim -> fix_length
-> melspectrogram -> power_to_db in `__getitem__` at its best setting (one BLAS/OpenMP thread
per worker). The reader comparison reads the same shards in one process, samples only
(webdataset's `tar_file_expander` + `group_by_keys` against `shared.shardio.iter_samples`), then
with the `.npy` decoded (`np.load` against `shared.shardio.decode_npy`): the measurement that
keeps a hand-written reader justified. Rates are measured after one warm-up pass, so worker
start-up is excluded; each is the best of several passes, so a busy neighbour on a shared
machine does not decide the figure.

    python bench/loader_throughput.py [--workers 2] [--batch-size 32] [--work /tmp/melshard-loader]

`--encodings float16,uint8` compares the stored mel encodings instead (`--mel-encoding` of
preprocess): the same clips preprocessed once per encoding, then shard bytes per sample, the
ShardStream's rate (rounds alternating between the encodings, best of each) and a one-process
read + decode rate, all in one run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import corpus_folder, machine, preprocess  # noqa: E402
from shared.manifest import Manifest, read_manifest  # noqa: E402
from trainer.data import ShardStream, iter_batches, make_loader, shards_of  # noqa: E402


class SeedsDataset(Dataset):
    """The seeds' way: decode and compute the mel of a file on every access."""

    def __init__(self, files: list[Path]):
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        import librosa

        y, sr = librosa.load(self.files[index], sr=22050)
        y, _ = librosa.effects.trim(y, top_db=20)
        y = librosa.util.fix_length(y, size=5 * sr)
        mel = librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=sr, n_mels=128))
        return torch.from_numpy(mel.astype(np.float16)), 0


def _one_thread(_: int) -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    torch.set_num_threads(1)


def rate(batches, limit: int) -> float:
    """Samples per second over `limit` samples of an iterator of batches."""
    seen = 0
    start = time.perf_counter()
    for batch in batches:
        seen += len(batch["mel"] if isinstance(batch, dict) else batch[0])
        if seen >= limit:
            break
    return seen / (time.perf_counter() - start)


def _read_rate(shards: list[Path], read) -> float:
    """Samples per second for `read(path)` (an iterator of samples) over all shards, best of three."""
    best = 0.0
    for _ in range(3):
        start, count = time.perf_counter(), 0
        for path in shards:
            count += sum(1 for _ in read(path))
        best = max(best, count / (time.perf_counter() - start))
    return best


def compare_readers(shards: list[Path]) -> None:
    """melshard's reader against webdataset's tar iterator on the same shards, one process."""
    import io

    from webdataset.tariterators import group_by_keys, tar_file_expander

    from shared.shardio import decode_npy, iter_samples

    def theirs(path: Path, decode: bool = False):
        with open(path, "rb") as handle:
            for sample in group_by_keys(tar_file_expander([{"url": str(path), "stream": handle}])):
                yield np.load(io.BytesIO(sample["mel.npy"]), allow_pickle=False) if decode else sample

    def ours(path: Path, decode: bool = False):
        for sample in iter_samples(path):
            yield decode_npy(sample["mel.npy"], sample["__url__"]) if decode else sample

    for what, decode in (("tar -> samples", False), ("tar -> samples -> decoded mel", True)):
        wds_rate = _read_rate(shards, lambda p: theirs(p, decode))
        our_rate = _read_rate(shards, lambda p: ours(p, decode))
        print(f"{what:31s}: webdataset {wds_rate:9.1f} samples/s, shared.shardio {our_rate:9.1f} samples/s "
              f"({our_rate / wds_rate:.1f}x), one process")


def time_shard_check(folder: Path, manifest: dict) -> None:
    """The up-front shard check: sha256 alone against sha256 plus reading every sample in the same pass."""
    from shared.integrity import shard_status

    entries = manifest["splits"]["train"]["shards"]
    megabytes = sum(e["bytes"] for e in entries) / 2**20
    rates = {}
    for what, counted in (("sha256 only", False), ("sha256 + every sample read", True)):
        best = 0.0
        for _ in range(3):
            start = time.perf_counter()
            for e in entries:
                shard_status(folder / e["name"], e["bytes"], e["sha256"], e["samples"] if counted else None)
            best = max(best, megabytes / (time.perf_counter() - start))
        rates[what] = best
        print(f"shard check, {what:26s}: {best:7.1f} MB/s, one thread")
    print(f"shard check: reading the samples costs {rates['sha256 only'] / rates['sha256 + every sample read']:.2f}x "
          "the hash alone")


def _stream_rate(shards: Path, args: argparse.Namespace, epochs: int):
    """A loader over `shards`' train split, warmed up; yields its best rate after each epoch."""
    stream = ShardStream(str(shards), shards_of(Manifest.read(shards), "train"), args.batch_size, args.workers,
                         seed=0, shuffle_buffer=1000)
    loader = make_loader(stream, pin_memory=False, prefetch_factor=4)
    stream.start_epoch(0)
    rate(iter_batches(loader), stream.samples)  # warm-up: workers start, page cache fills
    yield 0.0
    for epoch in range(1, epochs + 1):
        stream.start_epoch(epoch)
        yield rate(iter_batches(loader), stream.samples)


def compare_encodings(src: Path, work: Path, args: argparse.Namespace) -> None:
    """Bytes per sample, loader rate and one-process decode rate of each stored mel encoding."""
    from shared.shardio import decode_mel, iter_samples

    encodings = args.encodings.split(",")
    folders = {}
    for encoding in encodings:
        folders[encoding] = work / f"shards-{encoding}"
        preprocess(src, folders[encoding], "--augment-copies", "0", "--mel-encoding", encoding)
    print(f"# loader throughput by mel encoding: {machine()}")
    print(f"# command: python bench/loader_throughput.py --encodings {args.encodings} --workers {args.workers} "
          f"--batch-size {args.batch_size} --rounds {args.rounds}")
    for encoding, folder in folders.items():
        manifest = Manifest.read(folder)
        entries = manifest.shards("train")
        total = sum(e.bytes for e in entries)
        first = next(iter_samples(folder / entries[0].name))
        member = next(k for k in ("mel.npy", "mel.u8.npy") if k in first)
        print(f"{encoding:8s}: {total / manifest.counts['train']:9,.0f} shard bytes per sample "
              f"({len(first[member]):,} in its {member}), {manifest.counts['train']} samples, "
              f"mel {'x'.join(map(str, decode_mel(first).shape))}")
    # Rounds alternate between the encodings (each loader kept warm), so a busy neighbour slows both alike.
    streams = {e: _stream_rate(f, args, args.rounds) for e, f in folders.items()}
    for it in streams.values():
        next(it)
    best = dict.fromkeys(folders, 0.0)
    for _ in range(args.rounds):
        for encoding, it in streams.items():
            best[encoding] = max(best[encoding], next(it))
    decode = {}
    for _ in range(args.rounds):
        for encoding, folder in folders.items():
            paths = [folder / e.name for e in Manifest.read(folder).shards("train")]
            decode[encoding] = max(decode.get(encoding, 0.0),
                                   _read_rate(paths, lambda p: (decode_mel(s) for s in iter_samples(p))))
    base = encodings[0]
    for encoding in encodings:
        print(f"{encoding:8s}: ShardStream {args.workers} workers {best[encoding]:9.1f} samples/s "
              f"({best[encoding] / best[base]:.2f}x {base}); one process read + decode {decode[encoding]:9.1f} "
              f"samples/s ({decode[encoding] / decode[base]:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--baseline-samples", type=int, default=640, help="samples timed for the baseline")
    parser.add_argument("--work", default="/tmp/melshard-loader")
    parser.add_argument("--encodings", default="", help="compare these stored mel encodings instead, e.g. "
                                                         "float16,uint8 (the first is the reference)")
    parser.add_argument("--rounds", type=int, default=3, help="with --encodings: epochs timed per encoding")
    args = parser.parse_args()
    work = Path(args.work)
    src = corpus_folder(work)
    if args.encodings:
        compare_encodings(src, work, args)
        return
    shards = work / "shards"
    preprocess(src, shards, "--augment-copies", "0")
    manifest = read_manifest(shards)
    print(f"# loader throughput: {machine()}")
    print(f"# command: python bench/loader_throughput.py --workers {args.workers} --batch-size {args.batch_size}")

    stream = ShardStream(str(shards), shards_of(Manifest.from_dict(manifest), "train"), args.batch_size, args.workers,
                         seed=0, shuffle_buffer=1000)
    loader = make_loader(stream, pin_memory=False, prefetch_factor=4)
    stream.start_epoch(0)
    rate(iter_batches(loader), stream.samples)  # warm-up: workers start, page cache fills
    ours = 0.0
    for epoch in (1, 2, 3):  # best of three epochs: the figure is the loader's, not the neighbours'
        stream.start_epoch(epoch)
        ours = max(ours, rate(iter_batches(loader), stream.samples))
    print(f"melshard ShardStream, {args.workers} workers : {ours:8.1f} samples/s ({stream.samples} samples)")

    files = sorted(src.rglob("*.wav"))
    seeds = DataLoader(SeedsDataset(files), batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                       worker_init_fn=_one_thread, persistent_workers=True,
                       generator=torch.Generator().manual_seed(0))
    rate(iter(seeds), 2 * args.batch_size * args.workers)  # warm-up: librosa's first calls compile
    baseline = max(rate(iter(seeds), args.baseline_samples) for _ in range(2))
    print(f"seeds' librosa Dataset, {args.workers} workers: {baseline:8.1f} samples/s "
          f"({args.baseline_samples} samples)")
    print(f"ratio: {ours / baseline:.1f}x")
    compare_readers(sorted(shards.glob("train-*.tar")))
    time_shard_check(shards, manifest)


if __name__ == "__main__":
    main()
