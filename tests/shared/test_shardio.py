"""`shared.shardio` against `tarfile` + webdataset's grouping, on generated tars of every format.

The hand-written reader exists for speed (bench/loader_throughput.py); these tests exist so that
it can never return a sample different from what webdataset would read from the same bytes.
"""

from __future__ import annotations

import io
import random
import tarfile

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from webdataset.tariterators import base_plus_ext as wds_base_plus_ext
from webdataset.tariterators import group_by_keys, tar_file_expander

from shared.shardio import PICKLED, ShardError, base_plus_ext, iter_samples, iter_stream, required_members

FORMATS = {"ustar": tarfile.USTAR_FORMAT, "gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT}

# Name parts: ASCII, accented and non-Latin letters, digits, spaces and the punctuation file
# names carry; '/' separates folders and '.' starts a sample's extension.
_CHARS = st.sampled_from("abcXYZ019_- ~+()éüßøжЖ漢字ع😀")
_part = st.text(_CHARS, min_size=1, max_size=40)
_suffix = st.lists(st.text(st.sampled_from("abcnpyjsoCLSMEL0"), min_size=1, max_size=5), min_size=0, max_size=3)


@st.composite
def member_names(draw) -> str:
    folders = draw(st.lists(_part, max_size=4))
    base = draw(_part)
    extensions = draw(_suffix)
    name = "/".join([*folders, base])
    if extensions:
        name += "." + ".".join(extensions)
    if draw(st.integers(0, 9)) == 0:  # now and then a long name, as real corpora have
        name = draw(_part) * draw(st.integers(2, 12)) + "/" + name
    size = len(name.encode("utf-8"))
    assume(1 <= size <= 300 and ".." not in name.split("/"))
    assume(name.rsplit(".", 1)[-1].lower() not in PICKLED)
    return name


@st.composite
def members(draw) -> tuple[str, str, int, int]:
    """(kind, name, size, seed): mostly regular files, sometimes a directory or a link."""
    kind = draw(st.sampled_from(["file"] * 8 + ["dir", "symlink", "hardlink"]))
    name = draw(member_names())
    big = draw(st.integers(0, 19)) == 0
    size = draw(st.integers(0, 3 << 20)) if big else draw(st.integers(0, 1500))
    return kind, name, size, draw(st.integers(0, 2**32 - 1))


@st.composite
def samples(draw) -> list[tuple[str, str, int, int]]:
    """Members grouped as a shard holds them (several members per key), then perhaps shuffled."""
    keys = draw(st.lists(member_names(), min_size=0, max_size=6))
    result = []
    for key in keys:
        stem = key.split(".", 1)[0] if "." in key.rsplit("/", 1)[-1] else key
        for extension in draw(st.lists(st.sampled_from(["mel.npy", "cls", "json", "txt", "Wav"]), max_size=3,
                                       unique=True)):
            size = draw(st.integers(0, 2000))
            result.append(("file", f"{stem}.{extension}", size, draw(st.integers(0, 2**32 - 1))))
    result += draw(st.lists(members(), max_size=5))
    if draw(st.booleans()):
        result = draw(st.permutations(result))
    return result


def build_tar(entries, fmt: int, global_pax: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt, pax_headers=global_pax or {}) as tar:
        for kind, name, size, seed in entries:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = size
                tar.addfile(info, io.BytesIO(random.Random(seed).randbytes(size)))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE}[kind]
            info.linkname = "" if kind == "dir" else "target.bin"
            tar.addfile(info)
    return buffer.getvalue()


def webdataset_samples(data: bytes) -> list[dict]:
    """What webdataset reads from the tar: its tar iterator and its grouping, unchanged."""
    stream = tar_file_expander([{"url": "shard.tar", "stream": io.BytesIO(data)}])
    return [{k: v for k, v in s.items() if k not in ("__url__", "__local_path__")} for s in group_by_keys(stream)]


class OneWay(io.RawIOBase):
    """A stream that cannot seek and returns short reads, like a pipe or an HTTP response."""

    def __init__(self, data: bytes):
        self.data, self.position = data, 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        size = min(size, 7000) if size >= 0 else 7000
        chunk = self.data[self.position:self.position + size]
        self.position += len(chunk)
        return chunk


