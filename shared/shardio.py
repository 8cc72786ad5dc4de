"""Reading shard tars fast and safely: samples out of a WebDataset tar, and `.npy` without pickle.

Python's `tarfile` (which webdataset's tar iterator uses) parses every 512-byte header through
several layers of Python and `np.load` parses every `.npy` header with `ast.literal_eval`; for
55 KB mels that was two thirds of a loader worker's time. Here a header is a few slices and a
`.npy` header is parsed once per distinct header; `bench/loader_throughput.py` prints this
reader against webdataset's own tar iterator on the same shards.

It reads what `tarfile` (and so webdataset's `TarWriter`) writes, in every format: ustar (names
split into prefix + name), GNU (`L` long names, base-256 sizes over 8 GiB) and PAX (`x`
per-member and `g` global records: `path` and `size` are applied, other records ignored), and it
names members exactly as `tarfile` does and groups them into samples exactly as webdataset's
`group_by_keys` does (`tests/shared/test_shardio.py` holds it to both on generated tars of every
format). What it cannot interpret (sparse members, unknown member types, a malformed header or
PAX record, a duplicate member in a sample, a sample without a required member) is a
`ShardError` naming the shard and the member: never a silently different sample.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from shared.errors import DataError
from shared.melcodec import MEMBERS, decode_u8

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)
WANTED = frozenset({"mel.npy", "mel.u8.npy", "cls", "json"})
# The mel's member in each encoding (`shared.melcodec`): a required `mel.npy` is met by either,
# and a `mel.u8.npy` needs the json that holds its offset and scale.
U8_MEL = MEMBERS["uint8"]
# Extensions webdataset would decode by unpickling (or torch.load): a shard carrying one was not
# written by melshard and may run code when decoded by another tool.
PICKLED = frozenset({"pyd", "pkl", "pickle", "pth", "pt"})

# Member types, as tarfile names them. Regular files (`7` is a contiguous file, read as one);
# members that hold no file data to read; and the headers that describe the next member.
REGULAR = frozenset({b"0", b"\0", b"7"})
NOT_FILES = frozenset({b"1", b"2", b"3", b"4", b"5", b"6"})  # links, devices, directories, fifos
PAX_MEMBER, PAX_GLOBAL, SOLARIS_PAX = b"x", b"g", b"X"
GNU_LONG_NAME, GNU_LONG_LINK, GNU_SPARSE = b"L", b"K", b"S"
GNU_TYPES = frozenset({GNU_LONG_NAME, GNU_LONG_LINK, GNU_SPARSE})
# webdataset skips metadata members named like `__meta__` (tar_file_iterator's skip_meta).
_META = re.compile(r"__[^/]*__($|/)")
_PAX_RECORD = re.compile(rb"(\d+) ([^=]+)=")
# webdataset's key/extension split (tariterators.base_plus_ext), copied because importing
# webdataset imports torch (over a second): a preprocessing run, which only writes shards and
# checks them, would pay it for one regular expression. tests/shared/test_shardio.py holds the two equal.
_KEY_EXT = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")


def base_plus_ext(name: str) -> tuple[str, str] | tuple[None, None]:
    """(key, extensions) of a member name as webdataset splits it; (None, None) without a dot."""
    match = _KEY_EXT.match(name)
    return (match.group(1), match.group(2)) if match else (None, None)


class ShardError(DataError, ValueError):
    """A shard that cannot be read; the message names the shard."""


def required_members(shard_name: str) -> frozenset[str]:
    """What every sample of a shard must hold: `mel.npy` (or, uint8-encoded, `mel.u8.npy` and
    `json`), and `cls` in the labeled splits."""
    split = Path(shard_name).name.split("-", 1)[0]
    return frozenset({"mel.npy", "cls"}) if split in ("train", "val") else frozenset({"mel.npy"})


def _text(field: bytes) -> str:
    """A NUL-terminated header field as tarfile decodes it (UTF-8, undecodable bytes kept as surrogates)."""
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _number(field: bytes, url: str, what: str) -> int:
    """A numeric header field: octal text, or GNU base-256 (first byte 0x80, or 0xff if negative)."""
    if field[:1] in (b"\x80", b"\xff"):
        value = int.from_bytes(field[1:], "big")
        return value - 256 ** (len(field) - 1) if field[0] == 0xFF else value
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise ShardError(f"{url}: corrupt tar header ({what} {text!r} is not a number)") from None


def _checksum_ok(header: bytes, url: str) -> bool:
    """The header's checksum, summed as unsigned or (as some old tars did) signed bytes."""
    stored = _number(header[148:156], url, "checksum")
    unsigned = sum(header[:148]) + sum(header[156:]) + 8 * 32
    if stored == unsigned:
        return True
    high = sum(1 for byte in header[:148] + header[156:] if byte >= 128)
    return stored == unsigned - 256 * high


