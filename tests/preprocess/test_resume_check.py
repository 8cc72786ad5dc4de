"""A rerun trusts a finished shard by its journaled stat, and hashes only one that changed."""

from __future__ import annotations

import os

import preprocess.output
from preprocess.pipeline import RunOptions, run
from shared.config import AugmentConfig, PreprocessConfig
from tests.audio_fixtures import make_corpus
from tests.conftest import TINY_AUDIO


def test_a_rerun_stats_finished_shards_and_rehashes_only_a_changed_one(tmp_path, monkeypatch):
    src = make_corpus(tmp_path / "src", per_class=6)
    cfg = PreprocessConfig(audio=TINY_AUDIO, augment=AugmentConfig(copies=0), shard_size=4)
    opts = RunOptions(src, tmp_path / "out", jobs=1)
    first = run(opts, cfg)
    shards = sorted((tmp_path / "out").glob("*.tar"))
    before = {p.name: p.read_bytes() for p in shards}

    hashed = []
    real = preprocess.output.shard_problem

    def counted(path, *args, **kwargs):
        hashed.append(path.name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(preprocess.output, "shard_problem", counted)
    second = run(opts, cfg)
    assert hashed == [] and second.processed == 0
    assert second.manifest == first.manifest

    # Same size, other bytes, written in place: the stat differs (mtime, ctime), so it is hashed,
    # found wrong and rewritten.
    victim = shards[1]
    data = bytearray(victim.read_bytes())
    data[700] ^= 0xFF
    victim.write_bytes(bytes(data))
    third = run(opts, cfg)
    assert hashed == [victim.name]
    assert third.manifest == first.manifest
    assert {p.name: p.read_bytes() for p in shards} == before

    # A copy put in its place with the journaled mtime restored is still another file (inode): hashed, kept.
    stat = victim.stat()
    copy = tmp_path / "copy.tar"
    copy.write_bytes(victim.read_bytes())
    os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.replace(copy, victim)
    hashed.clear()
    fourth = run(opts, cfg)
    assert hashed == [victim.name] and fourth.processed == 0

    # Found right, it is journaled with its new stat: the next rerun hashes nothing.
    hashed.clear()
    assert run(opts, cfg).processed == 0 and hashed == []
