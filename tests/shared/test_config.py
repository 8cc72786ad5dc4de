"""Configs: validated, frozen, round-tripping through dicts and TOML."""

from __future__ import annotations

import dataclasses

import pytest

from shared.config import AudioConfig, AugmentConfig, PreprocessConfig, from_dict, load_toml, to_dict
from shared.errors import ConfigError


def test_round_trip_through_a_dict():
    cfg = PreprocessConfig(audio=AudioConfig(sr=8000, fmax=3000.0), augment=AugmentConfig(copies=3),
                           seed=7, val_fraction=0.1)
    assert from_dict(PreprocessConfig, to_dict(cfg)) == cfg


def test_round_trip_through_toml(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('seed = 3\n[audio]\nsr = 16000\n[augment]\ntransforms = ["noise", "gain"]\n')
    cfg = from_dict(PreprocessConfig, load_toml(path))
    assert cfg.seed == 3 and cfg.audio.sr == 16000 and cfg.augment.transforms == ("noise", "gain")


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        AudioConfig().sr = 1


@pytest.mark.parametrize("data,message", [
    ({"audio": {"sr": 100}}, "audio.sr"),
    ({"audio": {"samplerate": 8000}}, "unknown key"),
    ({"augment": {"transforms": ["wobble"]}}, "wobble"),
    ({"val_fraction": 1.5}, "val_fraction"),
    ({"audio": {"fmax": 20000, "sr": 16000}}, "fmax"),
    ({"audio": {"sr": "fast"}}, "audio.sr must be a whole number, got 'fast'"),
])
def test_bad_values_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(PreprocessConfig, data)


def test_malformed_toml_is_a_config_error(tmp_path):
    (tmp_path / "bad.toml").write_text("seed = = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_toml(tmp_path / "bad.toml")


@pytest.mark.parametrize("data,message", [
    ({"mixstyle_p": 1.5}, "mixstyle_p"),
    ({"mixstyle_alpha": 0}, "mixstyle_alpha"),
    ({"mixup_p": -0.1}, "mixup_p"),
])
def test_bad_training_values_name_the_key(data, message):
    from shared.config import TrainConfig

    with pytest.raises(ConfigError, match=message):
        from_dict(TrainConfig, data)


@pytest.mark.parametrize("seed", [-5, 2**32, 1.5, True, "7"])
def test_a_seed_outside_0_to_2_32_is_refused_naming_the_key_and_range(seed):
    from shared.config import TrainConfig

    for cls in (PreprocessConfig, TrainConfig):
        with pytest.raises(ConfigError, match=r"seed must be a whole number from 0 to 4294967295"):
            from_dict(cls, {"seed": seed})
    for edge in (0, 2**32 - 1):
        assert from_dict(PreprocessConfig, {"seed": edge}).seed == edge
        assert from_dict(TrainConfig, {"seed": edge}).seed == edge
