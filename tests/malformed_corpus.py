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
    cases[f"sidecars/{lora.name}"] = "over the 8 MiB sidecar cap"
    write_safetensors(dest / "sidecars" / "sidecar_is_fifo.safetensors", _tiny_entries())
    os.mkfifo(dest / "sidecars" / "sidecar_is_fifo.metadata.json")
    cases["sidecars/sidecar_is_fifo.safetensors"] = "lm.metadata.json: not a regular file"
    return cases


# --- the hostile corpus (issue 14): bounds, names, links -------------------------------------------

#: Text planted in every file outside the library; it must never reach the catalog.
OUTSIDE_SECRET = "OUTSIDE-SECRET-7f3a9c"
#: Paths outside any library that hostile links point at; none may ever be opened by a scan.
SYSTEM_TARGETS = ("/proc/self/environ", "/etc/passwd", "/dev/zero")


def _png_bytes(width: int = 4, height: int = 4) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


def build_outside_bait(outside: Path) -> Path:
    """Files outside the library, each holding :data:`OUTSIDE_SECRET`, for links to point at."""
    outside.mkdir(parents=True, exist_ok=True)
    bait = {"description": OUTSIDE_SECRET, "trainedWords": [OUTSIDE_SECRET], "model_name": OUTSIDE_SECRET}
    (outside / "bait.json").write_bytes(orjson.dumps(bait))
    (outside / "bait.txt").write_text(OUTSIDE_SECRET)
    (outside / "bait.png").write_bytes(_png_bytes())
    write_safetensors(outside / "bait.safetensors", _tiny_entries(), {"ss_output_name": OUTSIDE_SECRET})
    (outside / "bait_dir").mkdir(exist_ok=True)
    write_safetensors(outside / "bait_dir" / "inner.safetensors", _tiny_entries(), {"ss_output_name": OUTSIDE_SECRET})
    return outside


def _fsname(name: bytes) -> str:
    return os.fsdecode(name)