def _pax_records(data: bytes, url: str) -> dict[str, str]:
    """`LENGTH KEY=VALUE\\n` records of a PAX header, decoded as tarfile does."""
    records: dict[str, str] = {}
    position = 0
    while position < len(data) and data[position:position + 1] != b"\0":
        match = _PAX_RECORD.match(data, position)
        length = int(match.group(1)) if match else 0
        if not match or length < len(match.group(0)) + 1 or data[position + length - 1:position + length] != b"\n":
            raise ShardError(f"{url}: malformed PAX record at byte {position} of an extended header")
        key = match.group(2).decode("utf-8", "surrogateescape")
        records[key] = data[match.end():position + length - 1].decode("utf-8", "surrogateescape")
        position += length
    return records


def _skip(handle, size: int) -> None:
    """Move past `size` bytes: a seek in a file, a read from a pipe or an HTTP response."""
    if handle.seekable():
        handle.seek(size, io.SEEK_CUR)
    else:
        while size > 0:
            block = handle.read(min(size, 1 << 20))
            if not block:
                return
            size -= len(block)


def _read(handle, size: int) -> bytes:
    """`size` bytes (fewer only at the end of the stream), also from streams that return short reads."""
    data = handle.read(size)
    if len(data) == size or not data:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        block = handle.read(size - got)
        if not block:
            break
        parts.append(block)
        got += len(block)
    return b"".join(parts)


def _read_member(handle, size: int, url: str, name: str) -> bytes:
    data = _read(handle, size + (-size % BLOCK))
    if len(data) < size:
        raise ShardError(f"{url}: truncated member '{name}'")
    return data[:size]


