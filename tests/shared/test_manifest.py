"""The typed manifest: what the preprocessor wrote, read back field for field, and refused in one
line when it is damaged."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from shared.config import AudioConfig
from shared.errors import DataError, UsageError
from shared.manifest import MANIFEST, Manifest, ShardEntry, read_manifest


def test_a_written_manifest_round_trips_byte_for_byte(tiny_shards):
    written = (tiny_shards / MANIFEST).read_bytes()
    manifest = Manifest.read(tiny_shards)
    assert manifest.to_json() == written
    assert Manifest.from_json(written) == manifest
    assert manifest.to_dict() == read_manifest(tiny_shards) == json.loads(written)


def test_the_typed_fields_are_the_files(tiny_shards):
    data = json.loads((tiny_shards / MANIFEST).read_text())
    manifest = Manifest.read(tiny_shards)
    assert manifest.audio == AudioConfig(**data["audio"]) and manifest.seed == data["seed"]
    assert manifest.augment.copies == data["augment"]["copies"]
    assert list(manifest.labels) == data["labels"] == ["chirp", "high", "low", "mid"]
    assert manifest.counts == {name: split["samples"] for name, split in data["splits"].items()}
    assert manifest.shards("train") == tuple(ShardEntry(**s) for s in data["splits"]["train"]["shards"])
    assert manifest.shards("test") == ()  # a split the folder does not have
    assert manifest.splits["train"].per_class == data["splits"]["train"]["per_class"]
    assert list(manifest.stats.mel_mean) == data["stats"]["mel_mean"]
    assert manifest.inputs.written == data["inputs"]["written"]


def test_the_fingerprint_covers_shard_contents_labels_and_audio(tiny_shards):
    data = json.loads((tiny_shards / MANIFEST).read_text())
    shards = {split: [(s["name"], s["sha256"]) for s in info["shards"]] for split, info in data["splits"].items()}
    payload = json.dumps([shards, data["labels"], data["audio"]], sort_keys=True)
    assert Manifest.read(tiny_shards).fingerprint() == hashlib.sha256(payload.encode()).hexdigest()


def _damage(tiny_shards, tmp_path, change):
    folder = tmp_path / "shards"
    folder.mkdir()
    shutil.copy(tiny_shards / MANIFEST, folder / MANIFEST)
    data = json.loads((folder / MANIFEST).read_text())
    change(data)
    (folder / MANIFEST).write_text(json.dumps(data))
    return folder


@pytest.mark.parametrize("change,words", [
    (lambda d: d.pop("stats"), "no 'stats'"),
    (lambda d: d["splits"]["train"]["shards"][0].pop("sha256"), "no 'sha256'"),
    (lambda d: d["splits"].update(train=[]), "must be dict"),
    (lambda d: d["inputs"].update(written="12"), "damaged"),
    (lambda d: d["audio"].update(colour=1), "unknown key"),
    (lambda d: d["audio"].update(sr=10), "audio.sr"),
    (lambda d: d.update(format="melshard/0"), "not a melshard/1 manifest"),
    (lambda d: d["splits"]["val"]["shards"][0].update(name="../x.tar"), "outside its folder"),
])
def test_a_damaged_manifest_is_data_error_in_one_line(tiny_shards, tmp_path, change, words):
    folder = _damage(tiny_shards, tmp_path, change)
    for read in (Manifest.read, read_manifest):
        with pytest.raises(DataError, match=words) as refused:
            read(folder)
        assert "\n" not in str(refused.value) and str(folder / MANIFEST) in str(refused.value)


def test_no_manifest_is_a_usage_error_and_bad_json_a_data_error(tmp_path):
    with pytest.raises(UsageError, match="manifest.json not found"):
        Manifest.read(tmp_path)
    (tmp_path / MANIFEST).write_text('{"format": "melshard/1", ')
    with pytest.raises(DataError, match="not valid JSON"):
        Manifest.read(tmp_path)
