"""SIGKILL at seeded random moments (bench/faults.py runs the same with more kills).

Preprocessing: rerunning finishes, nothing under a final name is ever partial, and the shards and
manifest equal an uninterrupted run's byte for byte. Training: `--resume` ends with the
uninterrupted run's exact weights on CPU. Saving a checkpoint: a kill mid-save leaves the previous
`last.pt` loadable.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from bench.faults import preprocess_kills, train_kills
from tests.audio_fixtures import REPO, make_corpus

TINY = "shard_size = 3\n[audio]\nsr = 8000\nduration_s = 1.0\nn_fft = 256\nhop_length = 64\nn_mels = 32\n"


def test_preprocess_killed_at_five_random_moments_reruns_to_identical_output(tmp_path):
    src = make_corpus(tmp_path / "corpus", per_class=12, labels=("low", "mid", "high", "chirp"))
    config = tmp_path / "tiny.toml"
    config.write_text(TINY + "[augment]\ncopies = 1\n")
    kills = preprocess_kills(src, tmp_path, [11, 12, 13, 14, 15], ["--config", str(config), "--jobs", "2"])
    assert all(k.partial_final_names == 0 for k in kills), kills
    assert all(k.identical for k in kills), kills
    assert sum(k.delivered for k in kills) >= 3, kills  # most kills land while it runs


def test_training_killed_at_three_random_moments_resumes_to_the_exact_weights(tiny_shards, tmp_path):
    options = ["--model", "cnn", "--width", "0.25", "--batch-size", "4", "--num-workers", "1", "--epochs", "2",
               "--checkpoint-every", "2", "--lr", "3e-3"]
    kills = train_kills(tiny_shards, tmp_path, [21, 22, 23], options)
    assert all(k.partial_final_names == 0 for k in kills), kills
    assert all(k.identical for k in kills), kills
    assert sum(k.delivered for k in kills) >= 2, kills


SAVER = """
import sys, torch
from trainer import checkpoint
path = sys.argv[1]
big = torch.zeros(24_000_000)  # ~96 MB: each save takes long enough to be killed in the middle
for version in range(1000):
    checkpoint.save(path, {"version": version, "big": big}, keep_backup=True)
"""


def test_a_kill_while_saving_leaves_the_previous_checkpoint_loadable(tmp_path):
    from trainer import checkpoint

    target = tmp_path / "last.pt"
    process = subprocess.Popen([sys.executable, "-c", SAVER, str(target)], cwd=REPO,
                               env=dict(os.environ, PYTHONPATH=str(REPO)))
    deadline = time.monotonic() + 120
    # Wait until a checkpoint exists and the next one is being written, then kill mid-write.
    while time.monotonic() < deadline:
        writing = list(tmp_path.glob(".last.pt.*.tmp"))
        backup = tmp_path / "last.prev.pt"
        if backup.exists() and writing and writing[0].stat().st_size > 1_000_000:
            break
        assert process.poll() is None
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert list(tmp_path.glob(".last.pt.*.tmp")), "the kill did not land during a save"
    survivor = checkpoint.load(target)
    assert survivor["big"].shape == (24_000_000,)
    assert survivor["version"] >= 1
    assert checkpoint.load(tmp_path / "last.prev.pt")["version"] == survivor["version"] - 1
    # A truncated last.pt (say, a copy cut short) is caught and the backup taken, with a warning.
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 3])
    assert checkpoint.load_latest(tmp_path)["version"] == survivor["version"] - 1
