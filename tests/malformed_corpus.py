"""Builders for test LoRA files: well-formed kohya-layout headers and a corpus of broken ones.

No real kohya SD 1.5/SDXL LoRA small enough was found (shared/data/README.md), so
:func:`kohya_sd15_entries` / :func:`kohya_sdxl_entries` reproduce kohya's real module naming and
shapes, and :func:`write_safetensors` writes them with the tensor data area left sparse (the
workbench never reads it).

:func:`build_malformed_corpus` writes ≥ 50 broken files and sidecars and returns
``{relative path: expected substring}``. The substring must appear in the row's ``error`` or in
one of its ``sidecar_errors`` (sidecar cases are keyed by the LoRA they sit beside; that LoRA is
itself well formed). ``symlink_loop_dir/`` (a directory whose ``back`` entry points to itself's
parent) holds no LoRA and is not in the mapping: it is there for directory walkers.

Unreadable files: tests run as root, and ``chmod 000`` does not stop root, so permission errors
are simulated by a FIFO named ``*.safetensors`` (opening it must not block), a directory named
``*.safetensors``, a broken symlink and a symlink loop. When not running as root a real
``chmod 000`` file is added as well.
"""

from __future__ import annotations

import os
import pickle
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path

import orjson

DTYPE_BYTES = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8, "I64": 8, "U8": 1}

PICKLE_MARKER_NAME = "UNPICKLED_MARKER"

# SD 1.5 U-Net transformer blocks: (kohya module prefix, channels).
_SD15_ATTN_BLOCKS = (
    [(f"down_blocks_{b}_attentions_{a}", ch) for b, ch in ((0, 320), (1, 640), (2, 1280)) for a in (0, 1)]
    + [("mid_block_attentions_0", 1280)]
    + [(f"up_blocks_{b}_attentions_{a}", ch) for b, ch in ((1, 1280), (2, 640), (3, 320)) for a in (0, 1, 2)]
)
_SD15_RESNETS = [
    (f"down_blocks_{b}_resnets_{r}", ch) for b, ch in ((0, 320), (1, 640), (2, 1280), (3, 1280)) for r in (0, 1)
]


def _lora_module(
    entries: dict,
    module: str,
    rank: int,
    d_in: int,
    d_out: int,
    *,
    conv: tuple[int, int] | None = None,
    dtype: str = "F16",
    alpha: bool = True,
    dora: bool = False,
) -> None:
    if conv is None:
        entries[f"{module}.lora_down.weight"] = (dtype, [rank, d_in])
        entries[f"{module}.lora_up.weight"] = (dtype, [d_out, rank])
    else:
        entries[f"{module}.lora_down.weight"] = (dtype, [rank, d_in, *conv])
        entries[f"{module}.lora_up.weight"] = (dtype, [d_out, rank, 1, 1])
    if alpha:
        entries[f"{module}.alpha"] = (dtype, [])
    if dora:
        entries[f"{module}.dora_scale"] = (dtype, [1, d_in] if conv is None else [d_out, 1, 1, 1])


def kohya_sd15_entries(
    rank: int = 8,
    *,
    text_encoder: bool = True,
    conv_rank: int | None = None,
    dtype: str = "F16",
    alpha: bool = True,
    dora: bool = False,
) -> dict[str, tuple[str, list[int]]]:
    """{key: (dtype, shape)} of a kohya SD 1.5 LoRA (264 modules, 792 tensors with TE and alpha)."""
    entries: dict[str, tuple[str, list[int]]] = {}
    kw = {"dtype": dtype, "alpha": alpha, "dora": dora}
    if text_encoder:
        for layer in range(12):
            base = f"lora_te_text_model_encoder_layers_{layer}"
            for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
                _lora_module(entries, f"{base}_self_attn_{proj}", rank, 768, 768, **kw)
            _lora_module(entries, f"{base}_mlp_fc1", rank, 768, 3072, **kw)
            _lora_module(entries, f"{base}_mlp_fc2", rank, 3072, 768, **kw)
    for prefix, ch in _SD15_ATTN_BLOCKS:
        base = f"lora_unet_{prefix}"
        _lora_module(entries, f"{base}_proj_in", rank, ch, ch, conv=(1, 1), **kw)
        _lora_module(entries, f"{base}_proj_out", rank, ch, ch, conv=(1, 1), **kw)
        tb = f"{base}_transformer_blocks_0"
        for attn in ("attn1", "attn2"):
            for proj in ("to_q", "to_k", "to_v", "to_out_0"):
                d_in = 768 if attn == "attn2" and proj in ("to_k", "to_v") else ch
                _lora_module(entries, f"{tb}_{attn}_{proj}", rank, d_in, ch, **kw)
        _lora_module(entries, f"{tb}_ff_net_0_proj", rank, ch, ch * 8, **kw)
        _lora_module(entries, f"{tb}_ff_net_2", rank, ch * 4, ch, **kw)
    if conv_rank:
        for prefix, ch in _SD15_RESNETS:
            for conv in ("conv1", "conv2"):
                _lora_module(entries, f"lora_unet_{prefix}_{conv}", conv_rank, ch, ch, conv=(3, 3), **kw)
    return entries


