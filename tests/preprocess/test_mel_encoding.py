"""`--mel-encoding uint8`: shards byte-identical across job counts and reruns, the option recorded
in the manifest (and an older manifest read as float16), stats of the decoded values, and the
same samples as float16 within the documented bound."""

from __future__ import annotations

import json

import numpy as np
import pytest

from melshard.cli import command_parser
from preprocess.pipeline import RunOptions, run
from shared.config import AugmentConfig, PreprocessConfig
from shared.errors import ConfigError, UsageError
from shared.manifest import MANIFEST, Manifest
from shared.melcodec import error_bound
from shared.shardio import decode_mel, iter_samples
from tests.audio_fixtures import make_corpus, run_module, write_tiny_config
from tests.conftest import TINY_AUDIO


def _published(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}


def _cfg(encoding: str) -> PreprocessConfig:
    return PreprocessConfig(audio=TINY_AUDIO, augment=AugmentConfig(copies=1), shard_size=6, mel_encoding=encoding)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("enc") / "corpus", per_class=6, labels=("low", "mid", "high"))


@pytest.fixture(scope="module")
def both(corpus, tmp_path_factory):
    """The same corpus as float16 and as uint8 shards (jobs 1)."""
    root = tmp_path_factory.mktemp("both")
    for encoding in ("float16", "uint8"):
        run(RunOptions(corpus, root / encoding, jobs=1), _cfg(encoding))
    return root


def test_uint8_output_is_byte_identical_across_jobs_and_reruns(corpus, both, tmp_path):
    # The command line, with the worker pool (conftest's MELSHARD_POOL_SAMPLES=1 is inherited): in
    # a subprocess, so that no loky executor another test left in this process is reused.
    config = write_tiny_config(tmp_path / "tiny.toml", head="shard_size = 6")
    command = ("preprocess", str(corpus), "--out", str(tmp_path / "two"), "--config", str(config),
               "--mel-encoding", "uint8", "--jobs", "2")
    result = run_module(*command)
    assert result.returncode == 0, result.stderr
    first = _published(both / "uint8")
    assert _published(tmp_path / "two") == first and any(name.endswith(".tar") for name in first)
    result = run_module(*command)  # a rerun keeps every shard as it is
    assert result.returncode == 0 and "nothing" in result.stdout + result.stderr, result.stderr
    assert _published(tmp_path / "two") == first


def test_the_members_and_the_bound_against_float16(both):
    exact = {s["__key__"]: s for p in sorted((both / "float16").glob("*.tar")) for s in iter_samples(p)}
    lossy = {s["__key__"]: s for p in sorted((both / "uint8").glob("*.tar")) for s in iter_samples(p)}
    assert exact.keys() == lossy.keys()
    for key, sample in lossy.items():
        assert "mel.u8.npy" in sample and "mel.npy" not in sample
        meta, plain = json.loads(sample["json"]), json.loads(exact[key]["json"])
        assert {k: v for k, v in meta.items() if k not in ("mel_offset", "mel_scale")} == plain
        mel = decode_mel(exact[key])
        decoded = decode_mel(sample)
        assert decoded.dtype == np.float32 and decoded.shape == mel.shape
        assert np.abs(decoded - mel.astype(np.float32)).max() <= error_bound(mel)
        assert error_bound(mel) <= TINY_AUDIO.db_range / 510 + 1e-3
        assert meta["mel_offset"] == float(mel.min())
    sizes = {e: sum(p.stat().st_size for p in (both / e).glob("*.tar")) for e in ("float16", "uint8")}
    assert sizes["uint8"] < 0.75 * sizes["float16"]  # 32 x 126 mels: the tar headers weigh; 5 s ones halve


def test_the_manifest_records_it_and_its_stats_are_of_the_decoded_mels(both):
    data = json.loads((both / "uint8" / MANIFEST).read_text())
    assert data["preprocess"]["mel_encoding"] == "uint8"
    manifest = Manifest.read(both / "uint8")
    assert manifest.config.mel_encoding == "uint8"
    assert manifest.to_json() == (both / "uint8" / MANIFEST).read_bytes()  # round trip, byte for byte
    mels = np.stack([decode_mel(s).astype(np.float64) for shard in manifest.shards("train")
                     for s in iter_samples(both / "uint8" / shard.name)])
    assert np.allclose(manifest.stats.mel_mean, mels.mean(axis=(0, 2)), atol=1e-6)
    # The default writes no key: a float16 manifest is what it was before the option, and an
    # older manifest (no key) reads as float16 and round-trips byte for byte.
    plain = (both / "float16" / MANIFEST).read_bytes()
    assert "mel_encoding" not in json.loads(plain)["preprocess"]
    assert Manifest.from_json(plain).config.mel_encoding == "float16"
    assert Manifest.from_json(plain).to_json() == plain


def test_another_encoding_on_the_same_out_is_refused_without_overwrite(corpus, both, tmp_path):
    import shutil

    shutil.copytree(both / "float16", tmp_path / "out")
    with pytest.raises(UsageError, match="mel_encoding"):
        run(RunOptions(corpus, tmp_path / "out", jobs=1), _cfg("uint8"))
    run(RunOptions(corpus, tmp_path / "out", jobs=1, overwrite=True), _cfg("uint8"))
    assert _published(tmp_path / "out") == _published(both / "uint8")


def test_the_flag_and_the_config_check():
    args = command_parser("preprocess").parse_args(["SRC", "--mel-encoding", "uint8"])
    assert args.mel_encoding == "uint8"
    with pytest.raises(SystemExit):
        command_parser("preprocess").parse_args(["SRC", "--mel-encoding", "int4"])
    with pytest.raises(ConfigError, match="mel_encoding must be one of float16, uint8"):
        PreprocessConfig(mel_encoding="int4")
    assert PreprocessConfig().mel_encoding == "float16"
