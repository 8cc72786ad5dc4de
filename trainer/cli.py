"""`python -m trainer`: train | predict | evaluate from shards (not built yet)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("error: the trainer is not available in this version; only `python -m preprocess` is",
          file=sys.stderr)
    return 2