def kohya_sdxl_entries(rank: int = 16, *, dtype: str = "F16") -> dict[str, tuple[str, list[int]]]:
    """A trimmed kohya SDXL LoRA: both text encoders and a few SGM-named U-Net blocks."""
    entries: dict[str, tuple[str, list[int]]] = {}
    for te, width, layers in (("lora_te1", 768, 2), ("lora_te2", 1280, 2)):
        for layer in range(layers):
            for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
                _lora_module(
                    entries, f"{te}_text_model_encoder_layers_{layer}_self_attn_{proj}", rank, width, width, dtype=dtype
                )
    for block, ch in (
        ("input_blocks_4_1", 640),
        ("input_blocks_7_1", 1280),
        ("middle_block_1", 1280),
        ("output_blocks_0_1", 1280),
    ):
        tb = f"lora_unet_{block}_transformer_blocks_0"
        for attn in ("attn1", "attn2"):
            for proj in ("to_q", "to_k", "to_v", "to_out_0"):
                d_in = 2048 if attn == "attn2" and proj in ("to_k", "to_v") else ch
                _lora_module(entries, f"{tb}_{attn}_{proj}", rank, d_in, ch, dtype=dtype)
    return entries


def header_entries(entries: Mapping[str, tuple[str, list[int]]]) -> tuple[dict[str, dict], int]:
    """safetensors header entries with contiguous data_offsets (sorted by name) and the data size."""
    out: dict[str, dict] = {}
    offset = 0
    for key in sorted(entries):
        dtype, shape = entries[key]
        size = DTYPE_BYTES[dtype]
        for dim in shape:
            size *= dim
        out[key] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    return out, offset


def write_raw(path: Path, header: bytes, data_len: int, *, length: int | None = None) -> Path:
    """Write ``<u64 length><header>`` and a sparse data area of ``data_len`` bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(header) if length is None else length))
        handle.write(header)
        if data_len:
            handle.truncate(8 + len(header) + data_len)
    return path


def write_safetensors(
    path: Path,
    entries: Mapping[str, tuple[str, list[int]]],
    metadata: Mapping[str, str] | None = None,
    *,
    alpha_value: float | None = None,
) -> Path:
    """Write a header-valid safetensors file (data area sparse zeros, or alpha scalars filled in)."""
    tensors, data_len = header_entries(entries)
    obj: dict = {}
    if metadata is not None:
        obj["__metadata__"] = dict(metadata)
    obj.update(tensors)
    header = orjson.dumps(obj)
    header += b" " * (-len(header) % 8)
    write_raw(path, header, data_len)
    if alpha_value is not None:
        with open(path, "r+b") as handle:
            for key, info in tensors.items():
                if key.endswith(".alpha"):
                    dtype = info["dtype"]
                    fmt = {"F16": "<e", "F32": "<f", "F64": "<d"}[dtype]
                    handle.seek(8 + len(header) + info["data_offsets"][0])
                    handle.write(struct.pack(fmt, alpha_value))
    return path


def kohya_metadata(
    rank: int = 8,
    alpha: float = 4,
    *,
    tags: Iterable[str] = ("1girl", "solo", "smile"),
    output_name: str = "my_lora",
    base: str = "sd_v1",
) -> dict[str, str]:
    """A realistic kohya ``__metadata__`` map (values are strings; nested ones JSON strings)."""
    tags = list(tags)
    freq = {"10_mychar": {tag: 20 - i for i, tag in enumerate(tags)}, "5_style": {tags[0]: 3}}
    return {
        "ss_output_name": output_name,
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(rank),
        "ss_network_alpha": str(alpha),
        "ss_network_args": "{}",
        "ss_base_model_version": base,
        "ss_v2": "False",
        "ss_sd_model_name": "v1-5-pruned-emaonly.safetensors",
        "ss_learning_rate": "0.0001",
        "ss_epoch": "10",
        "ss_steps": "1500",
        "ss_seed": "42",
        "ss_clip_skip": "2",
        "ss_resolution": "(512, 512)",
        "ss_num_train_images": "150",
        "ss_tag_frequency": orjson.dumps(freq).decode(),
        "ss_dataset_dirs": orjson.dumps({"10_mychar": {"n_repeats": 10, "img_count": 15}}).decode(),
        "ss_bucket_info": orjson.dumps({"buckets": {"0": {"resolution": [512, 512], "count": 150}}}).decode(),
        "ss_training_comment": "None",
        "sshs_model_hash": "a" * 64,
    }


# --- the malformed corpus ------------------------------------------------------------------------


class _Unpickled:
    """Unpickling this creates a marker file: proof that a pickle was opened."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _tiny_entries() -> dict[str, tuple[str, list[int]]]:
    return {
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": ("F16", [2, 4]),
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": ("F16", [4, 2]),
    }