def build_hostile_corpus(dest: Path, outside: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Write the hostile library of issue 14 under ``dest`` (links point into ``outside`` and the system).

    Returns ``(cases, folder_links)``. ``cases`` maps a LoRA's relative path (``os.fsdecode`` form:
    non-UTF-8 bytes as surrogates) to the substring expected in its ``error`` or ``sidecar_errors``;
    ``""`` means "catalogued without an error". ``folder_links`` maps a folder link's name to the
    substring expected in the scan's ``skipped_dirs`` (such folders are never walked).
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    build_outside_bait(Path(outside))
    cases: dict[str, str] = {}
    folder_links: dict[str, str] = {}
    good_tensors, good_len = header_entries(_tiny_entries())

    def lora(rel: str, metadata: Mapping[str, str] | None = None, expect: str = "") -> Path:
        path = write_safetensors(dest / rel, _tiny_entries(), metadata)
        cases[rel] = expect
        return path

    def header(rel: str, obj: bytes | dict, expect: str, data_len: int = 0) -> None:
        write_raw(dest / rel, _header(obj), data_len)
        cases[rel] = expect

    def meta(rel: str, md: Mapping[str, str], expect: str = "") -> None:
        lora(f"meta/{rel}.safetensors", md, expect)

    # Training metadata the probe found (ss_tag_frequency counts outside 64 bits) and its relatives.
    def freq(rel: str, value: object, expect: str = "") -> None:
        text = value if isinstance(value, str) else orjson.dumps(value).decode()
        meta(rel, {"ss_tag_frequency": text}, expect)

    freq("tagfreq_u64_max", '{"10_a": {"girl": 18446744073709551615, "solo": 3}}')
    freq("tagfreq_1e308", '{"10_a": {"girl": 1e308, "solo": 3}}')
    freq("tagfreq_sum_overflow", '{"a": {"girl": 18446744073709551615}, "b": {"girl": 18446744073709551615}}')
    freq("tagfreq_beyond_u64", '{"a": {"girl": 999999999999999999999999999999}}')
    freq("tagfreq_negative", {"a": {"girl": -5, "solo": 2}})
    freq("tagfreq_string_counts", {"a": {"girl": "12", "solo": None, "x": [1]}})
    freq("tagfreq_not_object", [["girl", 3]])
    freq("tagfreq_dir_not_object", {"a": ["girl"], "b": "solo"})
    freq("tagfreq_invalid_json", '{"a": {"girl": 3,}')
    freq("tagfreq_nested_deep", '{"a":' * 200 + "1" + "}" * 200)
    freq("tagfreq_empty_tags", {"a": {"": 5, "  ": 2, " girl ": 3}})
    freq("tagfreq_many_dirs", {f"{i}_dir": {"girl": 1} for i in range(20_000)})
    freq("tagfreq_100k_tags", {"a": {f"tag{i}": i % 97 for i in range(100_000)}})
    freq("tagfreq_12mb", {"a": {f"tag_{i:08d}_" + "x" * 40: 1 for i in range(220_000)}}, "over the 8 MiB cap")
    freq("tagfreq_nan_text", '{"a": {"girl": NaN}}')
    # Other metadata values: huge, numeric edge cases, control characters.
    meta("network_dim_1e400", {"ss_network_dim": "1e400", "ss_network_alpha": "1e400"})
    meta("network_dim_huge_int", {"ss_network_dim": "9" * 40, "ss_network_alpha": "-" + "9" * 40})
    meta("network_alpha_nan", {"ss_network_alpha": "nan", "ss_network_dim": "inf"})
    meta("training_comment_2mb", {"ss_training_comment": "c" * 2_000_000})
    meta("output_name_1mb", {"ss_output_name": "n" * 1_000_000})
    meta("description_5mb", {"ssmd_description": "d" * 5_000_000})
    meta("keywords_100k", {"ssmd_keywords": ",".join(f"word{i}" for i in range(100_000))})
    meta("tags_1m", {"ssmd_tags": ",".join(f"t{i}" for i in range(1_000_000))})
    meta("many_keys_100k", {f"key_{i}": "v" * 20 for i in range(100_000)})
    meta("key_1mb", {"k" * 1_000_000: "v"})
    meta("cover_images_garbage", {"ssmd_cover_images": '["' + "A" * 3_000_000 + '"]'})
    meta("thumbnail_not_image", {"modelspec.thumbnail": "data:image/png;base64," + "QUFB" * 500_000})
    meta("nul_characters", {"ss_output_name": "nul\x00name", "ssmd_description": "a\x00b"})
    meta("control_and_bidi", {"ss_output_name": "\u202eevil\u202c\x1b[31m", "ssmd_author": "\x07bell"})
    meta("html_injection", {"ss_output_name": "<img src=x onerror=alert(1)>", "ssmd_keywords": "<script>x</script>"})
    meta("dataset_dirs_deep", {"ss_dataset_dirs": "[" * 10_000 + "]" * 10_000})
    meta("network_args_not_json", {"ss_network_args": "{lokr", "ss_network_module": "lycoris.kohya"})
    meta("base_model_1mb", {"ss_base_model_version": "x" * 1_000_000, "modelspec.architecture": "y" * 100_000})
    # Header-level hostility beyond the malformed corpus.
    entry = {"dtype": "Q" * 1_000_000, "shape": [2, 4], "data_offsets": [0, 16]}
    header("header/dtype_1mb.safetensors", {"t": entry}, "unknown dtype", 16)
    entry = {"dtype": "X", "shape": [2, 4], "data_offsets": [0, 16]}
    header("header/tensor_name_1mb.safetensors", {"n" * 1_000_000: entry}, "unknown dtype", 16)
    entry = {"dtype": "F16", "shape": [1] * 200_000, "data_offsets": [0, 4]}
    header("header/shape_200k_dims.safetensors", {"t": entry}, "needs 2 bytes", 4)
    entry = {"dtype": "F16", "shape": [2, 4], "data_offsets": [0, 2**64 - 1]}
    header("header/offset_u64_max.safetensors", {"t": entry}, "data area is only", 16)
    entry = {"dtype": "F16", "shape": [2**62, 2**62], "data_offsets": [0, 16]}
    header("header/shape_product_huge.safetensors", {"t": entry}, "needs", 16)
    header("header/lone_surrogate_escape.safetensors", b'{"\\udcff": {"dtype": "F16"}}', "not valid JSON")
    header("header/metadata_lone_surrogate.safetensors", b'{"__metadata__": {"a": "\\ud800"}}', "not valid JSON")
    header(
        "header/duplicate_metadata.safetensors",
        b'{"__metadata__": {"a": "1"}, "__metadata__": {"a": "2"},' + orjson.dumps(good_tensors)[1:],
        "",
        good_len,
    )
    many = {f"t{i}": {"dtype": "F16", "shape": [1], "data_offsets": [2 * i, 2 * i + 2]} for i in range(50_000)}
    header("header/tensors_50k.safetensors", many, "", 100_000)
    header("header/metadata_array_of_1m.safetensors", b'{"__metadata__": [' + b"1," * 1_000_000 + b"1]}", "an array")

    # File and folder names that are not UTF-8 (the probe's bad\xff.safetensors) and other odd names.
    names = dest / "names"
    names.mkdir(exist_ok=True)
    for raw_name in (
        b"bad\xff.safetensors",
        b"caf\xe9.safetensors",
        b"overlong\xc0\xaf.safetensors",
        b"cesu\xed\xa0\x80.safetensors",
        b"only\x80\x81\x82.safetensors",
    ):
        name = _fsname(raw_name)
        write_safetensors(names / name, _tiny_entries(), {"ss_output_name": "named"})
        cases[f"names/{name}"] = ""
    for raw_dir in (b"dir\xfe", b"\xff\xfe"):
        folder = names / _fsname(raw_dir)
        write_safetensors(folder / "inner.safetensors", _tiny_entries())
        cases[f"names/{_fsname(raw_dir)}/inner.safetensors"] = ""
    for name in (
        "literal\\xff.safetensors",
        "back\\slash.safetensors",
        "new\nline.safetensors",
        "x" * 240 + ".safetensors",
        "<img src=x onerror=alert(1)>.safetensors",
        "tab\tand space .safetensors",
        "emoji😀.safetensors",
    ):
        write_safetensors(names / name, _tiny_entries())
        cases[f"names/{name}"] = ""
    broken = _fsname(b"broken\xff.safetensors")
    write_raw(names / broken, b"{}", 0)
    cases[f"names/{broken}"] = "no tensors"
    with_sidecar = _fsname(b"side\xff.safetensors")
    write_safetensors(names / with_sidecar, _tiny_entries())
    (names / _fsname(b"side\xff.civitai.info")).write_bytes(orjson.dumps({"id": 5, "trainedWords": ["ink"]}))
    (names / _fsname(b"side\xff.preview.png")).write_bytes(_png_bytes())
    cases[f"names/{with_sidecar}"] = ""
    wrong = _fsname(b"wrong\xff.safetensors")
    write_safetensors(names / wrong, _tiny_entries())
    (names / _fsname(b"wrong\xff.json")).write_bytes(orjson.dumps({"preferred weight": "heavy"}))
    cases[f"names/{wrong}"] = "preferred weight is a string"

    # Links: sidecars, previews and LoRA files that resolve outside the root, and non-regular files.
    links = dest / "links"
    links.mkdir(exist_ok=True)
    bait_for = {".civitai.info": "bait.json", ".json": "bait.json", ".metadata.json": "bait.json", ".txt": "bait.txt"}
    for suffix, bait in bait_for.items():
        tag = suffix.strip(".").replace(".", "_")
        for target_name, target in (
            ("environ", "/proc/self/environ"),
            ("passwd", "/etc/passwd"),
            ("outside", str(Path(outside) / bait)),
            ("outside_relative", os.path.relpath(Path(outside) / bait, links)),
        ):
            stem = f"side_{tag}_{target_name}"
            write_safetensors(links / f"{stem}.safetensors", _tiny_entries())
            os.symlink(target, links / f"{stem}{suffix}")
            cases[f"links/{stem}.safetensors"] = "links outside the library root"
        stem = f"side_{tag}_fifo"
        write_safetensors(links / f"{stem}.safetensors", _tiny_entries())
        os.mkfifo(links / f"{stem}{suffix}")
        cases[f"links/{stem}.safetensors"] = "not a regular file"
        stem = f"side_{tag}_dir"
        write_safetensors(links / f"{stem}.safetensors", _tiny_entries())
        (links / f"{stem}{suffix}").mkdir()
        cases[f"links/{stem}.safetensors"] = "not a regular file"
        stem = f"side_{tag}_broken"
        write_safetensors(links / f"{stem}.safetensors", _tiny_entries())
        os.symlink("nowhere" + suffix, links / f"{stem}{suffix}")
        cases[f"links/{stem}.safetensors"] = "cannot read"
    write_safetensors(links / "side_description_environ.safetensors", _tiny_entries())
    os.symlink("/proc/self/environ", links / "side_description_environ.description.txt")
    cases["links/side_description_environ.safetensors"] = "links outside the library root"
    # A sidecar linked to another file inside the root is fine.
    (links / "shared").mkdir()
    (links / "shared" / "info.json").write_bytes(orjson.dumps({"id": 9, "trainedWords": ["inside"]}))
    write_safetensors(links / "side_inside_link.safetensors", _tiny_entries())
    os.symlink("shared/info.json", links / "side_inside_link.civitai.info")
    cases["links/side_inside_link.safetensors"] = ""
    for target_name, target in (
        ("environ", "/proc/self/environ"),
        ("zero", "/dev/zero"),
        ("outside", str(Path(outside) / "bait.png")),
    ):
        stem = f"preview_{target_name}"
        write_safetensors(links / f"{stem}.safetensors", _tiny_entries())
        os.symlink(target, links / f"{stem}.preview.png")
        cases[f"links/{stem}.safetensors"] = "links outside the library root"
    write_safetensors(links / "preview_fifo.safetensors", _tiny_entries())
    os.mkfifo(links / "preview_fifo.preview.png")
    cases["links/preview_fifo.safetensors"] = "not a regular file"
    write_safetensors(links / "preview_dir.safetensors", _tiny_entries())
    (links / "preview_dir.png").mkdir()
    cases["links/preview_dir.safetensors"] = "not a regular file"
    write_safetensors(links / "preview_broken.safetensors", _tiny_entries())
    os.symlink("nowhere.png", links / "preview_broken.preview.png")
    cases["links/preview_broken.safetensors"] = "cannot read"
    for target_name, target in (
        ("outside", str(Path(outside) / "bait.safetensors")),
        ("outside_relative", os.path.relpath(Path(outside) / "bait.safetensors", links)),
    ):
        os.symlink(target, links / f"lora_{target_name}.safetensors")
        cases[f"links/lora_{target_name}.safetensors"] = "links outside the library root"
    for target_name, target in (("environ", "/proc/self/environ"), ("passwd", "/etc/passwd"), ("zero", "/dev/zero")):
        os.symlink(target, links / f"lora_{target_name}.safetensors")
        cases[f"links/lora_{target_name}.safetensors"] = "never followed"
    os.symlink(Path(outside) / "bait_dir", links / "folder_named.safetensors")
    cases["links/folder_named.safetensors"] = "links outside the library root"
    for name, target, expect in (
        ("to_root", "/", "never followed"),
        ("to_proc", "/proc", "never followed"),
        ("to_sys", "/sys", "never followed"),
        ("to_usr", "/usr", "never followed"),
        ("to_etc", "/etc", "never followed"),
        ("to_dev", "/dev", "never followed"),
        ("to_outside", str(Path(outside) / "bait_dir"), "outside the library root"),
        ("to_outside_relative", os.path.relpath(Path(outside) / "bait_dir", links), "outside the library root"),
    ):
        os.symlink(target, links / name)
        folder_links[f"links/{name}"] = expect

    # Sidecars that are large, long or numerically hostile (bounded cost, bounded storage).
    def side(stem: str, suffix: str, content: bytes | dict | list | str, expect: str = "") -> None:
        folder = dest / "bounds"
        write_safetensors(folder / f"{stem}.safetensors", _tiny_entries())
        if isinstance(content, str):
            content = content.encode()
        elif not isinstance(content, bytes):
            content = orjson.dumps(content)
        (folder / f"{stem}{suffix}").write_bytes(content)
        cases[f"bounds/{stem}.safetensors"] = expect

    side("trained_words_100k", ".civitai.info", {"trainedWords": [f"w{i}" for i in range(100_000)]}, "first 1000 kept")
    side("trained_words_dupes", ".civitai.info", {"trainedWords": ["same"] * 200_000}, "only the first 4000 read")
    side("tags_1m", ".metadata.json", {"tags": [f"t{i}" for i in range(1_000_000)]}, "over the 8 MiB sidecar cap")
    side("tags_300k", ".metadata.json", {"tags": [f"t{i}" for i in range(300_000)]}, "first 1000 kept")
    side("tags_dicts_100k", ".civitai.info", {"model": {"tags": [{"name": f"t{i}"} for i in range(100_000)]}}, "kept")
    side("activation_100k", ".json", {"activation text": ",".join(f"a{i}" for i in range(100_000))}, "first 1000")
    side("words_non_text", ".civitai.info", {"trainedWords": [1, None, {}, [], "ok"]}, "4 non-text item(s)")
    side("word_1mb", ".civitai.info", {"trainedWords": ["w" * 1_000_000]})
    big_images = [{"url": f"https://x/{i}.png", "meta": {"prompt": "p" * 300}} for i in range(40_000)]
    side("info_15mb", ".civitai.info", {"id": 1, "images": big_images}, "over the 8 MiB sidecar cap")
    side("info_7mb", ".civitai.info", {"id": 1, "images": big_images[:18_000]})
    side("images_100k", ".civitai.info", {"images": [{"url": "ftp://no"}] * 100_000})
    side("files_100k", ".civitai.info", {"files": [{"name": f"f{i}", "primary": False} for i in range(100_000)]})
    side("versions_10k", ".json", {"name": "m", "modelVersions": [{"id": i + 1, "files": []} for i in range(10_000)]})
    side("keys_100k", ".civitai.info", {f"k{i}": i for i in range(100_000)})
    side("description_5mb", ".civitai.info", {"description": "d" * 5_000_000})
    side("notes_5mb", ".json", {"notes": "n" * 5_000_000, "description": "ok"})
    side("username_1mb", ".civitai.info", {"creator": {"username": "u" * 1_000_000}})
    side("base_model_1mb", ".civitai.info", {"baseModel": "SD 1.5" + "x" * 1_000_000})
    side("id_2_70", ".civitai.info", '{"id": 1180591620717411303424, "modelId": 5}', "positive integer id")
    side("id_u64_max", ".civitai.info", '{"id": 18446744073709551615, "modelId": 5}', "positive integer id")
    side("id_5000_digits", ".json", {"modelId": "9" * 5000}, "positive integer id")
    side("id_negative", ".civitai.info", {"id": -5, "modelId": 0}, "positive integer id")
    side("id_1e400", ".civitai.info", '{"id": 1e400, "modelId": 7}', "number is infinity")
    side("weight_1e400", ".json", '{"preferred weight": 1e400}', "number is infinity")
    side("weight_huge_text", ".json", {"preferred weight": "9" * 5000}, "")
    side("sha256_1mb", ".civitai.info", {"files": [{"hashes": {"SHA256": "f" * 1_000_000}}]}, "not a SHA256")
    side("usage_tips_inf", ".metadata.json", {"usage_tips": '{"strength": 1e400, "clip": "x"}'})
    side("usage_tips_deep", ".metadata.json", {"usage_tips": "[" * 100_000 + "]" * 100_000}, "usage_tips")
    side("empty_file", ".civitai.info", b"", "not valid JSON")
    side("utf16_json", ".civitai.info", '{"id": 5}'.encode("utf-16"), "not valid UTF-8")
    side("lone_surrogate", ".civitai.info", b'{"name": "\\udcff"}', "not valid JSON")
    side("nul_in_strings", ".civitai.info", {"name": "a\x00b", "trainedWords": ["x\x00y"], "description": "\x00"})
    side("duplicate_keys", ".civitai.info", b'{"id": 1, "id": 2, "trainedWords": ["a"], "trainedWords": ["b"]}')
    side("description_txt_10mb", ".txt", "t" * 10_000_000, "over the 8 MiB sidecar cap")
    side("description_txt_7mb", ".txt", "t" * 7_000_000)
    side("description_txt_nul", ".txt", "a\x00b\x00")
    side("model_json_deep_versions", ".json", {"modelVersions": [{"files": [[[[]]]] * 100_000}]})
    return cases, folder_links
