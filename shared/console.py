"""User-provided strings (labels, paths, file and group names) on the console and in figures.

Rich reads `[...]` in a printed string as markup: a label `tone [/b]` stops the program with a
MarkupError and a folder `b [v2]` prints as `b`. Matplotlib reads `$...$` as mathematics, which
can fail to parse. And a file name that is not UTF-8 holds lone surrogates that a UTF-8 terminal
and matplotlib's fonts refuse. So a user's string reaches the console through `shown` (rich:
tables, titles, `console.print`) or `plain` (a plain `print`), and a figure through `plot_label`.
"""

from __future__ import annotations

from rich.text import Text

from shared.atomic import readable


def plain(text: object) -> str:
    """`text` as a plain `print` shows it: undecodable file-name bytes as `\\xNN`."""
    return readable(str(text))


def shown(text: object, style: str = "") -> Text:
    """`text` for rich, printed exactly as given (never read as markup; `rich.markup.escape`
    cannot keep a trailing backslash), undecodable bytes as `\\xNN`."""
    return Text(plain(text), style=style)


def counted(n: int, noun: str) -> str:
    """'1 input', '2 inputs': a count and its noun, singular or plural."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def plot_label(text: object) -> str:
    """`text` for a matplotlib label: `$` taken literally, undecodable bytes as `\\xNN`."""
    return plain(text).replace("$", r"\$")
