"""`DIR/manifest.json`: what a shard folder holds and how it was made (SPEC.md, "manifest")."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from shared.config import AudioConfig, AugmentConfig, PreprocessConfig, from_dict, to_dict
from shared.errors import DataError, UsageError, one_line
from shared.location import Location

FORMAT = "melshard/1"
MANIFEST = "manifest.json"
ERRORS = "errors.csv"


def config_fields(cfg: PreprocessConfig) -> dict[str, Any]:
    """The manifest's config part: `audio`, `augment`, `seed` and the remaining options."""
    data = to_dict(cfg)
    return {
        "audio": data.pop("audio"),
        "augment": data.pop("augment"),
        "seed": data.pop("seed"),
        "preprocess": data,
    }


def config_from_manifest(manifest: dict[str, Any]) -> PreprocessConfig:
    """Rebuild the `PreprocessConfig` a manifest was written with."""
    return PreprocessConfig(
        audio=from_dict(AudioConfig, manifest["audio"], "audio"),
        augment=from_dict(AugmentConfig, manifest["augment"], "augment"),
        seed=manifest["seed"],
        **manifest.get("preprocess", {}),
    )


SHARD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\.tar")  # plain names only: no paths, no shell syntax


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """Load and check `manifest.json` of a shard folder (local or remote, see `shared.location`);
    problems become one-line errors."""
    where = Location(folder)
    path = where.url(MANIFEST)
    try:
        if where.local is not None:
            text = (where.local / MANIFEST).read_text(encoding="utf-8")
        else:
            text = where.read_bytes(MANIFEST).decode("utf-8")
        manifest = json.loads(text)
    except FileNotFoundError:
        raise UsageError(f"{path} not found; run `python -m preprocess SRC --out {folder}` "
                         "first, or point at a finished shard folder") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not valid JSON ({exc}); rerun preprocessing") from None
    except (OSError, DataError) as exc:
        raise UsageError(f"cannot read {path} ({one_line(exc)}); check the shard location") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UsageError(f"{path} is not a {FORMAT} manifest; rerun preprocessing with this version")
    for split in manifest.get("splits", {}).values():
        for shard in split.get("shards", []):
            name = shard.get("name", "")
            if not isinstance(name, str) or not SHARD_NAME.fullmatch(name) or ".." in name:
                raise UsageError(f"{path} lists shard '{name}' outside its folder; refusing it")
    return manifest


def audio_config(manifest: dict[str, Any]) -> AudioConfig:
    return from_dict(AudioConfig, manifest["audio"], "audio")