def ours(data: bytes, one_way: bool) -> list[dict]:
    handle = OneWay(data) if one_way else io.BytesIO(data)
    return [{k: v for k, v in s.items() if k != "__url__"} for s in iter_stream(handle, "shard.tar", wanted=None)]


def read_both(data: bytes, one_way: bool):
    """(webdataset's samples or its error, ours or our error)."""
    try:
        theirs = webdataset_samples(data)
    except ValueError as exc:  # a duplicate member in a sample
        theirs = exc
    try:
        mine = ours(data, one_way)
    except ShardError as exc:
        mine = exc
    return theirs, mine


@settings(max_examples=2500, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(entries=samples(), fmt=st.sampled_from(sorted(FORMATS)), one_way=st.booleans(),
       global_pax=st.sampled_from([None, {"comment": "0123abcd"}, {"comment": "ünï", "mtime": "1.5"}]))
def test_the_reader_reads_every_tar_as_webdataset_does(entries, fmt, one_way, global_pax):
    if fmt != "pax" or not entries:  # tarfile cannot read back a global header that describes no member
        global_pax = None
    try:
        data = build_tar(entries, FORMATS[fmt], global_pax)
    except ValueError:  # ustar cannot hold this name (over 100 bytes and not splittable): not a tar
        assume(False)
    theirs, mine = read_both(data, one_way)
    if isinstance(theirs, Exception):
        assert isinstance(mine, ShardError) and "appears twice" in str(mine), (theirs, mine)
    else:
        assert mine == theirs


@settings(max_examples=2000, deadline=None)
@given(st.text(st.sampled_from("ab./_-é字 \n"), max_size=40) | st.text(max_size=60))
def test_member_names_split_into_key_and_extension_as_webdataset_splits_them(name):
    assert base_plus_ext(name) == tuple(wds_base_plus_ext(name))


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_long_unicode_names_keep_every_member(fmt):
    """The case that lost every sample: keys over 92 characters, written by tarfile's default PAX."""
    stem = "donateacry-android-upload-bucket/006dbee7-715a-46ee-b592-1c4e7affb788-1430218353124-1_7-f-26-hu"
    entries = []
    for i in range(3):
        for extension in ("mel.npy", "cls", "json"):
            entries.append(("file", f"{stem}_é漢{i}{'x' * 40 * i}.{extension}", 100 + i, i))
    if fmt == "ustar":  # at most 255 bytes, split into a 155-byte prefix and a 100-byte name
        entries = [(k, "a/" * 60 + n.rsplit("/", 1)[1].split(".")[0][-60:] + n[n.index("."):], s, i)
                   for k, n, s, i in entries]
    data = build_tar(entries, FORMATS[fmt])
    read = ours(data, one_way=False)
    assert read == webdataset_samples(data)
    assert len(read) == 3 and all({"mel.npy", "cls", "json"} <= set(s) for s in read)


@given(value=st.integers(0, 2**63 - 1))
def test_sizes_in_every_encoding_read_as_tarfile_reads_them(value):
    """Octal for the sizes ustar can hold, GNU base-256 for members over 8 GiB."""
    from shared.shardio import _number

    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        try:
            field = tarfile.itn(value, 12, fmt)
        except ValueError:
            continue
        assert _number(field, "x", "size") == tarfile.nti(field) == value


def write_huge_member_tar(path, fmt: int, size: int = 9 << 30) -> None:
    """A tar holding one 9 GiB member (a sparse file on disk: the data is a hole) and one sample."""
    with open(path, "wb") as handle:
        info = tarfile.TarInfo("huge/blob.bin")
        info.size = size
        handle.write(info.tobuf(fmt, "utf-8", "surrogateescape"))
        handle.seek(size + (-size % 512), io.SEEK_CUR)
        small = io.BytesIO()
        with tarfile.open(fileobj=small, mode="w", format=fmt) as tar:
            for extension, data in (("mel.npy", b"m" * 10), ("cls", b"3")):
                member = tarfile.TarInfo(f"after.{extension}")
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
        handle.write(small.getvalue())


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT], ids=["gnu-base256", "pax-size"])
def test_a_member_over_8_gib_is_skipped_to_the_next_sample(tmp_path, fmt):
    path = tmp_path / "huge.tar"
    write_huge_member_tar(path, fmt)
    with tarfile.open(path) as tar:  # random access: tarfile seeks past the hole as we do
        listed = [(m.name, m.size) for m in tar.getmembers()]
    assert listed == [("huge/blob.bin", 9 << 30), ("after.mel.npy", 10), ("after.cls", 1)]
    read = list(iter_samples(path))
    assert [s["__key__"] for s in read] == ["huge/blob", "after"]
    assert read[0]["bin"] is None and read[1]["mel.npy"] == b"m" * 10 and read[1]["cls"] == b"3"


