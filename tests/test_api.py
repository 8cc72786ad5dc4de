"""The Python API (`import melshard`) end to end in-process, and examples/notebook.py as a script."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

import melshard
from tests.audio_fixtures import make_corpus, tone

ROOT = Path(__file__).resolve().parents[1]
TINY = {"sr": 8000, "duration_s": 1.0, "n_mels": 32, "n_fft": 256, "hop_length": 64}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """4 learnable classes x 10 clips with one augmented copy, and an unlabeled test folder."""
    root = tmp_path_factory.mktemp("api")
    corpus = make_corpus(root / "corpus", per_class=10, labels=("low", "mid", "high", "chirp"))
    test = root / "test"
    test.mkdir()
    rng = np.random.default_rng(3)
    for i, label in enumerate(["low", "mid", "high", "chirp"]):
        sf.write(test / f"t{i}.wav", tone(label, rng, 16000), 16000)
    result = melshard.preprocess(corpus, root / "shards", test=test, jobs=1, progress=False, shard_size=8,
                                 augment_copies=1, val_fraction=0.2, **TINY)
    return {"root": root, "corpus": corpus, "test": test, "result": result}


def test_preprocess_result_and_shards(made):
    result = made["result"]
    assert {k: result.manifest.to_dict()["inputs"][k] for k in ("total", "written", "rejected")} == \
        {"total": 44, "written": 44, "rejected": 0}
    assert list(result.errors.columns) == ["path", "stage", "reason", "detail"] and result.errors.empty
    shards = result.shards
    assert shards.labels == ["chirp", "high", "low", "mid"]
    assert shards.audio == melshard.AudioConfig(**TINY)
    assert shards.counts["test"] == 4 and shards.counts["train"] + shards.counts["val"] == 40 + 32
    assert shards.stats["mel_mean"].shape == (32,)
    # A rerun verifies and keeps every finished shard.
    again = melshard.preprocess(made["corpus"], made["root"] / "shards", test=made["test"], jobs=1, progress=False,
                                shard_size=8, augment_copies=1, val_fraction=0.2, **TINY)
    assert again.skipped_shards == sum(len(s["shards"]) for s in result.manifest.to_dict()["splits"].values())


def test_loader_batches(made):
    shards = melshard.Shards(made["root"] / "shards")
    loader = shards.loader("train", batch_size=8, seed=1)
    batches = list(loader)
    assert len(batches) == len(loader) == -(-shards.counts["train"] // 8)
    mel, label = batches[0]
    assert mel.dtype == torch.float32 and mel.shape == (8, 1, 32, 126) and label.dtype == torch.int64
    assert abs(float(torch.cat([m for m, _ in batches]).mean())) < 0.5  # standardised with the train stats
    assert sum(len(y) for _, y in batches) == shards.counts["train"]
    # Iterating again goes on with the next epoch (another order); set_epoch goes back to one.
    second = [y for _, y in loader]
    assert not all(torch.equal(a, b) for a, b in zip(second, [y for _, y in batches]))
    loader.set_epoch(0)
    assert all(torch.equal(a, b) for a, b in zip([y for _, y in loader], [y for _, y in batches]))
    raw, labels = next(iter(shards.loader("test", 4, shuffle=False, normalise=False)))
    assert raw.dtype == torch.float16 and raw.shape == (4, 32, 126) and labels.tolist() == [-1] * 4


def _train(loader, epochs: int, stop_at: tuple[int, int] | None = None, state=None):
    """A custom loop; returns the model, and the state saved at (epoch, step) when asked to stop."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    seen: list[torch.Tensor] = []
    start = 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        loader.load_state_dict(state["loader"])
        start = state["loader"]["epoch"]
    for epoch in range(start, epochs):
        loader.set_epoch(epoch)
        for step, (mel, label) in enumerate(loader):
            loss = nn.functional.cross_entropy(model(mel), label)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen.append(label)
            if (epoch, step) == stop_at:
                saved = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "loader": loader.state_dict()}
                return model, seen, copy.deepcopy(saved)
    return model, seen, None


@pytest.mark.parametrize("workers", [0, 2])
def test_custom_loop_resumes_mid_epoch_exactly(made, workers):
    shards = melshard.Shards(made["root"] / "shards")
    make = lambda: shards.loader("train", batch_size=8, num_workers=workers, seed=5)
    whole, seen, _ = _train(make(), epochs=2)
    _, before, state = _train(make(), epochs=2, stop_at=(1, 2))
    resumed, after, _ = _train(make(), epochs=2, state=state)
    assert [y.tolist() for y in before + after] == [y.tolist() for y in seen]
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


