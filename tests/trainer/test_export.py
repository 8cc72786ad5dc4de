"""melshard export: onnxruntime on the exported file against predict on the same audio, for both
models, centre_bands, both dB references, trimming on and off and a training crop; the network-only
graph; metadata; the command line and its refusals; the onnxruntime-only example."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import soxr

import melshard
from melshard.cli import main as melshard_main
from shared.errors import UsageError
from tests.audio_fixtures import FSDD, REPO, make_corpus, tone

ort = pytest.importorskip("onnxruntime", reason="pip install -e '.[export]' for the export tests")
pytest.importorskip("onnx", reason="pip install -e '.[export]' for the export tests")

# name -> (train config, audio overrides of its shards: None uses the session's tiny shards)
RUNS = {
    "cnn": ({"model": "cnn"}, None),
    "resnet9-centred": ({"model": "resnet9", "centre_bands": True}, None),
    "cnn-clipmax": ({"model": "cnn", "centre_bands": True, "train_frames": 96},
                    {"db_reference": "clip_max", "top_db": 0.0, "db_range": 60.0}),
}
TINY = {"sr": 8000, "duration_s": 1.0, "n_fft": 256, "hop_length": 64, "n_mels": 32}


@pytest.fixture(scope="module")
def runs(tiny_shards, tmp_path_factory):
    """Each RUNS entry trained for three short epochs (a few seconds each), and exported."""
    root = tmp_path_factory.mktemp("export")
    made = {}
    for name, (train, audio) in RUNS.items():
        shards = tiny_shards
        if audio is not None:
            corpus = make_corpus(root / f"{name}-corpus", per_class=6, labels=("low", "mid", "high", "chirp"))
            shards = melshard.preprocess(corpus, root / f"{name}-shards", jobs=1, augment_copies=0, progress=False,
                                         **TINY, **audio).out
        result = melshard.train(shards, root / name, epochs=3, batch_size=8, lr=5e-3, width=0.25, num_workers=1,
                                device="cpu", mixup_p=0.0, **train)
        made[name] = {"run": result.run, "onnx": melshard.export(result, root / f"{name}.onnx")}
    return made


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Generated recordings over the range: quiet, clipped full scale, very short, longer than the
    clip, long silences around a word, stereo, noise; at 8, 16, 22.05, 44.1 and 48 kHz. Plus one
    silent file, which predict rejects."""
    folder = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(31)
    quiet = tone("mid", rng, 16000) * 0.004  # a peak near -55 dBFS: above the -80 dBFS silence floor
    loud = np.clip(tone("high", rng, 44100) * 6.0, -1.0, 1.0)
    short = tone("chirp", rng, 22050, seconds=0.05)
    long = tone("low", rng, 8000, seconds=3.5)
    padded = np.concatenate([np.zeros(int(0.9 * 48000)), tone("chirp", rng, 48000), np.zeros(48000)])
    left = tone("low", rng, 16000, seconds=0.8)
    stereo = np.stack([left, 0.5 * left[::-1]], axis=1)
    sf.write(folder / "quiet_16k.wav", quiet, 16000, subtype="FLOAT")
    sf.write(folder / "loud_44k.wav", loud, 44100, subtype="PCM_16")
    sf.write(folder / "short_22k.wav", short, 22050, subtype="FLOAT")
    sf.write(folder / "long_8k.wav", long, 8000, subtype="PCM_16")
    sf.write(folder / "padded_48k.wav", padded, 48000, subtype="FLOAT")
    sf.write(folder / "stereo_16k.wav", stereo, 16000, subtype="PCM_16")
    sf.write(folder / "noise_16k.wav", rng.uniform(-0.3, 0.3, 12000), 16000, subtype="FLOAT")
    sf.write(folder / "silent_8k.wav", np.zeros(4000), 8000, subtype="PCM_16")
    return folder


