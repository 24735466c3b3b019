"""safetensors header reading: the metadata-only fast path agrees with a full parse."""

from __future__ import annotations

import orjson
import pytest
from malformed_corpus import header_entries, kohya_sd15_entries, write_raw, write_safetensors

from workbench.files import HeaderError, parse_header, read_header, read_raw_header, split_metadata, validate_tensors

TRICKY_VALUES = [
    "plain",
    '{"nested": {"json": [1, 2, {"x": "}"}]}}',
    'ends with brace and comma }, "',
    "}}",
    'quote " and backslash \\ and }, "k": {"dtype": "F16"}',
    "unicode ✓ ü 漢字 \u0000 nul",
    "",
]


def _header_bytes(metadata, tensors, *, metadata_last=False, indent=False) -> bytes:
    obj = dict(tensors)
    if metadata_last:
        obj["__metadata__"] = metadata
    else:
        obj = {"__metadata__": metadata, **obj}
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2 if indent else 0)


@pytest.mark.parametrize("metadata_last", [False, True])
@pytest.mark.parametrize("indent", [False, True])
def test_split_metadata_matches_full_parse(metadata_last, indent):
    tensors, data_len = header_entries(kohya_sd15_entries(4, text_encoder=False))
    metadata = {f"k{i}": value for i, value in enumerate(TRICKY_VALUES)}
    raw = _header_bytes(metadata, tensors, metadata_last=metadata_last, indent=indent)
    fast, key = split_metadata(raw, data_len)
    full, parsed_tensors = parse_header(raw)
    assert fast == full == metadata
    assert parsed_tensors == tensors
    # Same tensors, other metadata → same structure key; other tensors or data size → another key.
    other = _header_bytes({"a": "b"}, tensors, metadata_last=metadata_last, indent=indent)
    assert split_metadata(other, data_len)[1] == key
    assert split_metadata(raw, data_len + 1)[1] != key
    tensors2, data_len2 = header_entries(kohya_sd15_entries(8, text_encoder=False))
    assert (
        split_metadata(_header_bytes(metadata, tensors2, metadata_last=metadata_last, indent=indent), data_len)[1]
        != key
    )


def test_split_metadata_without_metadata_and_with_non_string_values():
    tensors, data_len = header_entries(kohya_sd15_entries(4, text_encoder=False))
    assert split_metadata(orjson.dumps(tensors), data_len)[0] == {}
    raw = _header_bytes({"n": 8}, tensors)
    assert split_metadata(raw, data_len)[0] is None  # caller falls back to the full parse
    with pytest.raises(HeaderError, match="not a string"):
        parse_header(raw)


def test_metadata_key_inside_a_string_is_not_metadata():
    tensors, data_len = header_entries(kohya_sd15_entries(4, text_encoder=False))
    metadata = {"note": '{"__metadata__": {"fake": "yes"}}'}
    raw = _header_bytes(metadata, tensors, metadata_last=True)
    assert split_metadata(raw, data_len)[0] == metadata


def test_read_header_roundtrip(tmp_path):
    entries = kohya_sd15_entries(4)
    path = write_safetensors(tmp_path / "x.safetensors", entries, {"ss_network_dim": "4"})
    header = read_header(path)
    assert header.metadata == {"ss_network_dim": "4"}
    assert len(header.tensors) == len(entries)
    assert header.header_len % 8 == 0  # padded like the safetensors writer
    assert header.file_size == path.stat().st_size


def test_large_header_read_in_two_steps(tmp_path):
    tensors, data_len = header_entries({"t": ("F16", [2])})
    raw = orjson.dumps({"__metadata__": {"big": "x" * 600_000}, **tensors})
    path = write_raw(tmp_path / "big.safetensors", raw, data_len)
    head = read_raw_header(path)
    assert head.raw == raw and head.data_len == data_len


def test_validate_accepts_zero_sized_tensors():
    validate_tensors(
        {
            "a": {"dtype": "F32", "shape": [0, 4], "data_offsets": [0, 0]},
            "b": {"dtype": "F16", "shape": [], "data_offsets": [0, 2]},
        },
        2,
    )


def test_validate_sub_byte_dtype():
    validate_tensors({"a": {"dtype": "F4", "shape": [4], "data_offsets": [0, 2]}}, 2)
    with pytest.raises(HeaderError, match="needs"):
        validate_tensors({"a": {"dtype": "F4", "shape": [3], "data_offsets": [0, 2]}}, 2)


@pytest.mark.parametrize(
    "offsets,shape,data_len,message",
    [
        ([0, 2**63], [4], 8, "data ends at byte"),
        ([0, 2**64 - 1], [4], 8, "data ends at byte"),
        ([0, 8.0], [4], 8, "not a pair"),
        ([0, True], [4], 8, "not a pair"),
        ([[0], 8], [4], 8, "not a pair"),
        ([0, 8], [2**40, 2**40], 8, "needs"),
        ([0, 8], [4, -1], 8, "non-negative"),
        ([0, 8], [[4]], 8, "non-negative"),
    ],
)
def test_vectorised_check_never_accepts_what_the_loop_rejects(offsets, shape, data_len, message):
    tensors = {
        "a": {"dtype": "F16", "shape": [1], "data_offsets": [0, 2]},
        "b": {
            "dtype": "F16",
            "shape": shape,
            "data_offsets": [2 + o if type(o) is int else o for o in offsets]
            if all(type(o) is int for o in offsets)
            else offsets,
        },
    }
    with pytest.raises(HeaderError, match=message):
        validate_tensors(tensors, 2 + data_len)


