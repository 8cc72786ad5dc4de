"""Training from shard URLs: a shard folder served over loopback HTTP, one in a real S3 API on
loopback, and a `pipe:` command;
shard names never reach a shell unquoted."""

from __future__ import annotations

import csv
import functools
import http.server
import json
import shutil
import threading

import pytest

from shared.errors import DataError, UsageError
from shared.location import Location
from shared.manifest import read_manifest
from tests.audio_fixtures import run_module

FAST = ["--model", "cnn", "--width", "0.25", "--batch-size", "4", "--num-workers", "1", "--epochs", "1"]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
        _Quiet.requests.append(self.path)


@pytest.fixture
def served(tiny_shards):
    handler = functools.partial(_Quiet, directory=str(tiny_shards))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def _train_samples(run):
    with (run / "metrics.csv").open() as handle:
        return [int(row["train_samples"]) for row in csv.DictReader(handle)]


def test_training_streams_shards_over_http(tiny_shards, served, tmp_path):
    _Quiet.requests.clear()
    result = run_module("trainer", "train", served, "--out", str(tmp_path / "run"), *FAST)
    assert result.returncode == 0, result.stderr
    assert _train_samples(tmp_path / "run") == [read_manifest(tiny_shards)["splits"]["train"]["samples"]]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["shards"] == served
    assert read_manifest(served) == read_manifest(tiny_shards)  # the manifest comes from the same place


def test_training_streams_shards_from_s3(tiny_shards, s3, tmp_path):
    for file in tiny_shards.iterdir():
        if file.is_file():
            s3.put_file(str(file), f"melshard/tiny/{file.name}")
    result = run_module("trainer", "train", "s3://melshard/tiny", "--out", str(tmp_path / "run"), *FAST)
    assert result.returncode == 0, result.stderr
    assert _train_samples(tmp_path / "run") == [read_manifest(tiny_shards)["splits"]["train"]["samples"]]
    assert read_manifest("s3://melshard/tiny") == read_manifest(tiny_shards)


def test_training_reads_shards_through_a_pipe_command(tiny_shards, tmp_path):
    result = run_module("trainer", "train", f"pipe:cat {tiny_shards}/{{}}", "--out", str(tmp_path / "run"), *FAST)
    assert result.returncode == 0, result.stderr
    assert _train_samples(tmp_path / "run") == [read_manifest(tiny_shards)["splits"]["train"]["samples"]]


def test_a_shard_name_never_reaches_a_shell_unquoted(tiny_shards, tmp_path):
    marker = tmp_path / "injected"
    hostile = f"x.tar; touch {marker}"
    assert Location("pipe:cat /shards/{}").command(hostile) == f"cat /shards/'x.tar; touch {marker}'"
    with pytest.raises(DataError, match="No such file"):  # cat fails on the (quoted, nonexistent) name...
        Location(f"pipe:cat {tmp_path}/{{}}").read_bytes(hostile)
    assert not marker.exists()  # ...and the command after ';' never ran
    shards = tmp_path / "shards"
    shutil.copytree(tiny_shards, shards)
    manifest = json.loads((shards / "manifest.json").read_text())
    manifest["splits"]["train"]["shards"][0]["name"] = "a$(touch injected).tar"
    (shards / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="outside its folder"):
        read_manifest(f"pipe:cat {shards}/{{}}")


def test_a_pipe_location_without_a_placeholder_is_a_usage_error():
    with pytest.raises(UsageError, match="needs {}"):
        Location("pipe:cat /shards/manifest.json")
