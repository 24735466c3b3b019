"""Reading and validating safetensors headers without touching tensor data.

A safetensors file is an 8-byte little-endian length N, N bytes of UTF-8 JSON (the header), then
the tensor data. Every check a loader would fail on is done here on the header alone, so a
malformed file gets one clear sentence (``HeaderError``) instead of a crash later.

Two ways to parse:

* :func:`parse_header` parses the whole JSON (metadata and tensor entries).
* :func:`split_metadata` finds only the ``__metadata__`` object in the raw bytes and returns it with
  a digest of everything else (the *structure key*). Files written by one trainer share their
  tensor entries byte for byte, so a caller that already analysed that structure can skip parsing
  the ~800 tensor entries (see ``workbench.files._inspect``).
"""

from __future__ import annotations

import errno
import gc
import hashlib
import math
import operator
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

# ComfyUI-Lora-Manager refuses headers over 64 MiB (MAX_SAFETENSORS_HEADER_BYTES); real LoRA headers
# are well under 1 MiB even with embedded cover images.
MAX_HEADER_BYTES = 64 * 1024 * 1024
#: After long values are dropped (``read_raw_header(..., drop_strings_over=…)``), at most this much header
#: is parsed: 16 MiB of tensor entries is ~150,000 tensors, 50x a real SDXL LoRA, ~150 MB once parsed.
MAX_PARSED_HEADER_BYTES = 16 * 1024 * 1024
_READ_PIECE = 1024 * 1024

# Bits per element, as in the safetensors Rust crate's Dtype.
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "I64": 64,
    "U64": 64,
    "F64": 64,
    "C64": 64,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "F4": 4,
}

_MAX_NAME_IN_MESSAGE = 80


class HeaderError(ValueError):
    """The file is not a readable safetensors file; ``str(err)`` is a sentence for a human."""


@dataclass(slots=True)
class RawHeader:
    """The header bytes of one file plus the sizes needed to validate offsets."""

    header_len: int
    file_size: int
    raw: bytes
    #: JSON strings left out of ``raw`` (see :func:`read_raw_header`'s ``drop_strings_over``).
    dropped: int = 0

    @property
    def data_len(self) -> int:
        """Size of the tensor data area that follows the header."""
        return self.file_size - 8 - self.header_len


@dataclass(slots=True)
class SafetensorsHeader:
    """A fully parsed and validated header."""

    header_len: int
    file_size: int
    metadata: dict[str, str]
    tensors: dict[str, dict[str, Any]] = field(repr=False)


def _short(name: str) -> str:
    return repr(name if len(name) <= _MAX_NAME_IN_MESSAGE else name[:_MAX_NAME_IN_MESSAGE] + "…")


def describe_os_error(err: OSError) -> str:
    """A short sentence for an OSError met while opening a file."""
    code = err.errno
    if code in (errno.EACCES, errno.EPERM):
        return "cannot read file: permission denied"
    if code == errno.ELOOP:
        return "cannot open file: too many levels of symbolic links (symlink loop)"
    if code == errno.ENOENT:
        return "file does not exist (or is a broken symlink)"
    if code == errno.EISDIR:
        return "is a directory, not a file"
    return f"cannot read file: {err.strerror or err}"


