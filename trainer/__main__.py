"""`python -m trainer`: an alias of the `melshard` command tree (an entry point, above every
layer like melshard/ itself)."""

from melshard.cli import trainer_alias

raise SystemExit(trainer_alias())
