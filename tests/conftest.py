"""Shared fixtures: tiny real shard folders made by the real preprocessor."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from preprocess.pipeline import RunOptions, run
from shared.config import AudioConfig, AugmentConfig, PreprocessConfig
from tests.audio_fixtures import make_corpus

# The corpora here are small, and a small run is done in one process whatever --jobs says; the
# tests that pass --jobs 2 mean the worker pool, so it starts for any work. The rule itself is
# tested with the variable removed (tests/preprocess/test_small_runs.py).
os.environ.setdefault("MELSHARD_POOL_SAMPLES", "1")

TINY_AUDIO = AudioConfig(sr=8000, duration_s=1.0, n_fft=256, hop_length=64, n_mels=32)


def make_shards(root: Path, per_class: int, shard_size: int, copies: int = 0, seed: int = 0) -> Path:
    corpus = make_corpus(root / "corpus", per_class=per_class, labels=("low", "mid", "high", "chirp"), seed=seed)
    cfg = PreprocessConfig(audio=TINY_AUDIO, augment=AugmentConfig(copies=copies), shard_size=shard_size)
    run(RunOptions(corpus, root / "shards", jobs=1), cfg)
    return root / "shards"


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory) -> Path:
    """4 learnable classes x 12 clips: 38 train samples in 5 shards, 10 val samples."""
    return make_shards(tmp_path_factory.mktemp("tiny"), per_class=12, shard_size=8)


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A tiny trained run with an unlabeled test folder (one broken file in it) and its shards."""
    import shutil

    import numpy as np
    import soundfile as sf

    from tests.audio_fixtures import run_module, tone

    root = tmp_path_factory.mktemp("trained")
    corpus = make_corpus(root / "corpus", per_class=10, labels=("low", "mid", "high", "chirp"))
    test = root / "test"
    (test / "sub").mkdir(parents=True)
    rng = np.random.default_rng(9)
    answers = {}
    for i, label in enumerate(["low", "mid", "high", "chirp"] * 2):
        name = f"sub/t{i}.wav" if i % 3 == 0 else f"t{i}.wav"
        sf.write(test / name, tone(label, rng, 16000), 16000)
        answers[name] = label
    cfg = PreprocessConfig(audio=TINY_AUDIO, augment=AugmentConfig(copies=0), shard_size=8)
    run(RunOptions(corpus, root / "shards", test=test, jobs=1), cfg)
    raw = root / "raw"
    shutil.copytree(test, raw)
    (raw / "broken.wav").write_bytes(b"RIFF....not really")
    result = run_module("trainer", "train", str(root / "shards"), "--out", str(root / "run"), "--model", "cnn",
                        "--width", "0.25", "--batch-size", "4", "--num-workers", "1", "--lr", "3e-3",
                        "--epochs", "3", "--mixup-p", "0")
    assert result.returncode == 0, result.stderr
    return {"shards": root / "shards", "run": root / "run", "test": test, "raw": raw, "answers": answers,
            "corpus": corpus}


@pytest.fixture(scope="session")
def s3():
    """A real S3 API (moto's server) on loopback, with a `melshard` bucket; its endpoint and dummy
    credentials are in the environment, which subprocesses and dask workers inherit."""
    moto_server = pytest.importorskip("moto.server", reason="pip install -e '.[test]' for the S3 tests")
    fsspec = pytest.importorskip("fsspec")
    pytest.importorskip("s3fs", reason="pip install -e '.[test]' for the S3 tests")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
        for name, value in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"),
                            ("AWS_DEFAULT_REGION", "us-east-1")):
            env.setenv(name, value)
        env.delenv("AWS_PROFILE", raising=False)
        fs = fsspec.filesystem("s3", skip_instance_cache=True)
        fs.mkdir("melshard")
        yield fs
    server.stop()