def _file_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def open_regular_file(path: Path | str) -> tuple[int, os.stat_result]:
    """Open ``path`` read-only without ever blocking (FIFOs) and make sure it is a regular file.

    Returns ``(fd, stat)``; the caller closes ``fd``. Raises ``HeaderError`` with a sentence.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        raise HeaderError(describe_os_error(err)) from None
    try:
        st = os.fstat(fd)
    except OSError as err:
        os.close(fd)
        raise HeaderError(describe_os_error(err)) from None
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise HeaderError(f"is {_file_kind(st.st_mode)}, not a regular file")
    return fd, st


def _read_exact(fd: int, n: int, offset: int) -> bytes:
    chunks = []
    got = 0
    while got < n:
        chunk = os.pread(fd, n - got, offset + got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def read_raw_header(path: Path | str, drop_strings_over: int | None = None) -> RawHeader:
    """Read the length prefix and the header bytes, checking them against the file size.

    With ``drop_strings_over``, a header longer than that is read in pieces and every JSON string
    longer than that is replaced by a short note as it streams past (``RawHeader.dropped`` counts
    them): a 50 MB metadata value is never held in memory. What remains must fit
    :data:`MAX_PARSED_HEADER_BYTES`.
    """
    fd, st = open_regular_file(path)
    try:
        size = st.st_size
        if size == 0:
            raise HeaderError("file is empty (0 bytes)")
        try:
            prefix = os.pread(fd, 8, 0)
        except OSError as err:
            raise HeaderError(describe_os_error(err)) from None
        if len(prefix) < 8:
            raise HeaderError(f"file is {size} bytes, too short for the 8-byte header length prefix (truncated)")
        header_len = int.from_bytes(prefix, "little")
        if header_len == 0:
            raise HeaderError("header length is 0 (no JSON header)")
        if 8 + header_len > size:
            raise HeaderError(f"header length {header_len} exceeds file size {size} (truncated or not safetensors)")
        if header_len > MAX_HEADER_BYTES:
            raise HeaderError(f"header length {header_len} exceeds the {MAX_HEADER_BYTES // (1024 * 1024)} MiB cap")
        # Exactly the header: reading past it would pull tensor data from disk on a cold scan.
        dropped = 0
        try:
            if drop_strings_over is not None and header_len > drop_strings_over:
                raw, dropped, got = _read_dropping_long_strings(fd, header_len, drop_strings_over)
            else:
                raw = _read_exact(fd, header_len, 8)
                got = len(raw)
        except OSError as err:
            raise HeaderError(describe_os_error(err)) from None
        if got != header_len:
            raise HeaderError(
                f"header truncated: expected {header_len} bytes, read {got} (file changed while reading?)"
            )
        if drop_strings_over is not None and len(raw) > MAX_PARSED_HEADER_BYTES:
            raise HeaderError(
                f"header holds {len(raw)} bytes of entries besides long values, over the "
                f"{MAX_PARSED_HEADER_BYTES // (1024 * 1024)} MiB that are parsed"
            )
        return RawHeader(header_len=header_len, file_size=size, raw=raw, dropped=dropped)
    finally:
        os.close(fd)


def _json_error(raw: bytes, err: Exception) -> HeaderError:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as uerr:
        return HeaderError(f"header is not valid UTF-8 (bad byte at offset {uerr.start})")
    msg = str(err)
    if "depth" in msg or "recursion" in msg:
        return HeaderError("header JSON is nested too deeply")
    return HeaderError(f"header is not valid JSON: {msg}")


def _check_metadata(meta: Any) -> dict[str, str]:
    if meta is None:
        return {}
    if type(meta) is not dict:
        raise HeaderError(f"__metadata__ is {_json_type(meta)}, not an object")
    for key, value in meta.items():
        if type(value) is not str:
            raise HeaderError(f"__metadata__ value for {_short(key)} is {_json_type(value)}, not a string")
    return meta


def _json_type(value: Any) -> str:
    return {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a header's thousands of containers are built and read.

    It would otherwise run every few hundred new containers and walk every live object (about half
    the parse time in a scan worker); parsed JSON and the tensor analysis hold no reference cycles
    for it to find, and it runs as usual afterwards.
    """
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def parse_header(raw: bytes) -> tuple[dict[str, str], dict[str, Any]]:
    """Parse the header JSON into ``(metadata, tensor entries)``; entries are not yet validated."""
    try:
        with gc_paused():
            obj = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise _json_error(raw, err) from None
    if type(obj) is not dict:
        raise HeaderError(f"header JSON is {_json_type(obj)}, not an object")
    meta = _check_metadata(obj.pop("__metadata__", None))
    return meta, obj


