"""The README's examples stay true: its TOML config parses, its commands name real options."""

from __future__ import annotations

import re

from melshard.cli import command_parser
from preprocess.settings import RUN_KEYS
from shared.config import PreprocessConfig, from_dict, load_toml
from tests.audio_fixtures import REPO

README = (REPO / "README.md").read_text()


def test_the_readme_toml_example_is_a_valid_preprocess_config(tmp_path):
    block = re.search(r"```toml\n(.*?)```", README, re.S).group(1)
    (tmp_path / "example.toml").write_text(block)
    data = load_toml(tmp_path / "example.toml")
    for key in RUN_KEYS:
        data.pop(key, None)
    cfg = from_dict(PreprocessConfig, data)
    assert cfg.audio.sr == 16000 and cfg.augment.copies == 2


def test_the_readme_preprocess_options_exist():
    options = set(re.findall(r"--[a-z][a-z-]+", README.split("## Preprocess", 1)[1].split("### ", 1)[0]))
    known = {a for action in command_parser("preprocess")._actions for a in action.option_strings}
    assert options <= known, options - known
