"""`python -m trainer predict RUN --input X --out submission.csv`.

X is a shard folder (its `test` split, or `--split`) or raw audio (a folder or a CSV with a
`path` column). The CSV has `filename,label` (plus one probability column per class with
`--probabilities`), one row per input, sorted by filename. Inputs that cannot be decoded, and
each later listing of a file listed twice (`duplicate_path`), go to `<out>.errors.csv` and make
the exit status 1, unless `--allow-missing`. The windows of a
segmented recording (`--segment` at preprocessing) give one row per file, their probabilities
combined by `--aggregate` (mean, max or confidence); `--windows` also writes `<out>.windows.csv`, one row per
window.
"""

from __future__ import annotations

import io
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from shared.atomic import text_bytes, write_bytes
from shared.console import counted, plain
from shared.errors import UsageError, one_line
from shared.location import is_remote
from shared.manifest import MANIFEST, Manifest
from shared.rejections import reason_counts, rejections_csv
from shared.targets import check_output_file, check_output_folder
from trainer.inference import Predicted, Predictor, by_file, list_inputs, load_predictor, predict_files, predict_shards
from trainer.options import PredictOptions


def predict_any(run: Path, source: str | Path, opts: PredictOptions) -> tuple[Predictor, Predicted]:
    """(predictor, predictions) for a shard folder (local, or a URL as `trainer train` takes) or raw audio."""
    predictor = load_predictor(run, opts.device, opts.which, opts.tta)
    return predictor, predict_source(predictor, source, opts)


def predict_source(predictor: Predictor, source: str | Path, opts: PredictOptions) -> Predicted:
    """A loaded model's predictions for a split of a shard folder, or for raw audio (a folder or a
    CSV), with the inputs that could not be predicted in `rejected`. A URL (`https://`, `s3://`,
    `pipe:CMD {}`: `shared.location`) is a shard folder, read as training reads it; raw audio is local."""
    if is_remote(source):
        try:
            manifest = Manifest.read(source)
        except UsageError as exc:
            raise UsageError(f"{one_line(exc)}; a URL must be a shard folder (raw audio must be local)") from None
        return predict_shards(predictor, str(source), opts.split, opts.on_bad_shard, adapt=opts.adapt_bn,
                              manifest=manifest)
    source = Path(source)
    if (source / MANIFEST).exists():
        return predict_shards(predictor, source, opts.split, opts.on_bad_shard, adapt=opts.adapt_bn)
    items, rejected = list_inputs(source, opts.labeled)
    if opts.labeled:  # before decoding anything: scoring would refuse these labels at the end
        check_known_labels({label for _, _, label, _ in items if label is not None}, predictor.labels, source)
    predicted = predict_files(predictor, items, opts.jobs, adapt=opts.adapt_bn)
    return Predicted(predicted.paths, predicted.probs, predicted.truth, predicted.groups,
                     rejected + predicted.rejected, predicted.offsets)


def check_known_labels(found: set[str], labels: list[str], source: str | Path) -> None:
    """Refuse labeled inputs with a label the model has no output for, naming them and its labels."""
    unknown = sorted(found - set(labels))
    if unknown:
        more = f" (and {len(unknown) - 5} more)" if len(unknown) > 5 else ""
        raise UsageError(f"{source} has labels the model never saw: {unknown[:5]}{more}; it knows "
                         f"{sorted(labels)[:10]}{' ...' if len(labels) > 10 else ''}: evaluate on those classes only")


def _csv_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    return text_bytes(buffer.getvalue())


def submission_frame(labels: list[str], predicted: Predicted, probabilities: bool) -> pd.DataFrame:
    """`filename,label` (plus one probability column per class), one row per input, sorted: the
    submission CSV's rows, and what `melshard.predict` returns."""
    frame = pd.DataFrame({"filename": predicted.paths,
                          "label": [labels[i] for i in predicted.probs.argmax(axis=1)] if len(predicted.paths) else []})
    if probabilities:
        for index, name in enumerate(labels):
            frame[name] = np.round(predicted.probs[:, index], 6) if len(predicted.paths) else []
    return frame.sort_values("filename", kind="stable")


