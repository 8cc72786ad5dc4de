"""Listing: real paths resolved folder by folder equal os.path.realpath on trees of links."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.sources import _real_path, _walk_audio, drop_duplicates, joined, list_folder


def _tree(root, rng: random.Random) -> list[str]:
    """Folders, files and links of every kind (to files, to folders, chains, broken, to a parent),
    and the paths to ask about, through links and with `.`/`..` components."""
    folders = [root / "a", root / "a" / "b", root / "c", root / "c" / "d e"]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(3):
            (folder / f"f{i}.wav").write_bytes(b"x")
    links = {
        root / "a" / "to_b": "b", root / "c" / "to_a": "../a", root / "top": "a/b",
        root / "a" / "b" / "up": "..", root / "c" / "file_link.wav": "../a/f0.wav",
        root / "c" / "chain.wav": "file_link.wav", root / "c" / "broken.wav": "nowhere/x.wav",
        root / "c" / "abs_link": str(root / "c" / "d e"),
    }
    for link, target in links.items():
        link.symlink_to(target)
    names = ["f0.wav", "f1.wav", "f2.wav", "file_link.wav", "chain.wav", "broken.wav", "missing.wav", ".", ".."]
    bases = [root / "a", root / "a" / "to_b", root / "c" / "to_a" / "to_b", root / "top", root / "a" / "b" / "up",
             root / "c" / "abs_link", root / "c", root / "a" / "." / "b", root / "c" / ".." / "a"]
    paths = [os.path.join(str(base), name) for base in bases for name in names]
    rng.shuffle(paths)
    return paths


@pytest.mark.parametrize("seed", range(5))
def test_real_paths_equal_os_realpath(tmp_path, seed):
    paths = _tree(tmp_path, random.Random(seed))
    folders: dict[str, str] = {}
    for path in paths:
        assert _real_path(path, folders) == os.path.realpath(path), path


def test_the_same_file_listed_twice_is_a_duplicate(tmp_path):
    from shared.sources import Clip

    paths = _tree(tmp_path, random.Random(0))
    clips = [Clip(p, f"rel{i}", "x") for i, p in enumerate(paths)]
    rejections: list = []
    kept = drop_duplicates(clips, rejections)
    assert len({os.path.realpath(c.path) for c in kept}) == len(kept)
    assert len(kept) + len(rejections) == len(clips)
    assert len(kept) == len({os.path.realpath(p) for p in paths})


def test_the_walk_lists_relative_paths_with_slashes_and_never_loops(tmp_path):
    _tree(tmp_path, random.Random(0))
    found = _walk_audio(tmp_path, [], [])
    rels = [rel for _, rel in found]
    assert all(os.path.join(str(tmp_path), *rel.split("/")) == path for path, rel in found)
    assert "a/f0.wav" in rels and "c/abs_link/f1.wav" in rels  # "c/d e" is the same folder, listed once
    assert len(rels) == len(set(rels)) and len(rels) < 100  # the `up` link back to `a` is not walked again
    clips, _ = list_folder(tmp_path, labeled=True)
    assert {c.label for c in clips} <= {"a", "c", "top"}


@settings(max_examples=3000, deadline=None)
@given(st.sampled_from(["/data/corpus", "/", ".", "rel/dir", "/data/a b"]),
       st.text(st.sampled_from("ab./ \\é"), max_size=14))
def test_csv_paths_join_as_pathlib_joins_them(base, rel):
    assert joined(Path(base), rel) == (str(Path(base) / rel), Path(rel).as_posix())


def test_a_repeated_csv_column_takes_the_first(tmp_path):
    from shared.sources import list_csv

    (tmp_path / "a.wav").write_bytes(b"RIFF")
    (tmp_path / "list.csv").write_text("path,Label,label\na.wav,dog,cat\n")
    clips, rejections = list_csv(tmp_path / "list.csv", labeled=True)
    assert [c.label for c in clips] == ["dog"] and rejections == []


def test_hidden_audio_files_are_hidden_rejections(tmp_path):
    from shared.sources import list_source

    for rel in ("dog/a.wav", "dog/.take1.wav", "dog/._a.wav", "dog/.backup/b.flac", "dog/.backup/deeper/c.wav",
                ".Trash/d.wav", "dog/notes.txt", "dog/.DS_Store", "dog/.backup/e.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "dog" / ".alias").symlink_to(tmp_path / "dog")  # a hidden loop back to a listed folder

    clips, rejections = list_source(tmp_path, labeled=True)
    assert [c.rel for c in clips] == ["dog/a.wav"]
    assert sorted((r.path, r.stage, r.reason) for r in rejections) == [
        (".Trash/d.wav", "list", "hidden"), ("dog/._a.wav", "list", "hidden"),
        ("dog/.backup/b.flac", "list", "hidden"), ("dog/.backup/deeper/c.wav", "list", "hidden"),
        ("dog/.take1.wav", "list", "hidden")]
    clips, rejections = list_source(tmp_path / "dog", labeled=False)  # a test folder
    assert [c.rel for c in clips] == ["a.wav"] and len(rejections) == 4


def test_a_folder_of_only_hidden_files_is_not_a_usage_error(tmp_path):
    from shared.sources import list_source

    (tmp_path / "dog").mkdir()
    (tmp_path / "dog" / "._a.wav").write_bytes(b"x")
    clips, rejections = list_source(tmp_path, labeled=True)
    assert clips == [] and [r.reason for r in rejections] == ["hidden"]