def validate_tensors(tensors: dict[str, Any], data_len: int) -> None:
    """Check every tensor entry the way the safetensors loader does.

    dtype known, shape a list of non-negative ints, data_offsets inside the data area and exactly
    shape × dtype bytes long, no overlaps or gaps, and the data area fully used.
    """
    if not tensors:
        raise HeaderError("header lists no tensors")
    if _tensors_look_valid(tensors, data_len):
        return
    spans = []
    for name, info in tensors.items():
        if type(info) is not dict:
            raise HeaderError(f"tensor {_short(name)}: entry is {_json_type(info)}, not an object")
        dtype = info.get("dtype")
        bits = DTYPE_BITS.get(dtype) if type(dtype) is str else None
        if bits is None:
            raise HeaderError(f"tensor {_short(name)}: unknown dtype {_clip(dtype)}")
        shape = info.get("shape")
        if type(shape) is not list or not all(type(d) is int and d >= 0 for d in shape):
            raise HeaderError(f"tensor {_short(name)}: shape {_clip(shape)} is not a list of non-negative integers")
        offsets = info.get("data_offsets")
        if type(offsets) is not list or len(offsets) != 2 or not all(type(o) is int and o >= 0 for o in offsets):
            raise HeaderError(
                f"tensor {_short(name)}: data_offsets {_clip(offsets)} is not a pair of non-negative integers"
            )
        begin, end = offsets
        if begin > end:
            raise HeaderError(f"tensor {_short(name)}: data_offsets begin {begin} is after end {end}")
        if end > data_len:
            raise HeaderError(
                f"tensor {_short(name)}: data ends at byte {end} but the data area is only {data_len} bytes (file truncated?)"
            )
        nbits = math.prod(shape) * bits
        if nbits % 8 or nbits // 8 != end - begin:
            raise HeaderError(
                f"tensor {_short(name)}: data_offsets span {end - begin} bytes but shape {_clip(shape)} of {dtype} needs "
                f"{nbits / 8:g} bytes"
            )
        spans.append((begin, end, name))
    spans.sort()
    expected = 0
    for begin, end, name in spans:
        if begin < expected:
            raise HeaderError(
                f"tensor {_short(name)}: data_offsets [{begin}, {end}] overlap the previous tensor (ends at {expected})"
            )
        if begin > expected:
            raise HeaderError(f"tensor {_short(name)}: gap of {begin - expected} bytes before its data at {begin}")
        expected = end
    if expected != data_len:
        raise HeaderError(
            f"tensors end at byte {expected} of the data area but it holds {data_len} bytes (trailing data)"
        )


_INT_LIST_CHARS = b"0123456789,[]"


def _is_flat_int_lists(encoded: bytes, count: int) -> bool:
    """``encoded`` (orjson of a list of ``count`` lists) holds only non-nested lists of non-negative ints.

    orjson writes floats with "." or "e", booleans/null as words, negatives with "-", so only
    digits, commas and brackets remain for ints; ``count + 1`` brackets rule out nesting.
    """
    return not encoded.translate(None, _INT_LIST_CHARS) and encoded.count(b"[") == count + 1


