"""Every config value of the wrong type is refused before anything runs, in one line naming the
key, the type it takes and the value given: a generated check over every field of every config
dataclass in shared/config.py, and the TOML files of issue 28 through the real commands."""

from __future__ import annotations

import dataclasses
import inspect
import typing

import pytest

import shared.config
from shared.config import ConfigError, from_dict
from tests.audio_fixtures import make_corpus, run_module

CONFIGS = [cls for _, cls in inspect.getmembers(shared.config, dataclasses.is_dataclass) if inspect.isclass(cls)]
TABLES = {shared.config.AudioConfig: "audio", shared.config.AugmentConfig: "augment"}

# wrong values for each annotation: a float for an int (2.5, and 3.0 too), a string for a number,
# a bool for a number and a number for a bool, a tuple of the wrong length or kind
WRONG = {
    int: [2.5, 3.0, "3", True, None],
    float: ["fast", True, None, [1.0], float("inf"), float("nan")],
    bool: [1, "yes", None],
    str: [3, True, None, ["cnn"]],
    float | None: ["fast", True],
    tuple[str, ...]: ["noise", [1], 2],
    tuple[float, float]: [[1.0], [1.0, 2.0, 3.0], 1.1, ["a", "b"], [True, 1.0]],
}


def _cases():
    for cls in CONFIGS:
        if cls not in TABLES and cls is not shared.config.PreprocessConfig and cls is not shared.config.TrainConfig:
            continue
        for name, hint in typing.get_type_hints(cls).items():
            if name not in {f.name for f in dataclasses.fields(cls)} or dataclasses.is_dataclass(hint):
                continue
            assert hint in WRONG, f"{cls.__name__}.{name}: add wrong values for {hint}"
            for value in WRONG[hint]:
                yield pytest.param(cls, name, value, id=f"{cls.__name__}.{name}={value!r}")


def test_every_config_dataclass_is_covered():
    assert set(CONFIGS) == {shared.config.AudioConfig, shared.config.AugmentConfig, shared.config.PreprocessConfig,
                            shared.config.TrainConfig}


@pytest.mark.parametrize("cls,name,value", list(_cases()))
def test_a_value_of_the_wrong_type_is_refused_naming_key_type_and_value(cls, name, value):
    key = f"{TABLES[cls]}.{name}" if cls in TABLES else name
    data = {TABLES[cls]: {name: value}} if cls in TABLES else {name: value}
    with pytest.raises(ConfigError) as caught:
        from_dict(shared.config.PreprocessConfig if cls in TABLES else cls, data)
    message = str(caught.value)
    assert f"{key} must be" in message and repr(value) in message, message
    if name != "seed":  # the seed's own line gives its range instead
        assert type(value).__name__ in message, message
    assert "\n" not in message and "not supported between" not in message


@pytest.mark.parametrize("cls", [shared.config.AudioConfig, shared.config.AugmentConfig,
                                 shared.config.PreprocessConfig, shared.config.TrainConfig])
def test_floats_take_ints_and_lists_become_tuples(cls):
    hints = typing.get_type_hints(cls)
    config = cls()
    values = {}
    for f in dataclasses.fields(cls):
        value = getattr(config, f.name)
        if hints[f.name] is float and float(value).is_integer():
            values[f.name] = int(value)
        elif isinstance(value, tuple):
            values[f.name] = list(value)
    made = cls(**values)
    assert made == config
    assert all(isinstance(getattr(made, name), tuple) for name, value in values.items() if isinstance(value, list))


def _one_line(result, *words: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert all(word in lines[0] for word in words), lines


@pytest.mark.parametrize("toml,words", [
    ("batch_size = 2.5", ("batch_size must be a whole number", "2.5")),
    ("patience = 2.7", ("patience must be a whole number", "2.7")),
    ('epochs = "3"', ("epochs must be a whole number", "'3'")),
    ('freq_masks = "two"', ("freq_masks must be a whole number", "'two'")),
    ("stretch = 1.1", ("stretch must be two numbers", "1.1")),
])
def test_train_refuses_a_toml_value_of_the_wrong_type_before_anything_runs(tmp_path, toml, words):
    (tmp_path / "train.toml").write_text(toml + "\n")
    result = run_module("trainer", "train", str(tmp_path / "shards"), "--out", str(tmp_path / "run"),
                        "--config", str(tmp_path / "train.toml"))
    _one_line(result, *words)
    assert not (tmp_path / "run").exists()


def test_preprocess_refuses_an_audio_value_of_the_wrong_type_naming_its_table(tmp_path):
    src = make_corpus(tmp_path / "src", per_class=2)
    (tmp_path / "pre.toml").write_text('[audio]\nsr = "fast"\n')
    result = run_module("preprocess", str(src), "--out", str(tmp_path / "out"), "--config", str(tmp_path / "pre.toml"))
    _one_line(result, "audio.sr must be a whole number", "'fast'")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("toml,words", [
    ('overwrite = "no"', ("overwrite must be true or false", "'no'")),
    ('jobs = "8"', ("jobs must be a whole number", "'8'")),
    ("jobs = 2.5", ("jobs must be a whole number", "2.5")),
])
def test_preprocess_refuses_a_run_key_of_the_wrong_type(tmp_path, toml, words):
    src = make_corpus(tmp_path / "src", per_class=2)
    (tmp_path / "pre.toml").write_text(toml + "\n")
    result = run_module("preprocess", str(src), "--out", str(tmp_path / "out"), "--config", str(tmp_path / "pre.toml"))
    _one_line(result, *words)
    assert not (tmp_path / "out").exists()