def _members(handle, url: str, wanted: Collection[str] | None) -> Iterator[tuple[str, str, str, bytes | None]]:
    """(name, key, suffix, data) of each regular member that webdataset would group into a sample;
    data is None for members not in `wanted` (None: every member is read)."""
    global_pax: dict[str, str] = {}
    pax: dict[str, str] = {}  # records of an `x` header, for the next member only
    long_name: str | None = None
    first = True
    while True:
        header = _read(handle, BLOCK)
        if len(header) < BLOCK:
            if header:
                raise ShardError(f"{url}: truncated tar header")
            return
        if header == ZERO_BLOCK:  # end-of-archive marker
            return
        if not _checksum_ok(header, url):
            if first and header[:2] == b"\x1f\x8b":
                raise ShardError(f"{url}: a compressed tar; shards are plain tars")
            raise ShardError(f"{url}: corrupt tar header (checksum mismatch)")
        first = False
        kind = header[156:157]
        size = _number(header[124:136], url, "member size")
        if kind == GNU_LONG_NAME:
            long_name = _text(_read_member(handle, size, url, "GNU long name"))
            continue
        if kind in (PAX_MEMBER, SOLARIS_PAX, PAX_GLOBAL):
            records = _pax_records(_read_member(handle, size, url, "PAX header"), url)
            if kind == PAX_GLOBAL:
                if "size" in records:
                    raise ShardError(f"{url}: a global PAX header sets every member's size; not a shard tar")
                global_pax.update(records)
            else:
                pax = records
            continue
        if kind == GNU_LONG_LINK:  # a link target: links hold no data
            _skip(handle, size + (-size % BLOCK))
            continue
        # The member's name, as tarfile builds it: ustar prefix + name, a GNU long name over
        # both, PAX records over everything.
        name = _text(header[:100])
        prefix = _text(header[345:500])
        if kind == b"\0" and name.endswith("/"):
            kind = b"5"  # an old-style directory
        if prefix and kind not in GNU_TYPES:
            name = f"{prefix}/{name}"
        if long_name is not None:
            name, long_name = long_name, None
        records = {**global_pax, **pax} if global_pax else pax
        pax = {}
        if records:
            if any(key.startswith("GNU.sparse.") for key in records):
                kind = GNU_SPARSE
            if "path" in records:
                name = records["path"].rstrip("/")
            if "size" in records:
                try:
                    size = int(records["size"])
                except ValueError:
                    raise ShardError(f"{url}: member '{name}' has a malformed PAX size {records['size']!r}") from None
        if size < 0:
            raise ShardError(f"{url}: member '{name}' has a negative size")
        padded = size + (-size % BLOCK)
        if kind not in REGULAR:
            if kind in NOT_FILES:
                _skip(handle, padded)
                continue
            what = "a sparse file" if kind == GNU_SPARSE else f"of tar type {kind!r}"
            raise ShardError(f"{url}: member '{name}' is {what}, which melshard cannot read; refusing the shard")
        if ("/" not in name and name.startswith("__") and name.endswith("__")) or _META.match(name):
            _skip(handle, padded)  # webdataset's metadata members: never part of a sample
            continue
        if name.startswith("/") or ".." in name.split("/"):
            raise ShardError(f"{url}: member '{name}' points outside the shard; refusing the shard")
        key, suffix = base_plus_ext(name)
        if key is None:  # no extension: webdataset ignores it
            _skip(handle, padded)
            continue
        suffix = suffix.lower()
        if suffix.rsplit(".", 1)[-1] in PICKLED:
            raise ShardError(f"{url}: member '{name}' holds a pickle, which melshard never writes and never "
                             "loads; refusing the shard")
        if wanted is not None and suffix not in wanted:  # anything else (.txt, .wav, ...): skipped unread
            _skip(handle, padded)
            yield name, key, suffix, None
            continue
        yield name, key, suffix, _read_member(handle, size, url, name)


def iter_samples(path: str | Path, wanted: Collection[str] | None = WANTED,
                 required: Collection[str] = ()) -> Iterator[dict[str, Any]]:
    """Samples of one local shard as dicts `{"__key__", "__url__", "mel.npy", "cls", "json"}`."""
    with open(path, "rb", buffering=1 << 20) as handle:
        yield from iter_stream(handle, str(path), wanted, required)


def iter_stream(handle, url: str, wanted: Collection[str] | None = WANTED,
                required: Collection[str] = ()) -> Iterator[dict[str, Any]]:
    """Samples of a shard read from any binary stream (a file, a pipe, an HTTP response).

    Members are grouped as webdataset does: consecutive members sharing a key (the name up to
    the first dot of its last part). A member not in `wanted` is present with the value None
    (None: every member is read). A sample missing a member of `required` is a `ShardError`.
    """
    current: dict[str, Any] | None = None
    for name, key, suffix, data in _members(handle, url, wanted):
        if current is not None and current["__key__"] != key:
            yield _complete(current, required)
            current = None
        if current is None:
            current = {"__key__": key, "__url__": url}
        elif suffix in current:
            raise ShardError(f"{url}: member '{name}' appears twice in sample '{key}'; refusing the shard")
        current[suffix] = data
    if current is not None:
        yield _complete(current, required)


def _complete(sample: dict[str, Any], required: Collection[str]) -> dict[str, Any]:
    for member in required:
        if member == "mel.npy" and U8_MEL in sample and "mel.npy" not in sample:
            member = "json"  # a uint8 mel: its offset and scale are in the json
        if member not in sample:
            raise ShardError(f"{sample['__url__']}: sample '{sample['__key__']}' has no {member} member "
                             "(damaged, or not written by melshard)")
    return sample


