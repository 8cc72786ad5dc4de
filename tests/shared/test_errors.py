"""Every exception type of the project survives a trip to a worker process and back with its
fields and message.

Workers (joblib's loky processes, the Dask backend, DataLoader workers) send exceptions back to
the parent serialised; one that cannot be rebuilt breaks the whole pool (`BrokenProcessPool`)
instead of reporting one bad input. The round trip here goes through joblib's own process pool,
the transport predict and preprocess use, rather than a hand-made serialisation. The classes are
found by importing every module of the project, so a new exception type fails here until it is
in `EXAMPLES`.
"""

from __future__ import annotations

import importlib
import pkgutil

import pytest

PACKAGES = ("shared", "preprocess", "trainer")

# Constructor args per class, as the code raises it: (qualified name) -> args.
EXAMPLES: dict[str, tuple] = {
    "shared.decode.AudioError": ("silent", "the clip is all zeros"),
    "shared.decode._CannotOpen": ("undecodable", "av: Invalid data found when processing input"),
    "shared.errors.MelshardError": ("something the user can fix",),
    "shared.errors.UsageError": ("--jobs must be at least 1",),
    "shared.errors.ConfigError": ("audio.sr must be a positive integer, not -1",),
    "shared.errors.DataError": ("nothing in test/ could be evaluated",),
    "shared.shardio.ShardError": ("train-000001.tar: truncated tar header",),
}


def _modules() -> list[str]:
    """Every importable module of the project's packages (not `__main__`, which would run a CLI)."""
    names = []
    for package in PACKAGES:
        root = importlib.import_module(package)
        names += [m.name for m in pkgutil.walk_packages(root.__path__, f"{package}.")
                  if not m.name.endswith(".__main__")]
    return names


def _subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub} | _subclasses(sub)
    return found


def project_exceptions() -> list[type]:
    """Every exception class defined in the project's modules, nested or private ones included."""
    for name in _modules():
        importlib.import_module(name)
    ours = [c for c in _subclasses(BaseException) if c.__module__.split(".")[0] in PACKAGES]
    return sorted(ours, key=_name)


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _echo(value):
    return value


def through_a_worker(value):
    """`value` after a trip to one of joblib's loky worker processes and back."""
    from joblib.externals.loky import get_reusable_executor

    return get_reusable_executor(max_workers=1).submit(_echo, value).result(timeout=120)


def test_every_exception_class_has_an_example():
    found = {_name(c) for c in project_exceptions()}
    assert found >= {"shared.decode.AudioError", "shared.shardio.ShardError"}  # the search itself works
    missing = sorted(found - EXAMPLES.keys())
    assert not missing, f"add constructor args for {missing} to EXAMPLES (and make them picklable)"
    assert not EXAMPLES.keys() - found, "EXAMPLES names a class that no longer exists"


@pytest.mark.parametrize("cls", project_exceptions(), ids=_name)
def test_an_exception_survives_pickling_with_its_fields_and_message(cls):
    if _name(cls) not in EXAMPLES:
        pytest.fail(f"add constructor args for {_name(cls)} to EXAMPLES")
    error = cls(*EXAMPLES[_name(cls)])
    copy = through_a_worker(error)
    assert copy is not error and type(copy) is cls
    assert str(copy) == str(error) and copy.args == error.args
    assert vars(copy) == vars(error)


def test_an_audio_error_keeps_its_reason_and_detail():
    from shared.decode import AudioError

    copy = through_a_worker(AudioError("truncated", "header claims 32000 bytes, 16000 present"))
    assert (copy.reason, copy.detail) == ("truncated", "header claims 32000 bytes, 16000 present")
    assert str(copy) == "truncated: header claims 32000 bytes, 16000 present"


def test_every_error_meant_for_the_user_has_one_root():
    import melshard
    from shared.errors import MelshardError

    for kind in (melshard.UsageError, melshard.ConfigError, melshard.DataError, melshard.ShardError,
                 melshard.AudioError):
        assert issubclass(kind, MelshardError), kind
    try:
        melshard.train("no/such/shards", "runs/x")
    except MelshardError as exc:  # one type catches what the API raises on purpose
        assert "no/such/shards" in str(exc)