def test_structure_key_ignores_header_padding():
    tensors, data_len = header_entries(kohya_sd15_entries(4, text_encoder=False))
    short = _header_bytes({"a": "b"}, tensors)
    longer = _header_bytes({"a": "bcd"}, tensors) + b"     "
    assert split_metadata(short, data_len)[1] == split_metadata(longer, data_len)[1]


# --- long metadata values are dropped while the header streams in (issue 14) ---------------------

_JSON_STRING = __import__("re").compile(rb'"(?:[^"\\]++|\\.)*+"')


def _oracle(raw: bytes, limit: int) -> tuple[bytes, int]:
    """The same cut done the slow way: tokenise every JSON string of the whole header with a regex."""
    parts, last, dropped = [], 0, 0
    for match in _JSON_STRING.finditer(raw):
        start, end = match.span()
        if end - start > limit:
            parts += [raw[last:start], b'"<%d bytes, over the cap for one value; not read>"' % (end - start)]
            last, dropped = end, dropped + 1
    return b"".join([*parts, raw[last:]]), dropped


@pytest.mark.parametrize("piece", [1, 2, 3, 7, 64, 1 << 20])
def test_streamed_header_drops_exactly_the_long_strings(tmp_path, monkeypatch, piece):
    import random

    from workbench.files import read_raw_header

    monkeypatch.setattr("workbench.files._header._READ_PIECE", piece)
    rng = random.Random(piece)
    for trial in range(40):
        values = {}
        for k in range(rng.randint(1, 6)):
            text = "".join(rng.choice('ab"\\\\\n{}[],:é') for _ in range(rng.choice([0, 3, 20, 90])))
            values[f"k{k}\\" + '"' * (k % 2)] = text
        raw = orjson.dumps({"__metadata__": values, "t": {"dtype": "F16", "shape": [1], "data_offsets": [0, 2]}})
        path = tmp_path / f"h{trial}.safetensors"
        path.write_bytes(len(raw).to_bytes(8, "little") + raw + b"\x00\x00")
        limit = rng.choice([5, 30, 60])
        head = read_raw_header(path, drop_strings_over=limit)
        expected, dropped = _oracle(raw, limit) if len(raw) > limit else (raw, 0)
        assert (head.raw, head.dropped) == (expected, dropped), (raw, limit)
        orjson.loads(head.raw)  # still valid JSON


def test_a_50mb_metadata_value_is_never_read_whole(tmp_path):
    from workbench.files import inspect_lora

    freq = '{"a": {' + ", ".join(f'"tag{i:07d}": {i}' for i in range(1_500_000)) + "}}"
    path = tmp_path / "big.safetensors"
    write_safetensors(path, {"t.lora_down.weight": ("F16", [2, 4])}, {"ss_tag_frequency": freq})
    row = inspect_lora(path)
    assert row["error"] is None and row["header_len"] > 20_000_000
    assert any("over the 8 MiB cap for one value" in note for note in row["sidecar_errors"])
    assert "not read" in row["metadata"]["ss_tag_frequency"]


def test_structure_key_with_a_fixed_hash_seed_does_not_use_the_known_key(tmp_path):
    """The structure key uses Python's keyed bytes hash only while its secret is random; a fixed
    PYTHONHASHSEED makes the secret known (collisions could be crafted), so the key is then SHA-256
    and the same whatever the seed."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    tensors, data_len = header_entries(kohya_sd15_entries(4, text_encoder=False))
    raws = [_header_bytes({"a": "b"}, tensors), _header_bytes({"c": "d"}, tensors)]
    other, _ = header_entries(kohya_sd15_entries(8, text_encoder=False))
    raws.append(_header_bytes({"a": "b"}, other))
    for i, raw in enumerate(raws):
        (tmp_path / f"{i}.json").write_bytes(raw)
    code = (
        "import sys, pathlib\n"
        "from workbench.files import split_metadata\n"
        f"keys = [split_metadata(pathlib.Path(sys.argv[1], f'{{i}}.json').read_bytes(), {data_len})[1] for i in range(3)]\n"
        "print(keys[0] == keys[1], keys[0] != keys[2], keys[0].hex())\n"
    )
    repo = Path(__file__).resolve().parents[1]
    outs = []
    for seed in ("1", "2", "random", "random"):
        env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=str(repo))
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True, text=True)
        same, differs, key = out.stdout.split()
        assert (same, differs) == ("True", "True"), out.stderr
        outs.append(key)
    assert outs[0] == outs[1], "a fixed seed must not change the key (SHA-256, not the seeded hash)"
    assert outs[2] != outs[3], "with a random secret the faster keyed hash is used"
