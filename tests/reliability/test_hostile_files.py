"""Hostile files: a checkpoint that carries a pickle payload, shards with pickled members or
member names escaping the shard, and a manifest naming shards outside its folder. Each is
refused with one line, and no payload ever runs (its side effect, a marker file, never appears).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest
import torch

from shared.errors import DataError
from shared.manifest import read_manifest
from shared.shardio import ShardError, iter_samples
from tests.audio_fixtures import run_module

FAST = ["--model", "cnn", "--width", "0.25", "--batch-size", "4", "--num-workers", "1", "--epochs", "1"]


class Payload:
    """Unpickling this runs a shell command that creates `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def hostile_checkpoint(path: Path, marker: Path) -> None:
    torch.save({"format": "melshard-checkpoint/1", "model": Payload(marker)}, path)


@pytest.mark.parametrize("command", ["predict", "evaluate", "resume"])
def test_a_checkpoint_with_a_pickle_payload_is_refused_without_running_it(trained, tmp_path, command):
    marker = tmp_path / "payload-ran"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in ("best.pt", "last.pt", "last.prev.pt"):
        hostile_checkpoint(run_dir / name, marker)
    args = {
        "predict": ["predict", str(run_dir), "--input", str(trained["test"]), "--out", str(tmp_path / "x.csv")],
        "evaluate": ["evaluate", str(run_dir), "--shards", str(trained["shards"])],
        "resume": ["train", str(trained["shards"]), "--out", str(run_dir), "--resume"],
    }[command]
    result = run_module("trainer", *args)
    assert result.returncode == 1, result.stderr  # damaged data, not a mistake in the command
    assert "not a loadable melshard checkpoint" in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert not marker.exists()


def test_a_foreign_checkpoint_is_refused(trained, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    torch.save({"state_dict": {}}, other / "best.pt")
    result = run_module("trainer", "predict", str(other), "--input", str(trained["test"]),
                        "--out", str(tmp_path / "x.csv"))
    assert result.returncode == 1 and "not a melshard-checkpoint/1 checkpoint" in result.stderr


def _member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def craft_shard(folder: Path, name: str, extra: dict[str, bytes]) -> None:
    """Replace shard `name` by one with the same samples plus `extra` members, and make the
    manifest vouch for it (size and sha256), as an attacker who controls both would."""
    path = folder / name
    samples = list(iter_samples(path))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for index, sample in enumerate(samples):
            for suffix in ("mel.npy", "cls", "json"):
                _member(tar, f"{sample['__key__']}.{suffix}", sample[suffix])
            if index == 0:
                for member, data in extra.items():
                    _member(tar, member, data)
    data = buffer.getvalue()
    path.write_bytes(data)
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for shard in manifest["splits"]["train"]["shards"]:
        if shard["name"] == name:
            shard.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    manifest_path.write_text(json.dumps(manifest))


@pytest.fixture
def shards(tiny_shards, tmp_path) -> Path:
    copy = tmp_path / "shards"
    shutil.copytree(tiny_shards, copy)
    return copy


def pickled(marker: Path) -> bytes:
    import pickle

    return pickle.dumps(Payload(marker))


@pytest.mark.parametrize("suffix", ["pyd", "pkl", "pth"])
def test_a_shard_with_pickled_members_is_refused_without_decoding_them(shards, tmp_path, suffix):
    marker = tmp_path / "payload-ran"
    craft_shard(shards, "train-000000.tar", {f"evil.{suffix}": pickled(marker)})
    with pytest.raises(ShardError, match=f"evil.{suffix}' holds a pickle"):
        list(iter_samples(shards / "train-000000.tar"))
    if suffix != "pkl":
        return  # the reader's refusal is the same for every suffix; one end-to-end run shows the CLI's
    result = run_module("trainer", "train", str(shards), "--out", str(tmp_path / "run"), *FAST)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and "Traceback" not in result.stderr
    assert "train-000000.tar" in result.stderr and "holds a pickle" in result.stderr
    assert not marker.exists()


@pytest.mark.parametrize("member", ["../escape.cls", "/etc/escape.cls", "a/../../escape.cls"])
def test_a_shard_member_escaping_the_shard_is_refused(shards, tmp_path, member):
    craft_shard(shards, "train-000000.tar", {member: b"1"})
    with pytest.raises(ShardError, match="points outside the shard"):
        list(iter_samples(shards / "train-000000.tar"))
    if not member.startswith(".."):
        return
    result = run_module("trainer", "train", str(shards), "--out", str(tmp_path / "run"), *FAST)
    assert result.returncode == 1 and "points outside the shard" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("name", ["../train-000000.tar", "/etc/passwd.tar", "sub/train-000000.tar"])
def test_a_manifest_naming_shards_outside_its_folder_is_refused(shards, trained, tmp_path, name):
    manifest = json.loads((shards / "manifest.json").read_text())
    manifest["splits"]["train"]["shards"][0]["name"] = name
    (shards / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="outside its folder"):
        read_manifest(shards)
    if name != "../train-000000.tar":
        return
    for command in (["train", str(shards), "--out", str(tmp_path / "run"), *FAST],
                    ["evaluate", str(trained["run"]), "--shards", str(shards), "--split", "train"]):
        result = run_module("trainer", *command)
        assert result.returncode == 1, result.stderr
        assert f"lists shard '{name}' outside its folder" in result.stderr
    assert not (tmp_path / "run" / "last.pt").exists()