def test_resume_on_other_workers_sees_the_rest_once(made):
    shards = melshard.Shards(made["root"] / "shards")
    loader = shards.loader("train", batch_size=4, seed=2, normalise=False)
    first = []
    for step, (mel, _) in enumerate(loader):
        first.append(mel)
        if step == 3:
            state = loader.state_dict()
            break
    other = shards.loader("train", batch_size=4, num_workers=2, seed=2, normalise=False)
    other.load_state_dict(state)
    rest = torch.cat([m for m, _ in other])
    every = torch.cat([m for m, _ in shards.loader("train", batch_size=4, seed=2, normalise=False)])
    rows = lambda t: sorted(map(bytes, t.reshape(len(t), -1).numpy().view(np.uint8)))
    assert rows(torch.cat(first + [rest])) == rows(every)


@pytest.fixture(scope="module")
def run(made):
    return melshard.train(made["root"] / "shards", made["root"] / "run", model="cnn", width=0.25, epochs=2,
                          batch_size=8, num_workers=1, device="cpu", mixup_p=0.0)


def test_train_and_predict(made, run):
    assert run.status == 0 and run.best.exists()
    assert list(run.metrics["epoch"]) == [1, 2] and "val_acc" in run.metrics
    frame = melshard.predict(run, made["test"], jobs=1)
    assert list(frame["filename"]) == [f"t{i}.wav" for i in range(4)]
    assert list(frame.columns) == ["filename", "label", "chirp", "high", "low", "mid"]
    assert np.allclose(frame[["chirp", "high", "low", "mid"]].sum(axis=1), 1.0, atol=1e-4)
    from_shards = melshard.predict(run.run, made["root"] / "shards", split="test", probabilities=False)
    assert list(from_shards.columns) == ["filename", "label"] and len(from_shards) == 4
    model = melshard.load_model(run, "cpu")
    assert not model.model.training and model.labels == ["chirp", "high", "low", "mid"]
    files = sorted(made["test"].glob("*.wav"))
    listed = melshard.predict(model, files)
    assert len(listed) == 4 and list(listed["label"]) == list(frame["label"])
    mels = torch.from_numpy(np.stack([melshard.features(f, model.audio) for f in files]))
    assert np.allclose(model.probabilities(mels).numpy(), frame[model.labels].to_numpy(), atol=1e-5)


def test_predict_missing_inputs(made, run, tmp_path):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF....not audio")
    files = [made["test"] / "t0.wav", broken]
    with pytest.raises(melshard.DataError, match=r"1 input\(s\) could not be predicted, e.g. .*broken.wav"):
        melshard.predict(run, files)
    frame = melshard.predict(run, files, allow_missing=True)
    assert len(frame) == 1 and list(frame.attrs["errors"]["path"]) == [str(broken)]


def test_features_of_a_file_and_of_its_samples(made, tmp_path):
    cfg = melshard.AudioConfig(**TINY)
    path = next(iter(sorted(made["test"].glob("*.wav"))))
    y, sr = sf.read(path, dtype="float32")
    from_file = melshard.features(path, cfg)
    assert from_file.dtype == np.float16 and from_file.shape == (32, 126)
    assert np.array_equal(melshard.features(y, cfg, sr=sr), from_file)
    with pytest.raises(melshard.AudioError, match="silent"):
        melshard.features(np.zeros(8000, dtype=np.float32), cfg, sr=8000)
    with pytest.raises(melshard.UsageError, match="sample rate"):
        melshard.features(y, cfg)


def test_bad_input_raises_with_one_line(made, tmp_path):
    with pytest.raises(melshard.UsageError, match="does not exist"):
        melshard.preprocess(tmp_path / "nowhere", tmp_path / "out", progress=False)
    with pytest.raises(melshard.UsageError, match="unknown"):
        melshard.preprocess(made["corpus"], tmp_path / "out", progress=False, n_melz=32)
    with pytest.raises(melshard.UsageError, match="made by another preprocessing run"):
        melshard.preprocess(made["corpus"], made["root"] / "shards", progress=False, **{**TINY, "n_mels": 16})
    with pytest.raises(melshard.UsageError, match="manifest.json not found"):
        melshard.Shards(tmp_path)
    with pytest.raises(melshard.UsageError, match="no 'nope' split"):
        melshard.Shards(made["root"] / "shards").loader("nope", 8)
    with pytest.raises(melshard.UsageError, match="unknown"):
        melshard.train(made["root"] / "shards", tmp_path / "run", epochz=1)


