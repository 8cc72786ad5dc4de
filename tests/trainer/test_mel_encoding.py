"""uint8-encoded shards end to end: preprocess a tiny corpus with `mel_encoding = "uint8"`, train on
it, evaluate and predict from its shards, read it through `melshard.Shards(...).loader`, the
trainer's stream and `inspect`: every reader gets float32 mels decoded within the bound."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
import torch
from rich.console import Console

import melshard
from preprocess.inspect import inspect
from shared.manifest import Manifest
from shared.melcodec import error_bound
from shared.shardio import decode_mel, iter_samples
from tests.audio_fixtures import make_corpus, tone
from trainer.data import ShardStream, iter_batches, make_loader, shards_of

TINY = {"sr": 8000, "duration_s": 1.0, "n_mels": 32, "n_fft": 256, "hop_length": 64}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("u8")
    corpus = make_corpus(root / "corpus", per_class=10, labels=("low", "mid", "high", "chirp"))
    test = root / "test"
    test.mkdir()
    rng = np.random.default_rng(3)
    for i, label in enumerate(["low", "mid", "high", "chirp"] * 2):
        sf.write(test / f"t{i}.wav", tone(label, rng, 16000), 16000)
    for encoding in ("uint8", "float16"):
        melshard.preprocess(corpus, root / encoding, test=test, jobs=1, progress=False, shard_size=8,
                            augment_copies=0, val_fraction=0.2, mel_encoding=encoding, **TINY)
    run = melshard.train(root / "uint8", root / "run", model="cnn", width=0.25, epochs=3, batch_size=4, lr=3e-3,
                         num_workers=1, device="cpu", mixup_p=0.0)
    return {"root": root, "shards": root / "uint8", "test": test, "run": run}


def test_train_evaluate_and_predict_from_uint8_shards(made):
    run = made["run"]
    assert run.status == 0 and run.best.exists() and len(run.metrics) == 3
    assert Manifest.read(made["shards"]).config.mel_encoding == "uint8"
    metrics = melshard.evaluate(run, made["shards"], split="val")
    assert metrics["accuracy"] >= 0.75  # four tones, learnable in three epochs
    from_shards = melshard.predict(run, made["shards"], split="test")
    from_audio = melshard.predict(run, made["test"], jobs=1)
    assert len(from_shards) == len(from_audio) == 8
    assert list(from_shards["filename"]) == list(from_audio["filename"])
    # The stored codes and the float16 features differ by at most half a code's step: the same labels.
    assert (from_shards["label"] == from_audio["label"]).mean() >= 0.75
    assert (from_shards["label"] == ["low", "mid", "high", "chirp"] * 2).mean() >= 0.75


def test_every_reader_gets_float32_within_the_bound(made):
    shards = melshard.Shards(made["shards"])
    raw, labels = next(iter(shards.loader("test", 4, shuffle=False, normalise=False)))
    assert raw.dtype == torch.float32 and raw.shape == (4, 32, 126) and labels.tolist() == [-1] * 4
    mel, _ = next(iter(shards.loader("train", 4)))
    assert mel.dtype == torch.float32 and mel.shape == (4, 1, 32, 126)

    manifest = Manifest.read(made["shards"])
    stream = ShardStream(str(made["shards"]), shards_of(manifest, "train"), 4, 1, seed=0, with_keys=True)
    stream.start_epoch(0)
    exact = {s["__key__"]: decode_mel(s) for shard in Manifest.read(made["root"] / "float16").shards("train")
             for s in iter_samples(made["root"] / "float16" / shard.name)}
    seen = 0
    for batch in iter_batches(make_loader(stream, False, 2)):
        assert batch["mel"].dtype == torch.float32
        for key, decoded in zip(batch["key"], batch["mel"].numpy()):
            assert np.abs(decoded - exact[key].astype(np.float32)).max() <= error_bound(exact[key])
            seen += 1
    assert seen == len(exact) == manifest.splits["train"].samples

    out = io.StringIO()
    png, bad = inspect(made["shards"], Console(file=out, width=200))
    assert png.exists() and not bad and "mel_encoding" in out.getvalue()
