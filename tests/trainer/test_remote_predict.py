"""predict --input and evaluate --shards from a shard folder's URL, read as `trainer train` reads
it (loopback HTTP here, and file://); labeled raw audio given as a URL is refused in one line."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading

import pandas as pd
import pytest

from tests.audio_fixtures import run_module


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
        pass


@pytest.fixture
def served(trained, tmp_path):
    """The trained run's shard folder as http://127.0.0.1:PORT/shards (no trailing slash)."""
    root = tmp_path / "www"
    root.mkdir()
    shutil.copytree(trained["shards"], root / "shards")
    (root / "empty").mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _one_line(result, code: int) -> str:
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_predict_reads_a_shard_folder_from_its_url(trained, served, tmp_path):
    local = run_module("trainer", "predict", str(trained["run"]), "--input", str(trained["shards"]),
                       "--out", str(tmp_path / "local.csv"), "--probabilities")
    assert local.returncode == 0, local.stderr
    for url in (f"{served}/shards", f"{served}/shards/", f"file://{trained['shards']}"):
        out = tmp_path / "remote.csv"
        result = run_module("trainer", "predict", str(trained["run"]), "--input", url, "--out", str(out),
                            "--probabilities")
        assert result.returncode == 0, (url, result.stderr)
        pd.testing.assert_frame_equal(pd.read_csv(out), pd.read_csv(tmp_path / "local.csv"))


def test_evaluate_scores_a_shard_folder_from_its_url(trained, served, tmp_path):
    runs = {}
    for name, shards in (("local", str(trained["shards"])), ("remote", f"{served}/shards")):
        runs[name] = tmp_path / name
        shutil.copytree(trained["run"], runs[name], ignore=shutil.ignore_patterns("report"))
        result = run_module("trainer", "evaluate", str(runs[name]), "--shards", shards, "--split", "val")
        assert result.returncode == 0, result.stderr
    local, remote = (json.loads((runs[n] / "report" / "metrics.json").read_text()) for n in ("local", "remote"))
    assert remote["source"] == f"{served}/shards [val]"
    for key in ("samples", "accuracy", "macro_f1", "balanced_accuracy", "not_evaluated"):
        assert remote[key] == local[key], key
    assert (runs["remote"] / "report" / "predictions.csv").read_text() == \
        (runs["local"] / "report" / "predictions.csv").read_text()


def test_a_url_that_is_no_shard_folder_or_labeled_audio_is_refused_in_one_line(trained, served, tmp_path):
    line = _one_line(run_module("trainer", "evaluate", str(trained["run"]), "--input", f"{served}/shards"), 2)
    assert "labeled audio must be a local folder or CSV" in line and "--shards" in line
    out = tmp_path / "s.csv"
    line = _one_line(run_module("trainer", "predict", str(trained["run"]), "--input", f"{served}/empty",
                                "--out", str(out)), 2)
    assert f"{served}/empty/manifest.json" in line and "raw audio must be local" in line
    assert "http:/1" not in line and not out.exists()


def test_the_api_predicts_a_shard_folder_from_its_url(trained, served):
    import melshard

    local = melshard.predict(trained["run"], trained["shards"], device="cpu", allow_missing=True)
    remote = melshard.predict(trained["run"], f"{served}/shards", device="cpu", allow_missing=True)
    pd.testing.assert_frame_equal(remote, local)