def waveform(path, meta: dict) -> np.ndarray:
    """README's input recipe: soundfile, mono by the mean, the decode limit, soxr HQ."""
    y, rate = sf.read(str(path), dtype="float32", always_2d=True)
    y = y.mean(axis=1, dtype=np.float32)[: int(rate * meta["decode_limit_s"])]
    return soxr.resample(y, rate, meta["sample_rate"], quality="HQ").astype(np.float32, copy=False)


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def assert_agrees(run, onnx_file, folder):
    """onnxruntime's probabilities for each file equal predict's within 1e-4, same top-1; the
    files predict rejects as silent are the ones the graph flags."""
    expected = melshard.predict(run, folder, jobs=1, allow_missing=True)
    labels = json.loads(session(onnx_file).get_modelmeta().custom_metadata_map["labels"])
    graph = session(onnx_file)
    meta = json.loads(graph.get_modelmeta().custom_metadata_map["melshard"])
    rejected = set(expected.attrs["errors"]["path"]) if len(expected.attrs["errors"]) else set()
    for path in sorted(folder.rglob("*.wav")):
        name = path.relative_to(folder).as_posix()
        probs, silent = graph.run(None, {"waveform": waveform(path, meta)[None]})
        assert bool(silent[0]) == (name in rejected), name
        if name in rejected:
            continue
        row = expected.set_index("filename").loc[name]
        np.testing.assert_allclose(probs[0], row[labels].to_numpy(float), atol=1e-4, err_msg=name)
        assert labels[int(np.argmax(probs[0]))] == row["label"], name
    return expected


@pytest.mark.parametrize("name", list(RUNS))
def test_the_onnx_file_agrees_with_predict_on_every_clip(runs, clips, name):
    expected = assert_agrees(runs[name]["run"], runs[name]["onnx"], clips)
    assert len(expected) == 7 and set(expected.attrs["errors"]["reason"]) == {"silent"}


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")  # the legacy exporter's notes
@pytest.mark.parametrize("name", ["cnn", "cnn-clipmax"])
def test_the_graph_front_end_makes_the_shards_float16_log_mel(runs, clips, tmp_path, name):
    """The front-end alone, exported as export() exports it, against melshard.features: the same
    float16 value in all but a few cells, and those one float16 step (or 1e-4 dB) apart: a float32
    sum that lands the other side of a rounding boundary."""
    import torch

    from trainer.export import OPSET, Frontend

    audio = melshard.load_model(runs[name]["run"], "cpu").audio
    torch.onnx.export(Frontend(audio).eval(), (torch.zeros(1, 800) + 0.01,), tmp_path / "front.onnx", dynamo=False,
                      opset_version=OPSET, input_names=["waveform"], output_names=["mel"],
                      dynamic_axes={"waveform": {0: "batch", 1: "samples"}})
    graph = session(tmp_path / "front.onnx")
    meta = {"sample_rate": audio.sr, "decode_limit_s": 60.0}
    same = total = 0
    for path in sorted(clips.glob("*.wav")):
        if "silent" in path.name:
            continue
        mel = graph.run(None, {"waveform": waveform(path, meta)[None]})[0][0]
        expected = melshard.features(path, audio).astype(np.float32)
        step = np.abs(np.spacing(expected.astype(np.float16))).astype(np.float32)
        off = np.abs(mel - expected) - np.maximum(step, 1e-4)
        assert (off <= 0).all(), path.name
        # Near 0 dB (the clip's maximum with clip_max) float16 steps are finer than float32's
        # rounding of a log: those cells are only held to the 1e-4 dB above.
        away = np.abs(expected) >= 1.0
        same, total = same + int((mel == expected)[away].sum()), total + int(away.sum())
    assert same >= 0.999 * total


def test_clips_batched_with_zero_padding_get_what_they_get_alone(runs, clips):
    graph = session(runs["resnet9-centred"]["onnx"])
    meta = json.loads(graph.get_modelmeta().custom_metadata_map["melshard"])
    waves = [waveform(p, meta) for p in sorted(clips.glob("*.wav")) if "silent" not in p.name]
    batch = np.zeros((len(waves), max(w.size for w in waves)), np.float32)
    for row, w in zip(batch, waves):
        row[: w.size] = w
    together = graph.run(None, {"waveform": batch})[0]
    alone = np.concatenate([graph.run(None, {"waveform": w[None]})[0] for w in waves])
    np.testing.assert_allclose(together, alone, atol=1e-6)