_HEADERS: dict[bytes, tuple[np.dtype, tuple[int, ...], int]] = {}
_ALLOWED = frozenset({np.dtype("float16"), np.dtype("float32")})
_CODES = frozenset({np.dtype("uint8")})


def decode_mel(sample: dict[str, Any]) -> np.ndarray:
    """A sample's log-mel `[n_mels, frames]` in either encoding: float16 as stored (`mel.npy`),
    or float32 decoded from uint8 codes (`mel.u8.npy`, its offset and scale in the json)."""
    data = sample.get("mel.npy")
    if data is not None:
        return decode_npy(data, sample.get("__url__", ""))
    return decode_u8(*_u8_parts(sample))


def stack_mels(samples: list[dict[str, Any]]) -> np.ndarray:
    """The samples' log-mels `[B, n_mels, frames]`, as `decode_mel` gives each: float16 when every
    one is stored so, else float32 (uint8 codes decoded in one pass over the batch, the same
    numbers as `decode_mel` gives each)."""
    if any(s.get("mel.npy") is not None for s in samples):  # float16, or encodings mixed (numpy promotes)
        return np.stack([decode_mel(s) for s in samples])
    codes, offsets, scales = zip(*(_u8_parts(s) for s in samples))
    column = (-1, 1, 1)
    return decode_u8(np.stack(codes), np.reshape(offsets, column), np.reshape(scales, column))


def _u8_parts(sample: dict[str, Any]) -> tuple[np.ndarray, float, float]:
    """(codes, offset, scale) of a uint8-encoded sample, or a `ShardError` naming it."""
    url = sample.get("__url__", "")
    data = sample.get(U8_MEL)
    if data is None:
        raise ShardError(f"{url}: sample '{sample.get('__key__')}' has no mel.npy member "
                         "(damaged, or not written by melshard)")
    codes = decode_npy(data, url, allowed=_CODES, member=U8_MEL)
    try:
        meta = json.loads(sample["json"])
        offset, scale = meta["mel_offset"], meta["mel_scale"]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                   and v == float(np.float32(v)) for v in (offset, scale)) or scale < 0:
            raise ValueError(f"mel_offset {offset!r} and mel_scale {scale!r} are not float32 numbers")
    except (KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
        raise ShardError(f"{url}: sample '{sample.get('__key__')}' has a {U8_MEL} without a usable mel_offset and "
                         f"mel_scale in its json ({type(exc).__name__}: {exc})") from None
    return codes, offset, scale


def decode_npy(data: bytes, url: str = "", allowed: frozenset[np.dtype] = _ALLOWED,
               member: str = "mel.npy") -> np.ndarray:
    """An array from `.npy` bytes: of the `allowed` dtypes only (float16/float32 by default),
    never a pickle, headers parsed once."""
    if data[:6] != b"\x93NUMPY":
        raise ShardError(f"{url}: {member} is not a .npy file")
    width = 2 if data[6] == 1 else 4
    end = 8 + width + int.from_bytes(data[8 : 8 + width], "little")
    header = data[:end]
    known = _HEADERS.get(header)
    if known is None:
        stream = io.BytesIO(data)
        version = np.lib.format.read_magic(stream)
        readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in readers:
            raise ShardError(f"{url}: {member} has format version {version}; expected 1.0 or 2.0")
        shape, fortran, dtype = readers[version](stream)
        if fortran:
            raise ShardError(f"{url}: {member} holds {dtype} (Fortran order); only C-order arrays are accepted")
        known = (dtype, tuple(shape), end)
        if len(_HEADERS) < 64:
            _HEADERS[header] = known
    dtype, shape, offset = known
    if dtype not in allowed:  # checked per call: a cached header may have been another member's
        raise ShardError(f"{url}: {member} holds {dtype}; only {'/'.join(sorted(str(d) for d in allowed))} "
                         "arrays are accepted")
    count = int(np.prod(shape))
    if len(data) - offset != count * dtype.itemsize:
        raise ShardError(f"{url}: {member} is truncated")
    return np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(shape)