def _header(obj) -> bytes:
    return obj if isinstance(obj, bytes) else orjson.dumps(obj)


def build_malformed_corpus(dest: Path) -> dict[str, str]:
    """Write broken LoRA files and sidecars under ``dest``; return ``{relative path: expected substring}``."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    cases: dict[str, str] = {}
    good_tensors, good_len = header_entries(_tiny_entries())
    good_header = orjson.dumps(good_tensors)

    def raw(
        name: str, header: bytes | dict | list, data_len: int = 0, expect: str = "", *, length: int | None = None
    ) -> None:
        write_raw(dest / name, _header(header), data_len, length=length)
        cases[name] = expect

    def entry(name: str, info, expect: str, data_len: int = 64) -> None:
        raw(name, {"t.lora_down.weight": info}, data_len, expect)

    # Length prefix and file-level problems.
    (dest / "zero_bytes.safetensors").write_bytes(b"")
    cases["zero_bytes.safetensors"] = "empty (0 bytes)"
    (dest / "truncated_prefix.safetensors").write_bytes(b"\x10\x00\x00")
    cases["truncated_prefix.safetensors"] = "too short for the 8-byte header length prefix"
    (dest / "prefix_only.safetensors").write_bytes(struct.pack("<Q", 100))
    cases["prefix_only.safetensors"] = "exceeds file size 8"
    raw("zero_header_len.safetensors", good_header, good_len, "header length is 0", length=0)
    raw(
        "huge_header_len.safetensors",
        b"{}",
        80 * 1024 * 1024,
        "exceeds the 64 MiB cap",  # sparse file
        length=65 * 1024 * 1024,
    )
    raw("header_len_2_40.safetensors", b"{}", 0, "header length 1099511627776 exceeds file size", length=2**40)
    raw(
        "header_len_past_eof.safetensors",
        b"{}" + b" " * 802,
        0,
        "header length 4294967296 exceeds file size 812",
        length=2**32,
    )
    raw(
        "truncated_header.safetensors",
        good_header[: len(good_header) // 2],
        0,
        "exceeds file size",
        length=len(good_header),
    )
    raw("truncated_data.safetensors", good_header, good_len - 5, "file truncated?")
    raw("truncated_last_byte.safetensors", good_header, good_len - 1, "data area is only")
    raw("trailing_data.safetensors", good_header, good_len + 16, "trailing data")
    # Encoding and JSON shape.
    raw("invalid_utf8.safetensors", b'{"\xff\xfe": {"dtype": "F16"}}', 0, "not valid UTF-8")
    raw("utf8_bom.safetensors", b"\xef\xbb\xbf" + good_header, good_len, "not valid JSON")
    raw("bad_json.safetensors", b'{"a": {"dtype": "F16",}', 0, "not valid JSON")
    raw("trailing_garbage_json.safetensors", good_header + b"xx", good_len, "not valid JSON")
    raw("nan_in_json.safetensors", b'{"a": NaN}', 0, "not valid JSON")
    raw("json_array.safetensors", b"[1, 2, 3]", 0, "header JSON is an array, not an object")
    raw("json_string.safetensors", b'"hello"', 0, "string, not an object")
    raw("json_null.safetensors", b"null", 0, "null, not an object")
    raw("json_number.safetensors", b"12345678", 0, "number, not an object")
    raw("deeply_nested.safetensors", b"[" * 100_000 + b"]" * 100_000, 0, "nested too deeply")
    raw("deeply_nested_object.safetensors", b'{"a":' * 5000 + b"1" + b"}" * 5000, 0, "nested too deeply")
    raw("empty_object.safetensors", b"{}", 0, "no tensors")
    raw("metadata_only.safetensors", {"__metadata__": {"ss_network_dim": "8"}}, 0, "no tensors")
    raw(
        "metadata_not_object.safetensors", {"__metadata__": ["a"], **good_tensors}, good_len, "__metadata__ is an array"
    )
    raw(
        "metadata_value_number.safetensors",
        {"__metadata__": {"ss_network_dim": 8}, **good_tensors},
        good_len,
        "not a string",
    )
    raw(
        "metadata_value_nested.safetensors",
        {"__metadata__": {"ss_tag_frequency": {"a": {"b": 1}}}, **good_tensors},
        good_len,
        "not a string",
    )
    # Tensor entries.
    entry("entry_is_list.safetensors", [1, 2], "entry is an array")
    entry("entry_is_string.safetensors", "F16", "entry is a string")
    entry("entry_is_null.safetensors", None, "entry is null")
    entry(
        "unknown_dtype.safetensors", {"dtype": "F17", "shape": [2, 4], "data_offsets": [0, 16]}, "unknown dtype 'F17'"
    )
    entry("dtype_not_string.safetensors", {"dtype": 16, "shape": [2, 4], "data_offsets": [0, 16]}, "unknown dtype 16")
    entry("missing_dtype.safetensors", {"shape": [2, 4], "data_offsets": [0, 16]}, "unknown dtype None")
    entry(
        "shape_not_list.safetensors",
        {"dtype": "F16", "shape": "2x4", "data_offsets": [0, 16]},
        "not a list of non-negative",
    )
    entry(
        "shape_negative.safetensors",
        {"dtype": "F16", "shape": [-2, 4], "data_offsets": [0, 16]},
        "not a list of non-negative",
    )
    entry(
        "shape_float.safetensors",
        {"dtype": "F16", "shape": [2.0, 4], "data_offsets": [0, 16]},
        "not a list of non-negative",
    )
    entry(
        "shape_bool.safetensors",
        {"dtype": "F16", "shape": [True, 4], "data_offsets": [0, 8]},
        "not a list of non-negative",
    )
    entry(
        "shape_nested.safetensors",
        {"dtype": "F16", "shape": [[2], 4], "data_offsets": [0, 16]},
        "not a list of non-negative",
    )
    raw(
        "shape_huge_int.safetensors",
        b'{"t":{"dtype":"F16","shape":[99999999999999999999999],"data_offsets":[0,2]}}',
        2,
        "not a list of non-negative",
    )
    entry("offsets_missing.safetensors", {"dtype": "F16", "shape": [2, 4]}, "not a pair")
    entry("offsets_three.safetensors", {"dtype": "F16", "shape": [2, 4], "data_offsets": [0, 8, 16]}, "not a pair")
    entry("offsets_strings.safetensors", {"dtype": "F16", "shape": [2, 4], "data_offsets": ["0", "16"]}, "not a pair")
    entry("offsets_reversed.safetensors", {"dtype": "F16", "shape": [2, 4], "data_offsets": [16, 0]}, "is after end")
    entry(
        "offsets_past_data.safetensors",
        {"dtype": "F16", "shape": [2, 4], "data_offsets": [0, 16]},
        "data area is only 8 bytes",
        data_len=8,
    )
    entry(
        "offsets_size_mismatch.safetensors",
        {"dtype": "F16", "shape": [2, 4], "data_offsets": [0, 12]},
        "needs 16 bytes",
        data_len=12,
    )
    raw(
        "offsets_overlap.safetensors",
        {
            "a": {"dtype": "F16", "shape": [4], "data_offsets": [0, 8]},
            "b": {"dtype": "F16", "shape": [4], "data_offsets": [4, 12]},
        },
        12,
        "overlap",
    )
    raw(
        "offsets_gap.safetensors",
        {
            "a": {"dtype": "F16", "shape": [4], "data_offsets": [0, 8]},
            "b": {"dtype": "F16", "shape": [4], "data_offsets": [16, 24]},
        },
        24,
        "gap of 8 bytes",
    )
    raw(
        "offsets_duplicate.safetensors",
        {
            "a": {"dtype": "F16", "shape": [4], "data_offsets": [0, 8]},
            "b": {"dtype": "F16", "shape": [4], "data_offsets": [0, 8]},
        },
        8,
        "overlap",
    )
    # Not regular files / unreadable.
    (dest / "directory.safetensors").mkdir(exist_ok=True)
    cases["directory.safetensors"] = "directory"
    os.mkfifo(dest / "fifo.safetensors")
    cases["fifo.safetensors"] = "FIFO"
    os.symlink("does_not_exist.safetensors", dest / "broken_link.safetensors")
    cases["broken_link.safetensors"] = "does not exist"
    os.symlink("self_loop.safetensors", dest / "self_loop.safetensors")
    cases["self_loop.safetensors"] = "symlink loop"
    (dest / "symlink_loop_dir").mkdir(exist_ok=True)
    os.symlink("..", dest / "symlink_loop_dir" / "back")
    if os.geteuid() != 0:
        no_access = write_safetensors(dest / "no_permission.safetensors", _tiny_entries())
        no_access.chmod(0)
        cases["no_permission.safetensors"] = "permission denied"
    # Pickles: unpickling any of these would create the marker file.
    marker = str(dest / PICKLE_MARKER_NAME)
    for suffix in ("ckpt", "pt", "bin"):
        (dest / f"pickle_bomb.{suffix}").write_bytes(pickle.dumps(_Unpickled(marker)))
        cases[f"pickle_bomb.{suffix}"] = "pickles, which are never opened"

    # Sidecars beside well-formed LoRAs.
    def sidecar(stem: str, suffix: str, content: bytes | dict | list, expect: str) -> None:
        lora = dest / "sidecars" / f"{stem}.safetensors"
        write_safetensors(lora, _tiny_entries())
        (dest / "sidecars" / f"{stem}{suffix}").write_bytes(
            content if isinstance(content, bytes) else orjson.dumps(content)
        )
        cases[f"sidecars/{stem}.safetensors"] = expect

    sidecar("info_array", ".civitai.info", [1, 2], "civitai.info: JSON is an array")
    sidecar("info_bad_json", ".civitai.info", b"{'single': 'quotes'}", "civitai.info: not valid JSON")
    sidecar("info_bad_utf8", ".civitai.info", b'{"name": "\xff\xfe"}', "civitai.info: not valid UTF-8")
    sidecar(
        "info_wrong_types",
        ".civitai.info",
        {"id": "abc", "modelId": 3.5, "trainedWords": "word", "baseModel": 15, "files": {"x": 1}, "model": "name"},
        "civitai.info: trainedWords is a string, expected a list",
    )
    sidecar("info_nested", ".civitai.info", b'{"a":' * 200 + b"1" + b"}" * 200, "nested deeper than")
    sidecar("info_nested_extreme", ".civitai.info", b"[" * 50_000 + b"]" * 50_000, "nested too deeply")
    sidecar(
        "a1111_not_found",
        ".json",
        {
            "description": "x",
            "modelId": "Model not found",
            "modelVersionId": "Model not found",
            "sha256": "Model not found",
        },
        "a1111.json: modelId is 'Model not found' (treated as absent)",
    )
    sidecar(
        "a1111_wrong_types",
        ".json",
        {"description": ["a"], "sd version": 1, "activation text": 5, "preferred weight": "heavy", "notes": {}},
        "a1111.json: preferred weight is a string, expected a number",
    )
    sidecar("a1111_string", ".json", b'"just a string"', "JSON is a string, not an object")
    sidecar(
        "sdnext_bad_versions",
        ".json",
        {"name": "m", "modelVersions": "none"},
        "civitai.model.json: modelVersions is a string, expected a list",
    )
    sidecar(
        "lm_bad_tips",
        ".metadata.json",
        {"model_name": "x", "usage_tips": "{not json", "civitai": []},
        "lm.metadata.json: usage_tips is not valid JSON",
    )
    sidecar(
        "lm_bad_civitai",
        ".metadata.json",
        {"model_name": "x", "civitai": "gone", "tags": [1, "a"]},
        "lm.metadata.json: civitai is a string, expected an object",
    )
    sidecar("txt_bad_utf8", ".txt", b"caf\xe9 description", "description.txt: not valid UTF-8")
    lora = write_safetensors(dest / "sidecars" / "huge_sidecar.safetensors", _tiny_entries())
    with open(dest / "sidecars" / "huge_sidecar.civitai.info", "wb") as handle:
        handle.truncate(17 * 1024 * 1024)  # sparse: costs no disk
    cases[f"sidecars/{lora.name}"] = "over the 16 MiB sidecar cap"
    write_safetensors(dest / "sidecars" / "sidecar_is_fifo.safetensors", _tiny_entries())
    os.mkfifo(dest / "sidecars" / "sidecar_is_fifo.metadata.json")
    cases["sidecars/sidecar_is_fifo.safetensors"] = "lm.metadata.json: not a regular file"
    return cases