@pytest.mark.skipif(not FSDD.is_dir(), reason="the FSDD corpus is not beside the checkout")
def test_fsdd_recordings_agree_with_predict(runs, tmp_path):
    for path in sorted(FSDD.glob("*.wav"))[::375]:  # 8 of them: a spread of digits and speakers
        shutil.copy(path, tmp_path / path.name)
    for name in ("cnn", "resnet9-centred"):
        assert len(assert_agrees(runs[name]["run"], runs[name]["onnx"], tmp_path)) >= 1


def test_the_network_alone_takes_the_normalised_log_mel(runs, clips, tmp_path):
    run = runs["cnn-clipmax"]["run"]
    out = melshard.export(run, tmp_path / "net.onnx", network_only=True)
    predictor = melshard.load_model(run, "cpu")
    mels = np.stack([melshard.features(p, predictor.audio) for p in sorted(clips.glob("*.wav"))
                     if "silent" not in p.name])
    import torch

    inputs = predictor.inputs(torch.from_numpy(mels)).numpy()
    graph = session(out)
    meta = json.loads(graph.get_modelmeta().custom_metadata_map["melshard"])
    assert meta["input"] == "log_mel" and meta["shape"] == ["batch", 1, 32, 96] == ["batch", *inputs.shape[1:]]
    probs = graph.run(None, {"log_mel": inputs})[0]
    np.testing.assert_allclose(probs, predictor.probabilities(mels).numpy(), atol=1e-5)


def test_metadata_holds_the_labels_and_audio_config(runs):
    props = session(runs["cnn-clipmax"]["onnx"]).get_modelmeta().custom_metadata_map
    predictor = melshard.load_model(runs["cnn-clipmax"]["run"], "cpu")
    assert json.loads(props["labels"]) == predictor.labels
    assert melshard.AudioConfig(**{k: v for k, v in json.loads(props["audio"]).items()}) == predictor.audio
    contract = json.loads(props["melshard"])
    assert contract["input"] == "waveform" and contract["sample_rate"] == 8000
    assert contract["outputs"] == ["probabilities", "silent"]


def test_the_command_writes_the_file_and_refuses_in_one_line(runs, tmp_path, capsys):
    run = runs["cnn"]["run"]
    assert melshard_main(["export", str(run), "--out", str(tmp_path / "m.onnx")]) == 0
    assert "waveform [batch, samples] at 8000 Hz" in capsys.readouterr().out
    assert (tmp_path / "m.onnx").stat().st_size > 0
    assert melshard_main(["export", str(tmp_path / "none"), "--out", str(tmp_path / "x.onnx")]) == 2
    assert melshard_main(["export", str(run), "--out", str(tmp_path / "no" / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "does not exist" in err and not (tmp_path / "x.onnx").exists()
    with pytest.raises(SystemExit) as shown:
        melshard_main(["export", "--help"])
    assert shown.value.code == 0 and "--network-only" in capsys.readouterr().out


def test_a_segmented_run_is_refused_naming_the_setting(runs, tmp_path):
    from trainer import checkpoint

    ckpt = checkpoint.load(runs["cnn"]["run"] / "best.pt")
    ckpt["audio"] = {**ckpt["audio"], "segment": True}
    checkpoint.save(tmp_path / "best.pt", {k: v for k, v in ckpt.items() if k != "format"})
    with pytest.raises(UsageError, match="audio.segment = true"):
        melshard.export(tmp_path / "best.pt", tmp_path / "m.onnx")
    assert melshard.export(tmp_path / "best.pt", tmp_path / "n.onnx", network_only=True).exists()


def test_the_example_labels_a_folder_without_torch(runs, clips, tmp_path):
    out = tmp_path / "labels.csv"
    script = REPO / "examples" / "onnx_label_folder.py"
    code = ("import runpy, sys\n"
            f"sys.argv = ['x', {str(runs['cnn']['onnx'])!r}, {str(clips)!r}, '--out', {str(out)!r}, '--batch', '3']\n"
            f"try:\n    runpy.run_path({str(script)!r}, run_name='__main__')\nexcept SystemExit as e:\n"
            "    assert not e.code, e.code\n"
            "assert 'torch' not in sys.modules, 'the example imported torch'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "skipped silent_8k.wav" in done.stderr
    table = pd.read_csv(out)
    expected = melshard.predict(runs["cnn"]["run"], clips, jobs=1, allow_missing=True)
    assert table["filename"].tolist() == expected["filename"].tolist()
    assert table["label"].tolist() == expected["label"].tolist()
