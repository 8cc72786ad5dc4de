"""A corpus shaped like real phone uploads, end to end through the public commands.

Nested folders, UUID-like names with dots, relative paths of 150-250 characters, the formats
phones upload (3gp with AMR-NB, caf with ALAC, m4a with AAC, besides wav), a CSV with absolute
paths, an unlabeled test folder named the same way: every sample written is read back by
training, evaluation, prediction from shards and from the raw files, and `inspect`; nothing
needs a system ffmpeg.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from bench.decode_formats import ENCODED, write_encoded
from preprocess.plan import MAX_KEY
from shared.manifest import read_manifest
from shared.shardio import iter_samples
from tests.audio_fixtures import run_module, tone, write_tiny_config

pytestmark = pytest.mark.slow

LABELS = ("low", "mid", "high")
FAST = ["--model", "cnn", "--width", "0.25", "--batch-size", "4", "--num-workers", "2", "--epochs", "1"]


EXTENSIONS = (".3gp", ".caf", ".m4a", ".wav")


def upload_name(rng: np.random.Generator, label: str, length: int, extension: str) -> str:
    """`bucket/<folders>/<uuid>-<ms>-1.7-f-26-<label><extension>`, padded by folders to `length` characters."""
    ident = uuid.UUID(bytes=rng.bytes(16), version=4)
    leaf = f"{ident}-{int(rng.integers(1e12, 2e12))}-1.7-{'fm'[int(rng.integers(2))]}-26-{label}"
    head = "donateacry-android-upload-bucket/"
    folders = ""
    while len(head + folders + leaf) + 4 < length:
        folders += f"{rng.bytes(8).hex()}.d/"[: length - len(head + folders + leaf) - 4] + "/"
    return (head + folders + leaf).replace("//", "/") + extension


def write_uploads(root: Path, count: int, rng: np.random.Generator, labeled: bool) -> list[tuple[Path, str]]:
    written = []
    for i in range(count):
        label = LABELS[i % len(LABELS)]
        extension = EXTENSIONS[(i // len(LABELS)) % len(EXTENSIONS)]
        rel = upload_name(rng, label, int(rng.integers(150, 251)), extension)
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if extension == ".wav":
            sf.write(path, tone(label, rng, 16000), 16000, subtype="PCM_16")
        else:
            codec, rate, _ = ENCODED[extension]
            write_encoded(path, tone(label, rng, 16000), 16000, codec, rate)
        written.append((path, label if labeled else ""))
    return written


@pytest.fixture(scope="module")
def uploads(tmp_path_factory):
    root = tmp_path_factory.mktemp("uploads")
    rng = np.random.default_rng(3)
    clips = write_uploads(root / "corpus", 30, rng, labeled=True)
    tests = write_uploads(root / "test", 9, rng, labeled=False)
    lists = root / "lists"
    lists.mkdir()
    pd.DataFrame({"path": [str(p) for p, _ in clips], "label": [label for _, label in clips]}).to_csv(
        lists / "train.csv", index=False)
    write_tiny_config(root / "preprocess.toml", head="val_fraction = 0.25\nshard_size = 6")
    out = root / "shards"
    result = run_module("preprocess", str(lists / "train.csv"), "--test", str(root / "test"), "--out", str(out),
                        "--config", str(root / "preprocess.toml"), "--jobs", "2")
    assert result.returncode == 0, result.stderr
    return {"root": root, "clips": clips, "tests": tests, "shards": out}


def test_every_upload_is_a_sample_with_its_full_path(uploads):
    manifest = read_manifest(uploads["shards"])
    assert manifest["inputs"]["rejected"] == 0
    assert {p.suffix for p, _ in uploads["clips"]} == set(EXTENSIONS)
    lengths = [len(str(p.relative_to(uploads["root"] / "corpus"))) for p, _ in uploads["clips"]]
    assert min(lengths) >= 150 and max(lengths) <= 250
    seen = {}
    for tar in sorted(uploads["shards"].glob("*.tar")):
        for sample in iter_samples(tar):
            assert {"mel.npy", "json"} <= set(sample) and len(sample["__key__"]) <= MAX_KEY + len("_aug1")
            meta = json.loads(sample["json"])
            seen[sample["__key__"]] = meta["path"]
    assert len(seen) == sum(s["samples"] for s in manifest["splits"].values())
    # The JSON path is the whole path as listed: absolute in the CSV, relative to the test folder.
    paths = set(seen.values())
    assert {str(p) for p, _ in uploads["clips"]} <= paths
    assert {str(p.relative_to(uploads["root"] / "test")) for p, _ in uploads["tests"]} <= paths


def test_training_evaluation_prediction_and_inspect_see_every_sample(uploads, tmp_path):
    shards, run = uploads["shards"], tmp_path / "run"
    manifest = read_manifest(shards)
    result = run_module("trainer", "train", str(shards), "--out", str(run), *FAST)
    assert result.returncode == 0, result.stderr
    metrics = pd.read_csv(run / "metrics.csv")
    assert metrics["train_samples"].iloc[-1] == manifest["splits"]["train"]["samples"]

    result = run_module("trainer", "evaluate", str(run), "--shards", str(shards), "--split", "val")
    assert result.returncode == 0, result.stderr
    assert json.loads((run / "report" / "metrics.json").read_text())["samples"] == manifest["splits"]["val"]["samples"]

    result = run_module("trainer", "predict", str(run), "--input", str(shards), "--out", str(tmp_path / "s.csv"))
    assert result.returncode == 0, result.stderr
    assert len(pd.read_csv(tmp_path / "s.csv")) == manifest["splits"]["test"]["samples"] == len(uploads["tests"])

    raw = tmp_path / "raw.csv"
    result = run_module("trainer", "predict", str(run), "--input", str(uploads["root"] / "test"), "--out", str(raw))
    assert result.returncode == 0, result.stderr
    assert sorted(pd.read_csv(raw)["filename"]) == sorted(pd.read_csv(tmp_path / "s.csv")["filename"])

    result = run_module("preprocess", "inspect", str(shards))
    assert result.returncode == 0, result.stderr
    assert "every sample read" in result.stdout


def test_a_shard_losing_a_member_is_damage_named_by_shard_and_key(uploads, tmp_path):
    """The defect this guards against: samples read without their mel.npy while the sha256 matched.
    A shard rebuilt without one member (manifest updated to vouch for it) is found before training."""
    import hashlib
    import io
    import shutil
    import tarfile

    shards = tmp_path / "shards"
    shutil.copytree(uploads["shards"], shards)
    name = "train-000000.tar"
    buffer = io.BytesIO()
    with tarfile.open(shards / name) as source, tarfile.open(fileobj=buffer, mode="w") as target:
        members = source.getmembers()
        gone = next(m for m in members if m.name.endswith(".mel.npy"))  # the first sample's mel
        for member in members:
            if member is not gone:
                target.addfile(member, source.extractfile(member))
    (shards / name).write_bytes(buffer.getvalue())
    manifest = json.loads((shards / "manifest.json").read_text())
    for entry in manifest["splits"]["train"]["shards"]:
        if entry["name"] == name:
            entry.update(bytes=len(buffer.getvalue()), sha256=hashlib.sha256(buffer.getvalue()).hexdigest())
    (shards / "manifest.json").write_text(json.dumps(manifest))

    result = run_module("trainer", "train", str(shards), "--out", str(tmp_path / "run"), *FAST)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    key = gone.name.split(".", 1)[0]
    assert name in result.stderr and f"sample '{key}' has no" in result.stderr

    result = run_module("trainer", "train", str(shards), "--out", str(tmp_path / "run"), *FAST,
                        "--on-bad-shard", "skip")
    assert result.returncode == 0, result.stderr
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    lost = next(s["samples"] for s in manifest["splits"]["train"]["shards"] if s["name"] == name)
    assert metrics["lost_train_samples"].iloc[-1] == lost
    assert metrics["train_samples"].iloc[-1] == manifest["splits"]["train"]["samples"] - lost
