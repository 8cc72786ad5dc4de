"""preprocess.shards.TarSink writes the bytes webdataset's TarWriter writes, on generated samples."""

from __future__ import annotations

import io

import webdataset as wds
from hypothesis import given, settings
from hypothesis import strategies as st

from preprocess.shards import TAR_MTIME, TarSink

KEYS = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), min_size=1, max_size=300)
EXTENSIONS = st.sampled_from(["mel.npy", "json", "cls", "wav", "txt", "a.b.c", "_meta"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(KEYS, st.dictionaries(EXTENSIONS, st.binary(max_size=3000), min_size=1, max_size=4)),
                min_size=0, max_size=6))
def test_the_sink_writes_what_webdatasets_tarwriter_writes(samples):
    theirs, ours = io.BytesIO(), io.BytesIO()
    with wds.TarWriter(theirs, encoder=False, mtime=TAR_MTIME) as writer:
        for key, members in samples:
            writer.write({"__key__": key, **members})
    with TarSink(ours) as sink:
        for key, members in samples:
            sink.write({"__key__": key, **members})
    assert ours.getvalue() == theirs.getvalue()