def test_damaged_shard_raises(made, tmp_path):
    copy = tmp_path / "shards"
    shutil.copytree(made["root"] / "shards", copy)
    tar = min(copy.glob("train-*.tar"))
    tar.write_bytes(tar.read_bytes()[:700])  # truncated mid-member
    shards = melshard.Shards(copy)
    with pytest.raises(melshard.DataError, match=tar.name):
        shards.loader("train", 8)
    with pytest.raises(melshard.ShardError, match=tar.name):
        list(shards.loader("train", 8, shuffle=False, verify=False))


def test_example_notebook_runs(tmp_path):
    start = time.perf_counter()
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "notebook.py"), str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300, check=False,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the other 6 are identical" in result.stdout
    assert "16 predictions of 16 test files" in result.stdout
    assert time.perf_counter() - start < 60


def test_the_readme_lists_the_public_names():
    section = (ROOT / "README.md").read_text().split("## Python API", 1)[1].split("\n## ", 1)[0]
    names = section.split("The public names are", 1)[1].split("everything else", 1)[0]
    assert set(re.findall(r"`([A-Za-z_]+)`", names)) == set(melshard.__all__)


def test_ranks_share_an_epoch_with_equal_steps(made):
    shards = melshard.Shards(made["root"] / "shards")
    parts = [shards.loader("train", batch_size=4, rank=r, world=2, seed=3, normalise=False) for r in range(2)]
    assert len(parts[0]) == len(parts[1])
    keys = [bytes(m.numpy().view(np.uint8)) for part in parts for mel, _ in part for m in mel]
    every = [bytes(m.numpy().view(np.uint8)) for mel, _ in shards.loader("train", 4, normalise=False) for m in mel]
    assert len(set(keys)) == len(set(every)) and set(keys) == set(every)


def test_preprocess_config_from_a_dict_or_toml_with_overrides_winning(made, tmp_path):
    toml = tmp_path / "p.toml"
    toml.write_text("shard_size = 8\nval_fraction = 0.25\n[audio]\nsr = 8000\nduration_s = 1.0\nn_mels = 16\n"
                    "n_fft = 256\nhop_length = 64\n[augment]\ncopies = 0\n")
    result = melshard.preprocess(made["corpus"], tmp_path / "a", config=toml, jobs=1, progress=False, n_mels=24)
    assert result.shards.audio.n_mels == 24 and result.shards.config.val_fraction == 0.25
    cfg = melshard.PreprocessConfig(audio=melshard.AudioConfig(**TINY), augment=melshard.AugmentConfig(copies=0))
    other = melshard.preprocess(made["corpus"], tmp_path / "b", config=cfg, jobs=1, progress=False, seed=7)
    assert other.shards.config == melshard.PreprocessConfig(**{**cfg.__dict__, "seed": 7})


def test_probabilities_take_what_features_makes(made, run):
    model = melshard.load_model(run, "cpu")
    mel = melshard.features(made["test"] / "t0.wav", model.audio)
    expected = model.probabilities(torch.from_numpy(mel[None]))
    assert expected.shape == (1, 4)
    assert torch.equal(model.probabilities(mel[None]), expected)  # a numpy array as features returns it
    assert torch.equal(model.probabilities(mel), expected[0])  # one mel: one row of probabilities
    assert torch.equal(model.probabilities(mel.astype(np.float64)[None]), expected)  # any float dtype
    assert torch.equal(model.probabilities(torch.from_numpy(mel).float()), expected[0])
    for wrong in (mel[:16], mel[:, :100], np.zeros((2, 3, 32, 126), np.float16), mel.astype(np.int32)):
        with pytest.raises(melshard.UsageError, match=r"\[batch, 32, 126\].*n_mels x n_frames.*melshard.features"):
            model.probabilities(wrong)


def test_a_run_is_its_folder_or_a_checkpoint_file(made, run, tmp_path):
    frame = melshard.predict(run, made["test"], jobs=1)
    from_best = melshard.predict(run.best, made["test"], jobs=1)  # the README's `run.best`
    assert from_best.equals(frame)
    last = melshard.load_model(run.run, "cpu", which="last")
    assert melshard.predict(str(run.last), made["test"], jobs=1).equals(melshard.predict(last, made["test"], jobs=1))
    assert melshard.load_model(run.best, "cpu").labels == ["chirp", "high", "low", "mid"]
    with pytest.raises(melshard.UsageError, match="which='last' picks last.pt"):
        melshard.load_model(run.best, which="last")
    with pytest.raises(melshard.UsageError, match=r"nowhere.best\.pt not found"):
        melshard.load_model(tmp_path / "nowhere" / "best.pt")
    with pytest.raises(melshard.UsageError, match="shard folder, not a training run"):
        melshard.load_model(melshard.Shards(made["root"] / "shards"))