def write_submission(out: Path, labels: list[str], predicted: Predicted, probabilities: bool) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(out, _csv_bytes(submission_frame(labels, predicted, probabilities)))


def write_windows(out: Path, labels: list[str], windows: Predicted, probabilities: bool) -> None:
    """One row per window of each segmented recording: filename, offset_s, label (+ probabilities).
    A clip that is not windowed (an unsegmented run) is one window at offset 0.0."""
    offsets = [0.0 if offset is None else offset for offset in (windows.offsets or [None] * len(windows.paths))]
    frame = pd.DataFrame({"filename": windows.paths, "offset_s": offsets,
                          "label": [labels[i] for i in windows.probs.argmax(axis=1)]})
    if probabilities:
        for index, name in enumerate(labels):
            frame[name] = np.round(windows.probs[:, index], 6)
    write_bytes(out, _csv_bytes(frame.sort_values(["filename", "offset_s"], kind="stable")))


def errors_path(out: Path) -> Path:
    return out.with_name(out.stem + ".errors.csv")


def windows_path(out: Path) -> Path:
    return out.with_name(out.stem + ".windows.csv")


def lost_phrase(predicted: Predicted, verb: str) -> str:
    """'2 inputs <verb> (1 undecodable, 1 missing_file)', or with damaged shards, counted in clips:
    '250 clips <verb> (250 in 1 damaged shard)'."""
    shards = [row for row in predicted.rejected if row.stage == "shard"]
    files = [row for row in predicted.rejected if row.stage != "shard"]
    if not shards:
        return f"{counted(len(files), 'input')} {verb} ({reason_counts(files)})"
    parts = [f"{predicted.shard_samples} in {counted(len(shards), 'damaged shard')}"]
    if files:
        parts.append(f"{counted(len(files), 'input')}: {reason_counts(files)}")
    return f"{counted(predicted.lost, 'clip')} {verb} ({'; '.join(parts)})"


def run_evaluate(run: Path, source: str | Path, opts: PredictOptions) -> dict:
    """Score a run on labeled data (a split of a shard folder, or labeled raw audio) and write
    RUN/report/; the metrics. `evaluate` on the command line, `melshard.evaluate` and the demo."""
    from trainer.report import evaluate

    check_output_folder(Path(run) / "report", "the report folder")
    predictor, predicted = predict_any(Path(run), source, replace(opts, labeled=True))
    shards = is_remote(source) or (Path(source) / MANIFEST).exists()
    files, windows = by_file(predicted, opts.aggregate)
    return evaluate(Path(run), predictor.labels, files, f"{source} [{opts.split}]" if shards else str(source),
                    windows=windows, adapted=predictor.adapted)


def run_predict(run: Path, source: str | Path, out: Path, opts: PredictOptions) -> int:
    """Write the submission CSV `out` (and its errors and windows files); the exit status."""
    check_output_file(out, "--out", "submission.csv")  # before any work, not after it
    predictor, rows = predict_any(run, source, opts)
    predicted, windows = by_file(rows, opts.aggregate)
    write_submission(out, predictor.labels, predicted, opts.probabilities)
    if opts.windows:
        write_windows(windows_path(out), predictor.labels, windows or rows, opts.probabilities)
        if not predictor.audio.segment:
            print(plain(f"note: {run} was not trained on segmented shards (--segment), so each window in "
                        f"{windows_path(out)} is a whole clip, at offset_s 0.0"))
    errors = errors_path(out)
    if predicted.rejected:
        write_bytes(errors, rejections_csv(predicted.rejected, sort=True))
    else:
        errors.unlink(missing_ok=True)
    left_out = lost_phrase(predicted, "left out")
    print(plain(f"wrote {out}: {counted(len(predicted.paths), 'prediction')}"
                + (f" (BatchNorm adapted to {predictor.adapted} clips)" if predictor.adapted else "")
                + (f"; {left_out}, see {errors}" if predicted.rejected else "")))
    if predicted.rejected and not opts.allow_missing:
        print(plain(f"error: {left_out}; see {errors}; pass --allow-missing to accept a submission "
                    "without them"), file=sys.stderr)
        return 1
    return 0
