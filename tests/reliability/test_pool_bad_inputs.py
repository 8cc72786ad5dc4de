"""Bad inputs at a size that really goes through the process pools.

Below one chunk (64 files) `predict` and `evaluate` decode in-process and below two shards
`preprocess` does too, so small corpora never send a rejected file's reason back through a
pickle. Here a few hundred short clips, with the gauntlet's rejected kinds placed in the first,
a middle and the last chunk, go through `--jobs 1` and `--jobs 2` (7 chunks: at least 3 per
worker) in real subprocesses: each bad file is one row of the errors file with its own reason,
every good file is predicted, the exit status is as documented and no traceback is printed.
"""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import subprocess
import sys
import time
from itertools import islice
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from shared.manifest import read_manifest
from tests.audio_fixtures import REPO, run_module, tone
from tests.conftest import TINY_AUDIO
from tests.reliability.test_bad_inputs import gauntlet
from tests.reliability.test_damaged_shards import damage
from trainer.inference import CHUNK_FILES, READ_AHEAD, in_processes, list_inputs

LABELS = ("chirp", "high", "low", "mid")  # the `trained` run's classes, in listing order
PER_CLASS = 105  # 420 good clips + the bad ones: 7 chunks of 64 files
SR = 8000


def _spread(bad: dict[str, str]) -> list[tuple[str, str, str]]:
    """(gauntlet path, new path, reason): bad files named to sort to the start of the first class
    folder, into the middle of the listing and to the end of the last class folder."""
    places = [(LABELS[0], "000"), (LABELS[2], "052"), (LABELS[-1], "999")]
    spread = []
    for index, (rel, reason) in enumerate(sorted(bad.items())):
        label, position = places[index % len(places)]
        spread.append((rel, f"{label}/{label}_{position}_{Path(rel).name}", reason))
    return spread


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """Class folders of 0.5 s clips at 8 kHz with every rejected kind of the gauntlet among them."""
    root = tmp_path_factory.mktemp("pool")
    src = root / "corpus"
    rng = np.random.default_rng(3)
    good = []
    for label in LABELS:
        (src / label).mkdir(parents=True)
        for i in range(PER_CLASS):
            sf.write(src / label / f"{label}_{i:03d}.wav", tone(label, rng, SR, seconds=0.5), SR, subtype="PCM_16")
            good.append(f"{label}/{label}_{i:03d}.wav")
    kinds = gauntlet(root / "gauntlet")
    # Decoding rejects these. no_class_folder is a listing rejection, made before any pool;
    # needs_ffmpeg depends on the decoders installed, which a subprocess cannot pretend away.
    bad = {rel: reason for rel, reason in kinds.items()
           if reason not in ("sample", "no_class_folder", "needs_ffmpeg")}
    expected = {}
    for old, new, reason in _spread(bad):
        shutil.copy(root / "gauntlet" / old, src / new)
        expected[new] = reason
    return {"src": src, "good": sorted(good), "bad": expected}