def test_predict_a_shards_split(made, run):
    shards = melshard.Shards(made["root"] / "shards")
    test = melshard.predict(run, shards)  # its test split, as for the shard folder's path
    assert test.equals(melshard.predict(run, made["root"] / "shards", split="test"))
    assert len(test) == 4
    val = melshard.predict(run, shards, split="val", probabilities=False)
    assert val.equals(melshard.predict(run, made["root"] / "shards", split="val", probabilities=False))
    with pytest.raises(melshard.UsageError, match="no 'nope' split"):
        melshard.predict(run, shards, split="nope")


def test_features_refuse_channels_first_audio(made):
    cfg = melshard.AudioConfig(**TINY)
    y, sr = sf.read(made["test"] / "t1.wav", dtype="float32")
    mono = melshard.features(y, cfg, sr=sr)
    assert np.array_equal(melshard.features(np.stack([y, y], axis=1), cfg, sr=sr), mono)  # soundfile's layout
    with pytest.raises(melshard.UsageError, match=rf"\(2, {len(y)}\).*\[samples, channels\].*y\.T"):
        melshard.features(np.stack([y, y]), cfg, sr=sr)  # librosa's (channels, samples)
    assert np.array_equal(melshard.features(np.stack([y, y]).T, cfg, sr=sr), mono)


def test_loader_refuses_a_foreign_state(made):
    loader = melshard.Shards(made["root"] / "shards").loader("train", batch_size=8)
    for state in ({"x": 1}, {**loader.state_dict(), "layout": {"world": 1}}, [1, 2]):
        with pytest.raises(melshard.UsageError, match=r"a state dict holds epoch, steps, layout \(.*batch_size"):
            loader.load_state_dict(state)
    loader.load_state_dict(loader.state_dict())


def test_shards_of_a_run_folder_says_so(run):
    with pytest.raises(melshard.UsageError, match=r"is a training run folder \(it holds config.json, best.pt"
                                                  r".*the folder preprocess wrote"):
        melshard.Shards(run.run)


def test_each_predict_option_is_declared_once_and_the_commands_and_api_follow_it():
    import argparse
    import dataclasses
    import inspect

    from melshard.api import API
    from melshard.cli import build_parser
    from shared.options import help_text, option_fields
    from trainer.options import SHARED, PredictOptions

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    fields = {f.name: f for f in option_fields(PredictOptions)}
    for command, names in (("predict", set(fields)), ("evaluate", set(SHARED))):
        flags = {a.dest: a for a in commands[command]._actions if a.dest in fields}
        assert set(flags) == names, command
        for name, action in flags.items():
            assert action.default is None  # left out: the dataclass's default applies
            assert action.help == help_text(fields[name])
    defaults = {f.name: f.default for f in dataclasses.fields(PredictOptions)}
    for function in (melshard.predict, melshard.evaluate):
        for name, parameter in inspect.signature(function).parameters.items():
            if name in defaults and name not in ("tta", "split"):
                assert parameter.default == getattr(API, name), (function.__name__, name)
    # the API's own two choices, and nothing else, differ from the command line's
    assert {k for k in defaults if getattr(API, k) != defaults[k]} == {"jobs", "probabilities"}


def test_evaluate_from_python_writes_the_report_the_command_writes(trained, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained["run"], run)
    shutil.rmtree(run / "report", ignore_errors=True)
    metrics = melshard.evaluate(run, melshard.Shards(trained["shards"]))
    assert 0 <= metrics["accuracy"] <= 1 and metrics["samples"] > 0
    assert json.loads((run / "report" / "metrics.json").read_text())["accuracy"] == metrics["accuracy"]
    with pytest.raises(melshard.MelshardError):
        melshard.evaluate(run, tmp_path / "nothing-here")


def test_train_takes_a_config_file_as_preprocess_does_and_keywords_win(tiny_shards, tmp_path):
    config = tmp_path / "train.toml"
    config.write_text('model = "cnn"\nwidth = 0.25\nepochs = 1\nbatch_size = 4\nlr = 3e-3\nnum_workers = 1\n')
    result = melshard.train(tiny_shards, tmp_path / "run", config=config, batch_size=8)
    assert result.status == 0
    assert (result.config.width, result.config.epochs, result.config.batch_size) == (0.25, 1, 8)
    again = melshard.train(tiny_shards, tmp_path / "run2", config=result.config, epochs=1)
    assert again.status == 0 and again.config == result.config
    with pytest.raises(melshard.UsageError, match="widht"):
        melshard.train(tiny_shards, tmp_path / "run3", config={"widht": 0.5})