def test_a_global_pax_path_renames_members_as_tarfile_does():
    buffer = io.BytesIO()
    renaming = {"path": "g/renamed.cls"}
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT, pax_headers=renaming) as t:
        info = tarfile.TarInfo("original.cls")
        info.size = 1
        t.addfile(info, io.BytesIO(b"1"))
    assert ours(buffer.getvalue(), one_way=False) == webdataset_samples(buffer.getvalue())
    assert ours(buffer.getvalue(), one_way=False) == [{"__key__": "g/renamed", "cls": b"1"}]


def _tar_with(kind: bytes = tarfile.REGTYPE, pax: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("k.mel.npy")
        info.size = 4
        info.type = kind
        info.pax_headers = pax or {}
        tar.addfile(info, io.BytesIO(b"abcd"))
    return buffer.getvalue()


@pytest.mark.parametrize(("data", "message"), [
    (_tar_with(b"Q"), "of tar type b'Q'"),
    (_tar_with(pax={"GNU.sparse.size": "4"}), "a sparse file"),
    (_tar_with()[:514], "truncated member"),
    (_tar_with()[:300], "truncated tar header"),
    (_tar_with().replace(b"k.mel.npy", b"k.mel.npz", 1), "checksum mismatch"),
    (b"\x1f\x8b" + bytes(510), "a compressed tar"),
])
def test_what_cannot_be_interpreted_is_a_shard_error(data, message):
    with pytest.raises(ShardError, match=message) as caught:
        list(iter_stream(io.BytesIO(data), "bad.tar"))
    assert str(caught.value).startswith("bad.tar: ")


def test_a_malformed_pax_record_is_a_shard_error():
    data = bytearray(_tar_with(pax={"path": "k.mel.npy", "comment": "x"}))
    at = data.index(b"comment=x")
    data[at - 3:at - 1] = b"99"  # a record length running past the header
    header = data[:512]
    header[148:156] = b"        "
    header[148:156] = f"{sum(header):06o}\0 ".encode()
    data[:512] = header
    with pytest.raises(ShardError, match="malformed PAX record"):
        list(iter_stream(io.BytesIO(bytes(data)), "bad.tar"))


def test_a_sample_without_a_required_member_names_shard_and_key():
    entries = [("file", "a.mel.npy", 4, 0), ("file", "a.cls", 1, 0), ("file", "b.mel.npy", 4, 0),
               ("file", "b.json", 2, 0)]
    data = build_tar(entries, tarfile.PAX_FORMAT)
    unlabeled = required_members("test-000000.tar")
    assert len(list(iter_stream(io.BytesIO(data), "test-000000.tar", required=unlabeled))) == 2
    with pytest.raises(ShardError, match="train-000003.tar: sample 'b' has no cls member"):
        list(iter_stream(io.BytesIO(data), "train-000003.tar", required=required_members("train-000003.tar")))


def test_a_duplicate_member_is_a_shard_error_as_webdataset_raises():
    data = build_tar([("file", "a.cls", 1, 0), ("file", "a.CLS", 1, 1)], tarfile.GNU_FORMAT)
    with pytest.raises(ValueError, match="duplicate"):
        webdataset_samples(data)
    with pytest.raises(ShardError, match="'a.CLS' appears twice in sample 'a'"):
        ours(data, one_way=False)