def _tensors_look_valid(tensors: dict[str, Any], data_len: int) -> bool:
    """Vectorised check of the common all-valid case (C-level map/regex/numpy, no per-tensor Python).

    False means "some entry is bad or unusual": the caller's per-tensor loop then finds which one
    and says why.
    """
    infos = list(tensors.values())
    count = len(infos)
    try:
        if set(map(type, infos)) != {dict}:
            return False
        shapes = list(map(operator.itemgetter("shape"), infos))
        offsets = list(map(operator.itemgetter("data_offsets"), infos))
        bits = np.fromiter(
            map(DTYPE_BITS.__getitem__, map(operator.itemgetter("dtype"), infos)), dtype=np.int64, count=count
        )
        if set(map(type, shapes)) != {list} or set(map(len, offsets)) != {2}:
            return False
        offsets_json = orjson.dumps(offsets)
        if not _is_flat_int_lists(offsets_json, count) or not _is_flat_int_lists(orjson.dumps(shapes), count):
            return False
        # orjson keeps ints only up to 2**64 - 1, so uint64 holds every offset; then bound it.
        spans = np.fromstring(offsets_json.translate(None, b"[]").decode(), dtype=np.uint64, sep=",")
        if spans.size != 2 * count or int(spans.max()) >= 2**62:
            return False
        spans = spans.astype(np.int64)
        nbits = np.fromiter(map(math.prod, shapes), dtype=np.int64, count=count) * bits
    except (KeyError, TypeError, ValueError, OverflowError):  # orjson.JSONEncodeError is a TypeError
        return False
    if spans.size != 2 * count:
        return False
    begin, end = spans[0::2], spans[1::2]
    if (begin > end).any() or (end > data_len).any():
        return False
    if (nbits % 8).any() or ((nbits // 8) != (end - begin)).any():
        return False
    order = np.lexsort((end, begin))
    begin, end = begin[order], end[order]
    return bool(begin[0] == 0 and (begin[1:] == end[:-1]).all() and end[-1] == data_len)


def _clip(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "…"


# `"__metadata__"` as an object key (preceded by `{` or `,`): raw `"` bytes inside JSON strings are
# always escaped, so this cannot match inside a string value.
_METADATA_KEY = re.compile(rb'[{,]\s*("__metadata__"\s*:\s*)\{')
# A `}` that could close the metadata object: followed by `,"` (next key) or by the final `}`.
_OBJECT_END = re.compile(rb'\}(?=\s*(?:,\s*"|\}\s*\Z))')
_MAX_END_TRIES = 16


#: Python's bytes hash is SipHash-1-3 keyed with a secret drawn at interpreter start: ~2.5x faster than
#: SHA-256 over a 110 KB header, and two different headers cannot be made to collide without the secret.
#: A fixed PYTHONHASHSEED makes the key known, so then the structure key is SHA-256 as before.
_KEYED_HASH = os.environ.get("PYTHONHASHSEED", "random") == "random"


def _structure_key(data_len: int, *parts: bytes) -> bytes:
    """A key that differs, short of a forged or 2**-64 chance collision, whenever ``parts`` or ``data_len`` differ."""
    if _KEYED_HASH:
        # Two parts, each hashed on its own (128 bits together), with their lengths framing them.
        return b"k" + b"".join(
            [data_len.to_bytes(8, "little")]
            + [len(p).to_bytes(8, "little") + (hash(p) & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little") for p in parts]
        )
    digest = hashlib.sha256(data_len.to_bytes(8, "little"))
    for part in parts:
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return b"s" + digest.digest()


def split_metadata(raw: bytes, data_len: int) -> tuple[dict[str, str] | None, bytes]:
    """Parse only ``__metadata__`` and digest the rest of the header.

    Returns ``(metadata or None, structure_key)``. ``metadata`` is None when the metadata object
    could not be isolated (odd formatting, non-string values): the caller then parses everything.
    The key covers the header with the metadata object cut out, plus the data-area size, so two
    files with the same key have byte-identical tensor entries.
    """
    match = _METADATA_KEY.search(raw)
    if match is None:
        return ({} if b'"__metadata__"' not in raw else None), _structure_key(data_len, raw)
    start = match.start(1)
    obj_start = match.end()
    view = memoryview(raw)
    tries = 0
    for end_match in _OBJECT_END.finditer(raw, obj_start):
        tries += 1
        if tries > _MAX_END_TRIES:
            break
        end = end_match.end()
        try:
            meta = orjson.loads(view[obj_start - 1 : end])
        except orjson.JSONDecodeError:
            continue
        if type(meta) is not dict or not all(type(v) is str for v in meta.values()):
            break
        # Writers pad the header with spaces to a multiple of 8; the pad follows the metadata's
        # length, so it is left out of the key.
        tail = len(raw)
        while tail > end and raw[tail - 1] in b" \t\r\n":
            tail -= 1
        return meta, _structure_key(data_len, raw[:start], raw[end:tail])
    return None, _structure_key(data_len, raw)


_QUOTE_OR_BACKSLASH = re.compile(rb'["\\]')


def _read_dropping_long_strings(fd: int, length: int, limit: int) -> tuple[bytes, int, int]:
    """Read ``length`` header bytes at offset 8 in 1 MiB pieces; JSON strings over ``limit`` become notes.

    Returns ``(kept bytes, strings dropped, bytes read)``. Memory: one piece plus what is kept.
    A JSON string starts at an unescaped ``"`` outside a string and ends at the next unescaped ``"``;
    a backslash escapes the next byte, also across piece boundaries.
    """
    kept: list[bytes] = []
    current: list[bytes] = []  # pieces of the string being read, while it is still short enough to keep
    current_len = 0
    in_string = skip_next = False
    dropped = read = 0
    while read < length:
        piece = os.pread(fd, min(_READ_PIECE, length - read), 8 + read)
        if not piece:
            break
        read += len(piece)
        i = start = 0
        if skip_next:
            i, skip_next = 1, False
        n = len(piece)
        while i < n:
            if not in_string:
                j = piece.find(b'"', i)
                if j < 0:
                    break
                kept.append(piece[start:j])
                in_string, start, i, current, current_len = True, j, j + 1, [], 0
                continue
            match = _QUOTE_OR_BACKSLASH.search(piece, i)
            if match is None:
                break
            j = match.start()
            if piece[j] == 0x5C:  # backslash: skip the escaped byte (maybe the first of the next piece)
                i = j + 2
                if i > n:
                    skip_next = True
                continue
            total = current_len + (j + 1 - start)
            if total > limit:
                kept.append(b'"<%d bytes, over the cap for one value; not read>"' % total)
                dropped += 1
            else:
                kept.extend(current)
                kept.append(piece[start : j + 1])
            in_string, start, i, current, current_len = False, j + 1, j + 1, [], 0
        tail = piece[start:]
        if in_string:
            current_len += len(tail)
            if current_len <= limit:
                current.append(tail)
            else:
                current = []  # too long already: only its length is kept
        else:
            kept.append(tail)
    if in_string:  # an unterminated string: keep what there is so the parser names the problem
        kept.extend(current if current else [b'"'])
    return b"".join(kept), dropped, read


def read_header(path: Path | str) -> SafetensorsHeader:
    """Read, parse and validate a header in one go (no caching). Raises ``HeaderError``."""
    head = read_raw_header(path)
    meta, tensors = parse_header(head.raw)
    validate_tensors(tensors, head.data_len)
    return SafetensorsHeader(header_len=head.header_len, file_size=head.file_size, metadata=meta, tensors=tensors)


def read_scalar(path: Path | str, header_len: int, info: dict[str, Any]) -> float | None:
    """Read one scalar tensor (a LoRA ``alpha``): at most 8 bytes, the only tensor data ever read."""
    import struct

    fmt = {"F16": "<e", "F32": "<f", "F64": "<d", "BF16": None, "I64": "<q", "I32": "<i"}.get(str(info.get("dtype")))
    begin, end = info["data_offsets"]
    if end - begin > 8 or (fmt is None and info.get("dtype") != "BF16"):
        return None
    try:
        fd, _ = open_regular_file(path)
    except HeaderError:
        return None
    try:
        data = os.pread(fd, end - begin, 8 + header_len + begin)
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(data) != end - begin:
        return None
    if info.get("dtype") == "BF16":
        if len(data) != 2:
            return None
        return struct.unpack("<f", b"\x00\x00" + data)[0]
    if fmt is None or struct.calcsize(fmt) != len(data):
        return None
    value = float(struct.unpack(fmt, data)[0])
    return value if math.isfinite(value) else None
