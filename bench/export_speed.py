"""Speed of an exported ONNX model against melshard predict, on one CPU thread, the same clips.

Trains a small model on a generated corpus (the default audio config unless told otherwise:
22,050 Hz, 5 s, 128 mels, n_fft 2048), exports it, then labels the same generated WAVs
(44.1 kHz, 16-bit, 1-4 s) three ways, each on one thread, best of --repeat:
  - onnx, graph only: onnxruntime on waveforms already decoded and resampled (batches of --batch);
  - onnx, end to end: soundfile + soxr + onnxruntime, as examples/onnx_label_folder.py does;
  - melshard predict: `melshard.predict(run, folder, jobs=1)` with torch on one thread (decode,
    resample, trim, log-mel in numpy, then the torch model).
and checks that the two agree on every clip's label.

    python bench/export_speed.py [--clips 64] [--model cnn] [--width 0.5] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from bench.common import machine  # noqa: E402


def make_clips(folder: Path, n: int, sr: int = 44100, seed: int = 0) -> None:
    from tests.audio_fixtures import tone

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels = ["low", "mid", "high"]
    for i in range(n):
        sf.write(folder / f"clip{i:04d}.wav", tone(labels[i % 3], rng, sr, seconds=rng.uniform(1.0, 4.0)), sr,
                 subtype="PCM_16")


def best_of(repeat: int, fn) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--model", default="cnn", choices=["cnn", "resnet9"])
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--batch", type=int, default=16, help="clips per onnxruntime call")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sr", type=int, default=22050)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--work", default="/tmp/melshard-export-speed", help="scratch folder (deleted at the end)")
    args = parser.parse_args()
    import onnxruntime as ort
    import torch

    import melshard
    from examples.onnx_label_folder import batched, load_waveform
    from tests.audio_fixtures import make_corpus

    torch.set_num_threads(1)
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    print(f"# export speed: {machine()}")
    print(f"# command: python bench/export_speed.py --clips {args.clips} --model {args.model} --width {args.width} "
          f"--batch {args.batch} --repeat {args.repeat} --sr {args.sr} --duration {args.duration}")
    corpus = make_corpus(work / "corpus", per_class=8, labels=("low", "mid", "high"))
    shards = melshard.preprocess(corpus, work / "shards", jobs=1, augment_copies=0, progress=False, sr=args.sr,
                                 duration_s=args.duration).out
    run = melshard.train(shards, work / "run", model=args.model, width=args.width, epochs=1, batch_size=8,
                         num_workers=1, device="cpu", mixup_p=0.0).run
    model = melshard.export(run, work / "model.onnx")
    folder = work / "clips"
    make_clips(folder, args.clips, seed=1)
    files = sorted(folder.glob("*.wav"))

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    contract = json.loads(session.get_modelmeta().custom_metadata_map["melshard"])
    labels = json.loads(session.get_modelmeta().custom_metadata_map["labels"])

    def waves() -> list[np.ndarray]:
        return [load_waveform(p, contract["sample_rate"], contract["decode_limit_s"]) for p in files]

    prepared = waves()

    def graph(inputs: list[np.ndarray]) -> np.ndarray:
        return np.concatenate([session.run(None, {"waveform": batched(inputs[i : i + args.batch])})[0]
                               for i in range(0, len(inputs), args.batch)])

    graph(prepared[: args.batch])  # warm-up
    graph_s = best_of(args.repeat, lambda: graph(prepared))
    onnx_s = best_of(args.repeat, lambda: graph(waves()))
    predictor = melshard.load_model(run, "cpu")
    melshard.predict(predictor, files[:4], jobs=1)  # warm-up
    predict_s = best_of(args.repeat, lambda: melshard.predict(predictor, files, jobs=1))
    one = best_of(args.repeat, lambda: [session.run(None, {"waveform": w[None]}) for w in prepared[:16]]) / 16

    frame = melshard.predict(predictor, files, jobs=1)
    onnx_labels = [labels[i] for i in graph(prepared).argmax(axis=1)]
    agree = sum(a == b for a, b in zip(frame["label"], onnx_labels))
    n = len(files)
    print(f"audio config: {args.sr} Hz, {args.duration} s; model {args.model} width {args.width}; {n} clips of 1-4 s "
          f"at 44.1 kHz; one thread")
    print(f"onnx, graph only (batches of {args.batch}):  {n / graph_s:8.1f} clips/s")
    print(f"onnx, graph only (one clip a call):  {1 / one:8.1f} clips/s")
    print(f"onnx, end to end (soundfile + soxr): {n / onnx_s:8.1f} clips/s")
    print(f"melshard predict (jobs=1, torch 1 thread): {n / predict_s:8.1f} clips/s")
    print(f"onnx end to end vs predict: {predict_s / onnx_s:.2f}x; same label on {agree}/{n} clips")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
