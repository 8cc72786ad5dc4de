"""predict and evaluate on a tiny trained run; the demo end to end; hostile checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score

from shared.errors import UsageError
from tests.audio_fixtures import run_module
from trainer.inference import tta_mode


def _predict(trained, source, out, *extra):
    return run_module("trainer", "predict", str(trained["run"]), "--input", str(source), "--out", str(out), *extra)


def test_predictions_from_shards_and_from_raw_audio_agree(trained, tmp_path):
    from_shards = _predict(trained, trained["shards"], tmp_path / "a.csv")
    from_audio = _predict(trained, trained["test"], tmp_path / "b.csv", "--jobs", "2")
    assert from_shards.returncode == 0, from_shards.stderr
    assert from_audio.returncode == 0, from_audio.stderr
    a, b = pd.read_csv(tmp_path / "a.csv"), pd.read_csv(tmp_path / "b.csv")
    assert list(a.columns) == ["filename", "label"]
    assert a["filename"].tolist() == sorted(trained["answers"]) == b["filename"].tolist()
    assert a["label"].tolist() == b["label"].tolist()
    labels = set(torch.load(trained["run"] / "best.pt", weights_only=True)["labels"])
    assert set(a["label"]) <= labels
    assert not (tmp_path / "a.errors.csv").exists()


def test_probabilities_and_tta_columns(trained, tmp_path):
    result = _predict(trained, trained["test"], tmp_path / "p.csv", "--probabilities", "--tta", "--jobs", "1")
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(tmp_path / "p.csv")
    classes = ["chirp", "high", "low", "mid"]
    assert list(table.columns) == ["filename", "label", *classes]
    np.testing.assert_allclose(table[classes].sum(axis=1), 1.0, atol=1e-4)
    assert (table[classes].idxmax(axis=1) == table["label"]).all()


def test_an_undecodable_input_goes_to_the_errors_file_and_exit_1(trained, tmp_path):
    out = tmp_path / "s.csv"
    failed = _predict(trained, trained["raw"], out)
    assert failed.returncode == 1 and "--allow-missing" in failed.stderr
    errors = pd.read_csv(tmp_path / "s.errors.csv")
    assert errors["path"].tolist() == ["broken.wav"] and errors["reason"].tolist() == ["undecodable"]
    assert len(pd.read_csv(out)) == len(trained["answers"])
    allowed = _predict(trained, trained["raw"], out, "--allow-missing")
    assert allowed.returncode == 0


def test_evaluate_writes_every_report_file_and_matches_sklearn(trained):
    result = run_module("trainer", "evaluate", str(trained["run"]), "--shards", str(trained["shards"]),
                        "--split", "val")
    assert result.returncode == 0, result.stderr
    report = trained["run"] / "report"
    for name in ("metrics.json", "per_class.csv", "confusion_matrix.csv", "confusion_matrix.png",
                 "training_curves.png", "predictions.csv"):
        assert (report / name).stat().st_size > 0, name
    metrics = json.loads((report / "metrics.json").read_text())
    predictions = pd.read_csv(report / "predictions.csv")
    assert metrics["samples"] == len(predictions) == 8
    assert metrics["accuracy"] == accuracy_score(predictions["label"], predictions["predicted"])
    assert np.isclose(metrics["macro_f1"], f1_score(predictions["label"], predictions["predicted"],
                                                    labels=["chirp", "high", "low", "mid"], average="macro",
                                                    zero_division=0))
    matrix = pd.read_csv(report / "confusion_matrix.csv", index_col=0)
    assert matrix.values.sum() == 8 and list(matrix.columns) == ["chirp", "high", "low", "mid"]
    assert "accuracy" in result.stdout


def test_evaluate_on_labeled_audio_reports_groups(trained, tmp_path):
    rows = ["path,label,group"] + [f"{p.relative_to(trained['corpus'])},{p.parent.name},g{i % 2}"
                                   for i, p in enumerate(sorted(trained["corpus"].rglob("*.wav")))]
    (trained["corpus"] / "labeled.csv").write_text("\n".join(rows) + "\n")
    result = run_module("trainer", "evaluate", str(trained["run"]), "--input", str(trained["corpus"] / "labeled.csv"))
    assert result.returncode == 0, result.stderr
    per_group = pd.read_csv(trained["run"] / "report" / "per_group.csv")
    assert per_group["group"].tolist() == ["g0", "g1"] and per_group["samples"].sum() == 40


def test_the_demo_runs_end_to_end(tmp_path):
    result = run_module("trainer", "demo", "--quick", "--work", str(tmp_path / "demo"), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test accuracy:" in result.stdout
    accuracy = float(result.stdout.split("test accuracy:")[1].split("%")[0])
    assert accuracy >= 80.0
    assert (tmp_path / "demo" / "submission.csv").exists()
    assert (tmp_path / "demo" / "run" / "report" / "confusion_matrix.png").exists()


def test_ctrl_c_during_predict_exits_130_with_one_line_and_writes_nothing(trained, tmp_path):
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import time

    from tests.audio_fixtures import REPO

    many = tmp_path / "many"
    many.mkdir()
    sources = sorted(trained["test"].rglob("*.wav"))
    for i in range(600):  # enough files that the feature workers are busy when Ctrl-C comes
        shutil.copyfile(sources[i % len(sources)], many / f"f{i:04d}.wav")
    out = tmp_path / "s.csv"
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    process = subprocess.Popen([sys.executable, "-m", "trainer", "predict", str(trained["run"]), "--input", str(many),
                                "--out", str(out), "--jobs", "2"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    children = []
    while time.monotonic() < deadline and process.poll() is None and not children:
        children = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
        time.sleep(0.05)
    assert children, "predict finished before its feature workers started"
    time.sleep(0.5)
    os.killpg(process.pid, signal.SIGINT)  # as Ctrl-C in a terminal: the whole process group
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, (process.returncode, stderr[-3000:])
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted: nothing was written"), lines
    assert not out.exists() and not list(tmp_path.glob("s.*"))


def test_every_predict_and_evaluate_option_reaches_predict_options():
    from dataclasses import fields

    from melshard.cli import build_parser
    from melshard.commands import predict_options
    from trainer.predict import PredictOptions

    names = {f.name for f in fields(PredictOptions)}
    args = build_parser().parse_args(["predict", "RUN", "--input", "X", "--out", "o.csv", "--split", "val",
                                      "--probabilities", "--tta", "--allow-missing", "--device", "cpu", "--jobs", "3",
                                      "--aggregate", "max", "--windows", "--on-bad-shard", "skip", "--adapt-bn"])
    assert predict_options(args) == PredictOptions(split="val", probabilities=True, tta="shift", allow_missing=True,
                                                   device="cpu", jobs=3, aggregate="max", windows=True,
                                                   on_bad_shard="skip", adapt_bn=True)
    assert set(vars(args)) - names == {"command", "run", "input", "out"}  # the paths, passed on their own
    args = build_parser().parse_args(["evaluate", "RUN", "--shards", "S", "--split", "train", "--jobs", "2"])
    assert predict_options(args, labeled=True) == PredictOptions(split="train", jobs=2, labeled=True)
    args = build_parser().parse_args(["evaluate", "RUN", "--shards", "S", "--tta", "warp", "--adapt-bn"])
    assert predict_options(args, labeled=True) == PredictOptions(split="val", tta="warp", adapt_bn=True, labeled=True)
    assert set(vars(args)) - names == {"command", "run", "shards", "input"}


def test_tta_moves_each_clip_with_its_floor_filling_in_not_wrapping_around():
    from shared.config import AudioConfig
    from trainer.data import BandNorm
    from trainer.inference import TTA_SHIFTS, Predictor

    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, x):
            seen.append(x[:, 0].clone())
            return torch.zeros(len(x), 2)

    cpu = torch.device("cpu")
    mel = torch.full((1, 4, 20), -80.0, dtype=torch.float16)
    mel[..., 15:] = torch.arange(5, dtype=torch.float16)  # a word in the last quarter
    p = Predictor(Recorder(), ["a", "b"], AudioConfig(), BandNorm(np.zeros(4), np.ones(4), cpu), cpu, None, tta="shift")
    p.probabilities(mel)
    assert TTA_SHIFTS == (0.0, 0.1, -0.1) and len(seen) == 3
    same, later, earlier = (view[0] for view in seen)
    assert torch.equal(same, mel[0].float())
    assert (later[:, :17] == -80).all() and torch.equal(later[:, 17:], mel[0, :, 15:18].float())  # the end falls off
    assert torch.equal(earlier[:, 13:18], mel[0, :, 15:].float()) and (earlier[:, 18:] == -80).all()


def test_warp_tta_averages_the_clip_and_its_spectrum_moved_down_and_up():
    from shared.config import AudioConfig
    from trainer.data import BandNorm
    from trainer.inference import Predictor

    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, x):
            seen.append(x[:, 0].clone())
            return torch.stack([x[:, 0, :32].mean(dim=(1, 2)), x[:, 0, 32:].mean(dim=(1, 2))], dim=1)

    cpu = torch.device("cpu")
    audio = AudioConfig(sr=8000, n_fft=256, hop_length=64, n_mels=64)
    mel = torch.full((2, 64, 10), -80.0, dtype=torch.float16)
    mel[0, 30] = mel[1, 40] = 0.0  # one lit band (a formant) per clip
    p = Predictor(Recorder(), ["a", "b"], audio, BandNorm(np.zeros(64), np.ones(64), cpu), cpu, None, tta="warp")
    probs = p.probabilities(mel)
    assert len(seen) == 3
    peaks = [view.float().mean(dim=2).argmax(dim=1).tolist() for view in seen]
    assert peaks[0] == [30, 40]
    assert peaks[1][0] < 30 and peaks[1][1] < 40 and peaks[2][0] > 30 and peaks[2][1] > 40  # 0.9 down, 1.1 up
    views = list(seen)  # (the model records every call: iterate over a copy)
    by_view = torch.stack([torch.softmax(p.model(v[:, None]), 1) for v in views])
    torch.testing.assert_close(probs, by_view.mean(0))
    with pytest.raises(UsageError, match="tta must be one of shift, warp"):
        tta_mode("pitch")
