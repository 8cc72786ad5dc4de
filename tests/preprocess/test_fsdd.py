"""The preprocessor on real recordings: the Free Spoken Digit Dataset beside the checkout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import webdataset as wds

from tests.audio_fixtures import FSDD, run_module

pytestmark = pytest.mark.skipif(not FSDD.is_dir(), reason=f"{FSDD} is absent")


def test_fsdd_official_split_preprocesses_every_recording(tmp_path):
    files = sorted(FSDD.glob("*.wav"))
    speakers = ("george", "jackson", "lucas")  # half the corpus keeps CI quick
    rows = ["path,label,group,split"]
    for path in files:
        digit, speaker, take = path.stem.split("_")
        if speaker in speakers:
            split = "test" if int(take) < 5 else ""
            rows.append(f"{path},{digit},{speaker},{split}")
    csv = tmp_path / "fsdd.csv"
    csv.write_text("\n".join(rows) + "\n")
    config = tmp_path / "fsdd.toml"
    config.write_text("[audio]\nsr = 8000\nduration_s = 1.0\nn_fft = 256\nhop_length = 64\nn_mels = 64\n"
                      "top_db = 30.0\n")
    out = tmp_path / "out"
    result = run_module("preprocess", str(csv), "--out", str(out), "--config", str(config),
                        "--augment-copies", "0", "--jobs", "2", timeout=600)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    n = len(rows) - 1
    counts = {k: manifest["inputs"][k] for k in ("total", "written", "rejected")}
    assert counts == {"total": n, "written": n, "rejected": 0}
    assert manifest["labels"] == [str(d) for d in range(10)]
    splits = manifest["splits"]
    assert splits["test"]["samples"] == 10 * 5 * len(speakers)
    assert splits["train"]["samples"] + splits["val"]["samples"] == 10 * 45 * len(speakers)
    # whole speakers go to val: no speaker on both sides
    groups = {}
    for split in ("train", "val"):
        for shard in splits[split]["shards"]:
            for sample in wds.WebDataset(str(out / shard["name"]), shardshuffle=False):
                groups.setdefault(split, set()).add(json.loads(sample["json"])["group"])
    assert groups["val"] and not groups["train"] & groups["val"]
    std = np.asarray(manifest["stats"]["mel_std"])
    assert std.shape == (64,) and (std > 0).all()
