"""bench/peers.py without its optional libraries: a missing peer is skipped, melshard never is."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from bench import peers


def test_missing_libraries_skip_their_peers(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lhotse" else real(name, *a))
    table = peers.peers(Path("src"), Path("out"), 8)
    assert [peers.missing(module) for _, module in table.values()] == [False, True, True,
                                                                        peers.missing("webdataset")]
    command, module = table["melshard preprocess --jobs 2"]
    assert module is None and command[1:3] == ["-m", "preprocess"]
