"""`python -m preprocess`: an alias of the `melshard` command tree with `preprocess` as its
default command (an entry point, above every layer like melshard/ itself)."""

from melshard.cli import preprocess_alias

raise SystemExit(preprocess_alias())
