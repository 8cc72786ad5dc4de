"""The uint8 mel encoding: decoding returns every value within its documented bound, over generated
arrays of the whole float16 range and over log-mels as `shared.audio` makes them."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from shared.audio import clip_to_mel
from shared.config import AudioConfig
from shared.melcodec import decode_u8, encode_u8, error_bound
from shared.shardio import ShardError, decode_mel, iter_samples, iter_stream, required_members, stack_mels

FLOAT16_MAX = float(np.finfo(np.float16).max)
FLOOR_DB = -100.0  # 10 log10(1e-10): what the log-mel gives silence


def _documented(mel: np.ndarray) -> float:
    """README's bound, written out on its own: (max - min) / 510 plus float32 rounding."""
    values = mel.astype(np.float64)
    low, high = values.min(), values.max()
    return (high - low) / 510 * (1 + 1e-6) + 1e-6 * max(1.0, abs(low), abs(high))


def _check(mel: np.ndarray) -> None:
    codes, offset, scale = encode_u8(mel)
    assert codes.dtype == np.uint8 and codes.shape == mel.shape
    decoded = decode_u8(codes, offset, scale)
    assert decoded.dtype == np.float32 and decoded.shape == mel.shape
    error = np.abs(decoded.astype(np.float64) - mel.astype(np.float64)).max()
    assert error <= error_bound(mel) <= _documented(mel), (error, error_bound(mel))
    # The offset and scale are float32 values that JSON carries exactly.
    assert np.float32(offset) == offset and np.float32(scale) == scale
    assert json.loads(json.dumps({"o": offset, "s": scale})) == {"o": offset, "s": scale}
    if mel.max() > mel.min():  # the codes span the clip's range
        assert codes.min() == 0 and codes.max() == 255
    else:
        assert scale == 0 and np.array_equal(decoded, mel.astype(np.float32))  # constant: exact
    again = encode_u8(mel.copy())
    assert again[1:] == (offset, scale) and np.array_equal(again[0], codes)  # deterministic


SHAPES = hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=40)
FINITE16 = st.floats(-FLOAT16_MAX, FLOAT16_MAX, allow_nan=False, allow_infinity=False, width=16)


@given(hnp.arrays(np.float16, SHAPES, elements=FINITE16))
@settings(max_examples=300, deadline=None)
def test_any_finite_float16_array_decodes_within_the_bound(mel):
    _check(mel)


