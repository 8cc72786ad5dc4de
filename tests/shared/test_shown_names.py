"""A user's string in a file or on the console: UTF-8 always, undecodable file-name bytes as
`\\xNN`, rich markup and matplotlib mathematics taken literally."""

from __future__ import annotations

import io
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from shared.atomic import readable, text_bytes  # noqa: E402
from shared.console import plain, plot_label, shown  # noqa: E402
from shared.rejections import rejections_csv  # noqa: E402

LATIN1 = os.fsdecode(b"a/caf\xe9.wav")  # as Python lists a Latin-1 file name: 'a/caf\udce9.wav'


def test_an_undecodable_byte_is_written_as_backslash_x():
    assert readable(LATIN1) == plain(LATIN1) == "a/caf\\xe9.wav"
    assert text_bytes(f"path\n{LATIN1}\ncafé\n") == "path\na/caf\\xe9.wav\ncafé\n".encode()
    assert text_bytes("\ud800") == b"\\ud800"  # a surrogate no file name decodes to
    assert rejections_csv([[LATIN1, "decode", "empty_file", "0 bytes"]]).decode("utf-8").splitlines()[1] == \
        "a/caf\\xe9.wav,decode,empty_file,0 bytes"


def test_a_label_prints_exactly_in_rich_tables_and_lines():
    labels = ["tone [/b]", "b [v2]", "Bird Song (ünï) [v2]", "ends in \\", LATIN1]
    out = io.StringIO()
    console = Console(file=out, width=200)
    table = Table(title=shown("shards [val]"))
    table.add_column("class")
    for label in labels:
        table.add_row(shown(label))
        console.print(shown(f"warning: {label} has no clip"))
    console.print(table)
    text = out.getvalue()
    for label in labels:
        assert f"warning: {plain(label)} has no clip\n" in text and f"│ {plain(label)} " in text
    assert "shards [val]" in text


def test_a_plot_label_draws_dollars_and_undecodable_bytes(tmp_path):
    figure, axes = plt.subplots()
    axes.set_yticks([0, 1], [plot_label("$\\frac{$"), plot_label(LATIN1)])
    figure.savefig(tmp_path / "labels.png")  # unescaped, either label stops savefig
    plt.close(figure)
    assert (tmp_path / "labels.png").stat().st_size > 0
