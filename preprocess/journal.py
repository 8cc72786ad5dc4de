"""The run's journal in its output: what a rerun checks before it writes anything.

`prepare_output` records the plan's fingerprint (`.melshard/plan.json`) and refuses an `--out`
made by another run (other config, other inputs: it names which) unless `--overwrite`;
`finished_record` tells a journaled shard that is complete and current (its stat unchanged, or
else its sha256 rehashed) from one to redo. The fingerprints are of the plan, so they do not
depend on the number of workers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any

from preprocess.output import Output
from preprocess.plan import ShardJob, job_fingerprint
from preprocess.shards import JOURNAL, ShardRecord, journal_name
from shared.atomic import json_bytes
from shared.config import PreprocessConfig
from shared.errors import UsageError
from shared.manifest import ERRORS, MANIFEST, config_fields
from shared.sources import SPLITS


def plan_fingerprint(jobs: list[ShardJob], labels: list[str], cfg: PreprocessConfig) -> str:
    payload = json.dumps([labels, [job_fingerprint(j, cfg) for j in jobs], config_fields(cfg)],
                         sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def listing_fingerprint(jobs: list[ShardJob]) -> str:
    """The plan without the files' sizes and times: tells "a file changed" from "other files"."""
    payload = json.dumps([[j.name, [[i.key, i.rel, i.label, i.group, i.copies] for i in j.items]]
                          for j in jobs])
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _ours(out: Output) -> list[str]:
    """Files a previous run may have left in `out` (never anything else)."""
    found = [name for split in SPLITS for name in out.names(f"{split}-*.tar")]
    return found + out.names(".*.tmp") + [name for name in (MANIFEST, ERRORS) if out.names(name)]


def _describe_difference(old: dict[str, Any], new: dict[str, Any], same_listing: bool = False) -> str:
    def flat(data, prefix=""):
        for key, value in data.items():
            if isinstance(value, dict):
                yield from flat(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    a, b = dict(flat(old)), dict(flat(new))
    changed = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    if changed:
        return f"config differs in {', '.join(changed)}"
    if same_listing:
        return "an input file was replaced or modified since: its size or modification time differs"
    return "inputs differ: files added, removed, relabeled or moved between splits"


def prepare_output(out: Output, fingerprint: str, cfg: PreprocessConfig, overwrite: bool,
                   listing: str | None = None) -> None:
    """Refuse an --out made with another config or other inputs (unless --overwrite); clear what
    must go."""
    plan_file = f"{JOURNAL}/plan.json"
    text = out.read_text(plan_file)
    previous = json.loads(text) if text is not None else None
    leftovers = _ours(out)
    matches = previous is not None and previous.get("fingerprint") == fingerprint
    if overwrite and not matches:
        for name in leftovers + out.names(journal_name("*")):
            out.remove(name)
    elif not matches and (previous is not None or any(name.endswith(".tar") for name in leftovers)):
        why = _describe_difference(previous["config"], config_fields(cfg),
                                   listing is not None and previous.get("listing") == listing) if previous else \
            "it holds shards from an unknown run"
        raise UsageError(f"--out {out} was made by another preprocessing run ({why}); "
                         "pass --overwrite to replace it, or choose another --out")
    out.remove_temporaries()  # left by a killed run; never under a final name
    record = {"fingerprint": fingerprint, "config": config_fields(cfg)}
    if listing is not None:
        record["listing"] = listing
    out.write(plan_file, json_bytes(record))


def finished_record(out: Output, job: ShardJob, cfg: PreprocessConfig) -> ShardRecord | None:
    """The journal record of a shard that is complete in `out` and current, else None."""
    try:
        text = out.read_text(journal_name(job.name))
        record = ShardRecord.from_json(text) if text else None
        if (record and record.fingerprint == job_fingerprint(job, cfg)
                and out.problem(job.name, record.bytes, record.sha256, record.stamp) is None):
            stamp = out.stamp(job.name)
            if stamp != record.stamp:  # hashed and found right: later reruns need only a stat
                record = replace(record, stamp=stamp)
                out.write(journal_name(job.name), record.to_json())
            return record
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None
