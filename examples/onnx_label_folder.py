"""Label a folder of WAVs with a model from `melshard export`, using onnxruntime alone (no torch,
no melshard): what a deployment needs is the .onnx file and numpy, soundfile, soxr, onnxruntime.

    python examples/onnx_label_folder.py model.onnx recordings/ --out labels.csv

Writes `filename,label` and one probability column per class, one row per audio file under the
folder (sorted), as `melshard predict --probabilities` does. Files that do not decode, and clips
the model flags as silent (which predict rejects), are left out and named on stderr.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import soundfile as sf
import soxr

EXTENSIONS = {".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff"}


def load_waveform(path: Path, sample_rate: int, limit_s: float) -> np.ndarray:
    """The model's input for one file: decoded, mixed to mono, its first `limit_s` seconds,
    resampled to `sample_rate` with soxr (as melshard predict prepares audio)."""
    y, rate = sf.read(str(path), dtype="float32", always_2d=True)
    y = y.mean(axis=1, dtype=np.float32)[: int(rate * limit_s)]
    if rate != sample_rate:
        y = soxr.resample(y, rate, sample_rate, quality="HQ").astype(np.float32, copy=False)
    return y


def batched(waveforms: list[np.ndarray]) -> np.ndarray:
    """Clips of different lengths as one `[batch, samples]` array, zero-padded at the end (the
    graph's result for each clip is the same as alone)."""
    out = np.zeros((len(waveforms), max(y.size for y in waveforms)), np.float32)
    for row, y in zip(out, waveforms):
        row[: y.size] = y
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="ONNX file written by melshard export")
    parser.add_argument("folder", help="folder of audio files (searched recursively)")
    parser.add_argument("--out", required=True, help="CSV to write")
    parser.add_argument("--batch", type=int, default=16, help="clips per run of the model")
    args = parser.parse_args(argv)

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    labels, contract = json.loads(meta["labels"]), json.loads(meta["melshard"])
    if contract["input"] != "waveform":
        print(f"error: {args.model} takes {contract['input']}, not audio; export it without --network-only",
              file=sys.stderr)
        return 2
    root = Path(args.folder)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())
    rows, skipped = [], []
    for start in range(0, len(files), args.batch):
        names, waveforms = [], []
        for path in files[start : start + args.batch]:
            try:
                y = load_waveform(path, contract["sample_rate"], contract["decode_limit_s"])
            except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
                skipped.append(f"{path.relative_to(root)}: {exc}")
                continue
            if y.size == 0 or not np.isfinite(y).all():
                skipped.append(f"{path.relative_to(root)}: no usable audio")
                continue
            names.append(path.relative_to(root).as_posix())
            waveforms.append(y)
        if not waveforms:
            continue
        probabilities, silent = session.run(None, {"waveform": batched(waveforms)})
        for name, probs, quiet in zip(names, probabilities, silent):
            if quiet:
                skipped.append(f"{name}: silent (peak below the run's silence_dbfs)")
            else:
                rows.append([name, labels[int(np.argmax(probs))], *(f"{p:.6f}" for p in probs)])
    with open(args.out, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filename", "label", *labels])
        writer.writerows(sorted(rows))
    for line in skipped:
        print(f"skipped {line}", file=sys.stderr)
    print(f"wrote {args.out}: {len(rows)} file(s) labeled, {len(skipped)} skipped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