def test_the_bad_files_sit_in_the_first_a_middle_and_the_last_chunk(corpus):
    items, _ = list_inputs(corpus["src"], labeled=False)
    order = [item[1] for item in items]
    chunks = {order.index(rel) // CHUNK_FILES for rel in corpus["bad"]}
    last = (len(order) - 1) // CHUNK_FILES
    assert last + 1 >= 3 * 2, "fewer than 3 chunks per worker with --jobs 2"
    assert {0, last} <= chunks and chunks - {0, last}, chunks
    assert len(corpus["bad"]) >= 7


def test_workers_stay_a_few_chunks_ahead_of_a_slow_consumer(tmp_path):
    """Memory stays flat: while the model is busy, no more than READ_AHEAD chunks per worker are
    decoded and held (joblib's generator would decode all 60 meanwhile). Each task copies a file,
    a mark that it ran (a standard-library function: the workers start without importing torch)."""
    (tmp_path / "seed").touch()
    marks = [str(tmp_path / f"mark{i:02d}") for i in range(60)]
    results = in_processes(shutil.copyfile, [(str(tmp_path / "seed"), mark) for mark in marks], jobs=2)
    assert list(islice(results, 2)) == marks[:2]
    time.sleep(3)  # the consumer is stalled
    started = len(list(tmp_path.glob("mark*")))
    assert started <= 2 + READ_AHEAD * 2, started
    assert list(results) == marks[2:]


def run_in_terminal(*args: str, timeout: float = 300) -> tuple[int, str]:
    """Run `python -m ARGS` with stdout and stderr on a pseudo-terminal, as at a shell."""
    primary, secondary = pty.openpty()
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", TERM="xterm", COLUMNS="120")
    process = subprocess.Popen([sys.executable, "-m", *args], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                               stdout=secondary, stderr=secondary)
    os.close(secondary)
    output = bytearray()
    try:
        while True:
            ready, _, _ = select.select([primary], [], [], 0.5)
            if ready:
                try:
                    data = os.read(primary, 1 << 16)
                except OSError:  # EIO: every holder of the terminal has closed it
                    break
                if not data:
                    break
                output += data
            elif process.poll() is not None:  # done; pool workers may keep the terminal a while
                break
        return process.wait(timeout), output.decode("utf-8", "replace")
    finally:
        os.close(primary)


def _predict(trained, corpus, out: Path, jobs: int, allow_missing: bool) -> tuple[int, str]:
    args = ["trainer", "predict", str(trained["run"]), "--input", str(corpus["src"]), "--out", str(out),
            "--jobs", str(jobs), *(["--allow-missing"] if allow_missing else [])]
    if allow_missing:  # on a terminal, where a progress bar is drawn
        return run_in_terminal(*args)
    result = run_module(*args)
    assert "audio files" not in result.stderr  # no progress bar in a log
    return result.returncode, result.stderr


def _one_row_each(table: pd.DataFrame, expected: dict[str, str]) -> None:
    """Each bad file is exactly one row, with its own reason."""
    assert sorted(table["path"]) == sorted(expected)
    assert dict(zip(table["path"], table["reason"])) == expected


@pytest.mark.parametrize("jobs,allow_missing", [(1, False), (2, False), (2, True)])
def test_predict_rejects_each_bad_file_once_and_predicts_every_good_one(trained, corpus, tmp_path, jobs,
                                                                        allow_missing):
    out = tmp_path / "sub.csv"
    status, output = _predict(trained, corpus, out, jobs, allow_missing)
    assert "Traceback" not in output, output[-3000:]
    assert status == (0 if allow_missing else 1), output[-3000:]
    if not allow_missing:
        assert "--allow-missing" in output
    else:
        total = len(corpus["good"]) + len(corpus["bad"])
        assert "audio files" in output and f"{total}/{total}" in output  # the progress bar
    _one_row_each(pd.read_csv(tmp_path / "sub.errors.csv"), corpus["bad"])
    assert pd.read_csv(out)["filename"].tolist() == corpus["good"]


def test_evaluate_on_raw_audio_counts_each_bad_file_once(trained, corpus, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained["run"], run)
    result = run_module("trainer", "evaluate", str(run), "--input", str(corpus["src"]), "--jobs", "2")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    _one_row_each(pd.read_csv(run / "report" / "not_evaluated.csv"), corpus["bad"])
    assert pd.read_csv(run / "report" / "predictions.csv")["path"].tolist() == corpus["good"]
    metrics = json.loads((run / "report" / "metrics.json").read_text())
    assert metrics["samples"] == len(corpus["good"]) and metrics["not_evaluated"] == len(corpus["bad"])


def test_preprocess_sends_each_rejection_back_from_its_shard_worker(corpus, tmp_path):
    config = tmp_path / "small.toml"
    config.write_text("[audio]\n" + "".join(f"{k} = {v}\n" for k, v in
                                            (("sr", TINY_AUDIO.sr), ("duration_s", TINY_AUDIO.duration_s),
                                             ("n_fft", TINY_AUDIO.n_fft), ("hop_length", TINY_AUDIO.hop_length),
                                             ("n_mels", TINY_AUDIO.n_mels))))
    out = tmp_path / "shards"
    # 32 clips a shard: more than a dozen shards, so two workers take several each (one shard,
    # or --jobs 1, would run in-process).
    result = run_module("preprocess", str(corpus["src"]), "--out", str(out), "--config", str(config),
                        "--shard-size", "32", "--augment-copies", "0", "--jobs", "2")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = pd.read_csv(out / "errors.csv")
    _one_row_each(errors, corpus["bad"])
    assert set(errors["stage"]) == {"decode"}
    manifest = read_manifest(out)
    counts = {k: manifest["inputs"][k] for k in ("total", "written", "rejected")}
    assert counts == {"total": len(corpus["good"]) + len(corpus["bad"]), "written": len(corpus["good"]),
                      "rejected": len(corpus["bad"])}
    assert sum(len(split["shards"]) for split in manifest["splits"].values()) >= 3 * 2


def test_a_shard_damaged_in_transit_stops_two_loader_workers_with_one_line(tiny_shards, tmp_path):
    """A shard read through a `pipe:` command is checked as it streams, inside a loader worker, so
    the error crosses the DataLoader's process boundary before it is reported."""
    shards = tmp_path / "shards"
    shutil.copytree(tiny_shards, shards)
    victim = read_manifest(shards)["splits"]["train"]["shards"][1]["name"]
    damage(shards / victim, "cut")
    result = run_module("trainer", "train", f"pipe:cat {shards}/{{}}", "--out", str(tmp_path / "run"),
                        "--model", "cnn", "--width", "0.25", "--batch-size", "4", "--epochs", "1",
                        "--num-workers", "2")
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and victim in last