@st.composite
def log_mels(draw, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Arrays shaped like log-mels: a peak, a floor (the -100 dB of silence, or the db_range clamp),
    many values pinned at it, constant arrays and single frames included."""
    shape = shape or draw(st.tuples(st.integers(1, 64), st.sampled_from([1, 2, 3, 17, 126, 216])))
    peak = draw(st.floats(-100, 120))
    span = draw(st.sampled_from([0.0, 1e-3, 0.1, 20.0, 80.0, 200.0]) | st.floats(0, 300))
    floor = max(FLOOR_DB, peak - span) if draw(st.booleans()) else peak - span
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    mel = rng.uniform(floor, peak, shape)
    pinned = rng.random(shape) < draw(st.sampled_from([0.0, 0.5, 0.95, 1.0]))
    mel[pinned] = floor
    return mel.astype(np.float16)


@given(log_mels())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_log_mel_shaped_arrays_decode_within_the_bound(mel):
    _check(mel)


@pytest.mark.parametrize("mel", [
    np.full((128, 216), FLOOR_DB, np.float16),  # a silent clip: the floor everywhere
    np.zeros((1, 1), np.float16),  # one value
    np.array([[-FLOAT16_MAX, FLOAT16_MAX]], np.float16),  # the widest range float16 holds
    np.array([[FLOOR_DB, FLOOR_DB + 0.0625]], np.float16),  # one float16 step
    np.linspace(-80, 0, 256, dtype=np.float16)[None],  # every code once
    np.array([[np.float16(6e-8), 0]], np.float16),  # subnormal
])
def test_edge_arrays(mel):
    _check(mel)


@pytest.mark.parametrize("reference,db_range", [("full_scale", 80.0), ("full_scale", 0.0), ("clip_max", 80.0)])
def test_real_log_mels_decode_within_the_bound(reference, db_range):
    cfg = AudioConfig(sr=8000, duration_s=1.0, n_fft=256, hop_length=64, n_mels=32, db_reference=reference,
                      db_range=db_range)
    rng = np.random.default_rng(0)
    t = np.arange(4000) / 8000
    clips = [np.zeros(4000, np.float32), 0.5 * np.sin(2 * np.pi * 440 * t).astype(np.float32),
             (0.01 * rng.standard_normal(8000)).astype(np.float32), np.ones(10, np.float32)]
    for y in clips:
        mel = clip_to_mel(y, cfg)
        _check(mel)
        if db_range:
            assert error_bound(mel) <= db_range / 510 + 1e-3  # 0.157 dB at the default 80 dB


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_a_non_finite_mel_is_refused(bad):
    mel = np.zeros((2, 3), np.float16)
    mel[1, 2] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        encode_u8(mel)


# --- the member layout, as a reader meets it ---


def _u8_sample(mel: np.ndarray, key: str = "k", **meta) -> dict[str, bytes]:
    codes, offset, scale = encode_u8(mel)
    buffer = io.BytesIO()
    np.save(buffer, codes, allow_pickle=False)
    return {"__key__": key, "mel.u8.npy": buffer.getvalue(), "cls": b"0",
            "json": json.dumps({"path": "a.wav", "mel_offset": offset, "mel_scale": scale, **meta}).encode()}


def _tar(samples: list[dict[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for sample in samples:
            for ext in sorted(k for k in sample if not k.startswith("_")):
                info = tarfile.TarInfo(f"{sample['__key__']}.{ext}")
                info.size = len(sample[ext])
                tar.addfile(info, io.BytesIO(sample[ext]))
    return buffer.getvalue()


def test_decode_mel_reads_both_encodings():
    mel = np.linspace(-90, 10, 64 * 20, dtype=np.float16).reshape(64, 20)
    data = _tar([_u8_sample(mel, "a")])
    [sample] = iter_stream(io.BytesIO(data), "train-000000.tar", required=required_members("train-000000.tar"))
    decoded = decode_mel(sample)
    assert decoded.dtype == np.float32 and np.abs(decoded - mel.astype(np.float32)).max() <= error_bound(mel)
    buffer = io.BytesIO()
    np.save(buffer, mel, allow_pickle=False)
    plain = decode_mel({"__key__": "b", "__url__": "x", "mel.npy": buffer.getvalue()})
    assert plain.dtype == np.float16 and np.array_equal(plain, mel)


def test_a_u8_mel_without_its_json_or_scale_is_refused():
    sample = _u8_sample(np.zeros((2, 2), np.float16))
    del sample["json"]
    with pytest.raises(ShardError, match="has no json member"):
        list(iter_stream(io.BytesIO(_tar([sample])), "train-000000.tar", required=required_members("train-000000.tar")))
    for meta in ({"mel_offset": 1.0}, {"mel_offset": "x", "mel_scale": 1.0}, {"mel_offset": 0.1, "mel_scale": 1.0},
                 {"mel_offset": 1.0, "mel_scale": -1.0}):
        sample = _u8_sample(np.zeros((2, 2), np.float16))
        sample["json"] = json.dumps(meta).encode()
        with pytest.raises(ShardError, match="mel_offset and mel_scale"):
            decode_mel({**sample, "__url__": "t.tar"})
    sample = _u8_sample(np.zeros((2, 2), np.float16))
    sample["mel.u8.npy"] = sample["mel.u8.npy"].replace(b"|u1", b"<f2")[:-2]  # float codes: not uint8
    with pytest.raises(ShardError, match="only uint8"):
        decode_mel({**sample, "__url__": "t.tar"})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(log_mels())
def test_a_plain_webdataset_reader_decodes_it_as_the_readme_says(tmp_path, mel):
    """README: mel = json["mel_offset"] + json["mel_scale"] * mel.u8.npy, with webdataset's own decoders."""
    webdataset = pytest.importorskip("webdataset")
    path = tmp_path / "train-000000.tar"
    path.write_bytes(_tar([_u8_sample(mel, "clip")]))
    [theirs] = list(webdataset.WebDataset(str(path), shardshuffle=False).decode())
    meta = theirs["json"]
    mel_wds = meta["mel_offset"] + meta["mel_scale"] * theirs["mel.u8.npy"].astype(np.float32)
    ours = decode_mel(next(iter_samples(path)))
    assert np.array_equal(mel_wds.astype(np.float32), ours)


@given(st.lists(log_mels((8, 17)) | st.just(np.full((8, 17), FLOOR_DB, np.float16)), min_size=1, max_size=5))
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_loader_s_batch_decode_is_decode_mel_s_numbers(mels):
    samples = [{**_u8_sample(mel, f"k{i}"), "__url__": "t.tar"} for i, mel in enumerate(mels)]
    batch = stack_mels(samples)
    assert batch.dtype == np.float32
    assert np.array_equal(batch, np.stack([decode_mel(s) for s in samples]))
