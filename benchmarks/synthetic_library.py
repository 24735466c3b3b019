"""Synthetic LoRA files with the real key naming of kohya, PEFT/diffusers and FLUX trainers.

Why: no real kohya SD1.5/SDXL LoRA small enough to ship exists, and a 50,000-file library is
needed to benchmark the scanner. The files written here have the exact tensor names and shapes
trainers produce (so base-model and layout detection see what they would see on a real file),
realistic ``__metadata__`` (``ss_*``, ``modelspec.*``), and either real random tensor bytes
(small demo files) or a *sparse* data region (the file is truncated to its declared size, so
50,000 multi-megabyte files take almost no disk space).

Headers are written template-style without torch: the tensor part of the JSON depends only on
(family, network type, rank, dtype, ...) and is cached; only ``__metadata__`` changes per file.
Everything is driven by ``random.Random(seed)``, so a seed always gives the same bytes.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import random
import struct
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "FAMILIES",
    "Module",
    "TensorEntry",
    "LoraSpec",
    "BASE_MODEL_OF_FAMILY",
    "LAYOUT_OF_FAMILY",
    "module_table",
    "tensor_entries",
    "kohya_metadata",
    "peft_metadata",
    "build_header",
    "write_lora",
    "random_spec",
    "write_library",
    "PROFILES",
    "LibraryStats",
    "tiny_png",
]

# family -> (layout, base model). A family fixes the key naming and the network architecture.
FAMILIES: tuple[str, ...] = ("kohya_sd1", "peft_sd1", "kohya_sd2", "kohya_sdxl", "peft_sdxl", "kohya_flux", "peft_flux")
LAYOUT_OF_FAMILY = {f: f.split("_")[0] for f in FAMILIES}
BASE_MODEL_OF_FAMILY = {
    "kohya_sd1": "SD1",
    "peft_sd1": "SD1",
    "kohya_sd2": "SD2",
    "kohya_sdxl": "SDXL",
    "peft_sdxl": "SDXL",
    "kohya_flux": "FLUX",
    "peft_flux": "FLUX",
}

CIVITAI_BASE_MODEL = {"SD1": "SD 1.5", "SD2": "SD 2.1 768", "SDXL": "SDXL 1.0", "FLUX": "Flux.1 D"}
DTYPE_SIZE = {"F16": 2, "BF16": 2, "F32": 4}


@dataclass(frozen=True)
class Module:
    """One adapted layer: its key prefix as the trainer writes it, and the layer's geometry."""

    key: str
    d_in: int
    d_out: int
    kernel: tuple[int, int] | None = None  # Conv2d kernel; None for Linear
    part: str = "unet"  # unet | te1 | te2 | transformer
    role: str = ""  # e.g. "attn2.to_k" (cross-attention K), used to pick subsets


@dataclass(frozen=True)
class TensorEntry:
    key: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPE_SIZE[self.dtype]


# --------------------------------------------------------------------------------------------
# Architectures, in diffusers dotted module paths
# --------------------------------------------------------------------------------------------


def _transformer_block(prefix: str, c: int, ctx: int) -> list[tuple[str, int, int, str]]:
    """Linear layers of one BasicTransformerBlock (self-attn, cross-attn, GEGLU feed-forward)."""
    out = []
    for attn, kv_in in (("attn1", c), ("attn2", ctx)):
        out.append((f"{prefix}.{attn}.to_q", c, c, f"{attn}.to_q"))
        out.append((f"{prefix}.{attn}.to_k", kv_in, c, f"{attn}.to_k"))
        out.append((f"{prefix}.{attn}.to_v", kv_in, c, f"{attn}.to_v"))
        out.append((f"{prefix}.{attn}.to_out.0", c, c, f"{attn}.to_out"))
    out.append((f"{prefix}.ff.net.0.proj", c, 8 * c, "ff"))
    out.append((f"{prefix}.ff.net.2", 4 * c, c, "ff"))
    return out


@dataclass(frozen=True)
class _UNetSpec:
    block_out: tuple[int, ...]
    down_attn: tuple[int, ...]  # transformer depth per down block (0 = no attention)
    up_attn: tuple[int, ...]  # transformer depth per up block
    mid_depth: int
    ctx: int
    conv_proj: bool  # proj_in/proj_out are 1x1 convs (SD1) or Linear (SDXL)
    layers_per_block: int = 2


SD1_UNET = _UNetSpec((320, 640, 1280, 1280), (1, 1, 1, 0), (0, 1, 1, 1), 1, 768, True)
SD2_UNET = _UNetSpec((320, 640, 1280, 1280), (1, 1, 1, 0), (0, 1, 1, 1), 1, 1024, False)
SDXL_UNET = _UNetSpec((320, 640, 1280), (0, 2, 10), (10, 2, 0), 10, 2048, False)


def _unet_modules(spec: _UNetSpec, conv: bool) -> list[tuple[str, int, int, tuple[int, int] | None, str]]:
    """(diffusers path, in, out, kernel, role) for attention layers and, with conv, the ResNets."""
    mods: list[tuple[str, int, int, tuple[int, int] | None, str]] = []
    boc = spec.block_out
    proj_k = (1, 1) if spec.conv_proj else None

    def attention(prefix: str, c: int, depth: int) -> None:
        mods.append((f"{prefix}.proj_in", c, c, proj_k, "proj"))
        for t in range(depth):
            for path, i, o, role in _transformer_block(f"{prefix}.transformer_blocks.{t}", c, spec.ctx):
                mods.append((path, i, o, None, role))
        mods.append((f"{prefix}.proj_out", c, c, proj_k, "proj"))

    def resnet(prefix: str, c_in: int, c_out: int) -> None:
        if not conv:
            return
        mods.append((f"{prefix}.conv1", c_in, c_out, (3, 3), "conv"))
        mods.append((f"{prefix}.time_emb_proj", 4 * boc[0], c_out, None, "conv"))
        mods.append((f"{prefix}.conv2", c_out, c_out, (3, 3), "conv"))
        if c_in != c_out:
            mods.append((f"{prefix}.conv_shortcut", c_in, c_out, (1, 1), "conv"))

    prev = boc[0]
    for b, c in enumerate(boc):
        for r in range(spec.layers_per_block):
            resnet(f"down_blocks.{b}.resnets.{r}", prev if r == 0 else c, c)
            if spec.down_attn[b]:
                attention(f"down_blocks.{b}.attentions.{r}", c, spec.down_attn[b])
        prev = c
        if b < len(boc) - 1 and conv:
            mods.append((f"down_blocks.{b}.downsamplers.0.conv", c, c, (3, 3), "conv"))
    c = boc[-1]
    resnet("mid_block.resnets.0", c, c)
    attention("mid_block.attentions.0", c, spec.mid_depth)
    resnet("mid_block.resnets.1", c, c)
    rev = tuple(reversed(boc))
    prev_out = rev[0]
    for b, c in enumerate(rev):
        in_ch = rev[min(b + 1, len(rev) - 1)]
        n = spec.layers_per_block + 1
        for r in range(n):
            skip = in_ch if r == n - 1 else c
            resnet(f"up_blocks.{b}.resnets.{r}", (prev_out if r == 0 else c) + skip, c)
            if spec.up_attn[b]:
                attention(f"up_blocks.{b}.attentions.{r}", c, spec.up_attn[b])
        prev_out = c
        if b < len(rev) - 1 and conv:
            mods.append((f"up_blocks.{b}.upsamplers.0.conv", c, c, (3, 3), "conv"))
    return mods


def _sgm_path(diffusers_path: str, spec: _UNetSpec) -> str:
    """diffusers U-Net path -> SGM (input_blocks/middle_block/output_blocks) path, as kohya SDXL names it."""
    p = diffusers_path.split(".")
    n = spec.layers_per_block
    resnet_leaf = {
        "conv1": ["in_layers", "2"],
        "conv2": ["out_layers", "3"],
        "time_emb_proj": ["emb_layers", "1"],
        "conv_shortcut": ["skip_connection"],
    }
    if p[0] == "down_blocks":
        b = int(p[1])
        if p[2] == "downsamplers":
            return f"input_blocks.{b * (n + 1) + n + 1}.0.op"
        idx = str(b * (n + 1) + int(p[3]) + 1)
        if p[2] == "attentions":
            return ".".join(["input_blocks", idx, "1"] + p[4:])
        return ".".join(["input_blocks", idx, "0"] + resnet_leaf[p[4]])
    if p[0] == "mid_block":
        if p[1] == "attentions":
            return ".".join(["middle_block", "1"] + p[3:])
        return ".".join(["middle_block", "0" if p[2] == "0" else "2"] + resnet_leaf[p[3]])
    if p[0] == "up_blocks":
        b = int(p[1])
        if p[2] == "upsamplers":
            has_attn = spec.up_attn[b] > 0
            return f"output_blocks.{b * (n + 1) + n}.{2 if has_attn else 1}.conv"
        idx = str(b * (n + 1) + int(p[3]))
        if p[2] == "attentions":
            return ".".join(["output_blocks", idx, "1"] + p[4:])
        return ".".join(["output_blocks", idx, "0"] + resnet_leaf[p[4]])
    raise ValueError(diffusers_path)


def _clip_modules(layers: int, hidden: int, mlp: int, full: bool) -> list[tuple[str, int, int, str]]:
    """CLIP text-encoder layers; kohya adapts attention + MLP, diffusers PEFT only attention."""
    mods = []
    for i in range(layers):
        base = f"text_model.encoder.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            mods.append((f"{base}.self_attn.{proj}", hidden, hidden, "te_attn"))
        if full:
            mods.append((f"{base}.mlp.fc1", hidden, mlp, "te_mlp"))
            mods.append((f"{base}.mlp.fc2", mlp, hidden, "te_mlp"))
    return mods


FLUX_DOUBLE_BLOCKS, FLUX_SINGLE_BLOCKS, FLUX_HIDDEN = 19, 38, 3072


def _flux_kohya_modules() -> list[Module]:
    """kohya / sd-scripts FLUX names (BFL module paths): double_blocks_N_img_attn_qkv, single_blocks_N_linear1, ..."""
    h = FLUX_HIDDEN
    mods = []
    for i in range(FLUX_DOUBLE_BLOCKS):
        for side in ("img", "txt"):
            for name, d_in, d_out in (
                ("attn_proj", h, h),
                ("attn_qkv", h, 3 * h),
                ("mlp_0", h, 4 * h),
                ("mlp_2", 4 * h, h),
                ("mod_lin", h, 6 * h),
            ):
                mods.append(
                    Module(
                        f"lora_unet_double_blocks_{i}_{side}_{name}", d_in, d_out, None, "unet", f"double.{side}_{name}"
                    )
                )
    for i in range(FLUX_SINGLE_BLOCKS):
        for name, d_in, d_out in (("linear1", h, 7 * h), ("linear2", 5 * h, h), ("modulation_lin", h, 3 * h)):
            mods.append(Module(f"lora_unet_single_blocks_{i}_{name}", d_in, d_out, None, "unet", f"single.{name}"))
    return mods


def _flux_peft_modules() -> list[Module]:
    """diffusers FluxTransformer2DModel names under ``transformer.`` (PEFT lora_A/lora_B)."""
    h = FLUX_HIDDEN
    mods = []
    for i in range(FLUX_DOUBLE_BLOCKS):
        p = f"transformer.transformer_blocks.{i}"
        for name in (
            "attn.add_k_proj",
            "attn.add_q_proj",
            "attn.add_v_proj",
            "attn.to_add_out",
            "attn.to_k",
            "attn.to_out.0",
            "attn.to_q",
            "attn.to_v",
        ):
            mods.append(Module(f"{p}.{name}", h, h, None, "transformer", f"double.{name}"))
        for ff in ("ff", "ff_context"):
            mods.append(Module(f"{p}.{ff}.net.0.proj", h, 4 * h, None, "transformer", f"double.{ff}"))
            mods.append(Module(f"{p}.{ff}.net.2", 4 * h, h, None, "transformer", f"double.{ff}"))
        mods.append(Module(f"{p}.norm1.linear", h, 6 * h, None, "transformer", "double.norm"))
        mods.append(Module(f"{p}.norm1_context.linear", h, 6 * h, None, "transformer", "double.norm"))
    for i in range(FLUX_SINGLE_BLOCKS):
        p = f"transformer.single_transformer_blocks.{i}"
        for name in ("attn.to_k", "attn.to_q", "attn.to_v"):
            mods.append(Module(f"{p}.{name}", h, h, None, "transformer", f"single.{name}"))
        mods.append(Module(f"{p}.norm.linear", h, 3 * h, None, "transformer", "single.norm"))
        mods.append(Module(f"{p}.proj_mlp", h, 4 * h, None, "transformer", "single.proj_mlp"))
        mods.append(Module(f"{p}.proj_out", 5 * h, h, None, "transformer", "single.proj_out"))
    return mods


@functools.lru_cache(maxsize=64)
def module_table(family: str, text_encoder: bool = True, conv: bool = False) -> tuple[Module, ...]:
    """All modules a trainer of this family adapts, with the exact key prefixes it writes.

    kohya: ``lora_unet_`` + path with ``.`` -> ``_``; ``lora_te_`` (SD1), ``lora_te1_``/``lora_te2_`` (SDXL/FLUX).
    PEFT/diffusers: ``unet.`` / ``text_encoder.`` / ``text_encoder_2.`` / ``transformer.`` + dotted path.
    ``conv`` adds the ResNet convolutions a LoCon adapts (SD U-Nets only).
    """
    mods: list[Module] = []
    if family in ("kohya_sd1", "peft_sd1", "kohya_sd2", "kohya_sdxl", "peft_sdxl"):
        spec = {"sd1": SD1_UNET, "sd2": SD2_UNET, "sdxl": SDXL_UNET}[family.split("_")[1]]
        kohya = family.startswith("kohya")
        for path, d_in, d_out, kernel, role in _unet_modules(spec, conv):
            if not kohya and role in ("ff", "proj"):
                continue  # diffusers' train_dreambooth_lora* targets to_q/to_k/to_v/to_out.0 only
            if kohya:
                p = _sgm_path(path, spec) if spec is SDXL_UNET else path
                key = "lora_unet_" + p.replace(".", "_")
            else:
                key = "unet." + path
            mods.append(Module(key, d_in, d_out, kernel, "unet", role))
        if text_encoder:
            if family.endswith("sd1"):
                encoders = [("lora_te_" if kohya else "text_encoder.", 12, 768, 3072, "te1")]
            elif family.endswith("sd2"):  # OpenCLIP ViT-H as diffusers loads it: 23 layers, width 1024
                encoders = [("lora_te_", 23, 1024, 4096, "te1")]
            else:
                encoders = [
                    ("lora_te1_" if kohya else "text_encoder.", 12, 768, 3072, "te1"),
                    ("lora_te2_" if kohya else "text_encoder_2.", 32, 1280, 5120, "te2"),
                ]
            for prefix, layers, hidden, mlp, part in encoders:
                for path, d_in, d_out, role in _clip_modules(layers, hidden, mlp, full=kohya):
                    key = prefix + (path.replace(".", "_") if kohya else path)
                    mods.append(Module(key, d_in, d_out, None, part, role))
    elif family == "kohya_flux":
        mods = _flux_kohya_modules()
        if text_encoder:
            for path, d_in, d_out, role in _clip_modules(12, 768, 3072, full=True):
                mods.append(Module("lora_te1_" + path.replace(".", "_"), d_in, d_out, None, "te1", role))
    elif family == "peft_flux":
        mods = _flux_peft_modules()
    else:
        raise ValueError(f"unknown family {family!r}")
    return tuple(mods)


# --------------------------------------------------------------------------------------------
# Tensors of one network type over a module table
# --------------------------------------------------------------------------------------------


def _factor(dim: int, factor: int = -1) -> tuple[int, int]:
    """LyCORIS ``factorization``: split dim into (m, n), m <= n, as close to sqrt as allowed."""
    if factor > 0 and dim % factor == 0:
        m, n = factor, dim // factor
        return (m, n) if m <= n else (n, m)
    m = int(math.isqrt(dim))
    while m > 1 and dim % m:
        m -= 1
    return m, dim // m


def tensor_entries(
    modules: Sequence[Module],
    network_type: str,
    rank: int,
    dtype: str = "F16",
    conv_rank: int | None = None,
    rank_of: Callable[[Module], int] | None = None,
    peft: bool = False,
) -> list[TensorEntry]:
    """Tensor names and shapes a trainer writes for these modules.

    LoRA/LoCon/DoRA: ``lora_down.weight`` [r, in(,kh,kw)], ``lora_up.weight`` [out, r(,1,1)], ``alpha`` [];
    DoRA adds ``dora_scale`` [1, in]. PEFT: ``lora_A.weight`` / ``lora_B.weight`` and no alpha.
    LoHa: ``hada_w{1,2}_a`` [out, r], ``hada_w{1,2}_b`` [r, in*kh*kw]. LoKr: ``lokr_w1`` [out_m, in_m],
    ``lokr_w2_a`` [out_n, r], ``lokr_w2_b`` [r, in_n(,kh,kw)] with out = out_m*out_n, in = in_m*in_n.
    """
    out: list[TensorEntry] = []
    for m in modules:
        r = rank_of(m) if rank_of else (conv_rank if (m.kernel and m.kernel != (1, 1) and conv_rank) else rank)
        k = m.kernel
        if peft:
            a_shape = (r, m.d_in) + (k if k else ())
            b_shape = (m.d_out, r) + ((1, 1) if k else ())
            out.append(TensorEntry(f"{m.key}.lora_A.weight", dtype, a_shape))
            out.append(TensorEntry(f"{m.key}.lora_B.weight", dtype, b_shape))
            continue
        out.append(TensorEntry(f"{m.key}.alpha", dtype, ()))
        if network_type in ("LoRA", "LoCon", "DoRA"):
            out.append(TensorEntry(f"{m.key}.lora_down.weight", dtype, (r, m.d_in) + (k if k else ())))
            out.append(TensorEntry(f"{m.key}.lora_up.weight", dtype, (m.d_out, r) + ((1, 1) if k else ())))
            if network_type == "DoRA":
                out.append(TensorEntry(f"{m.key}.dora_scale", dtype, (1, m.d_in) + ((1, 1) if k else ())))
        elif network_type == "LoHa":
            d_in = m.d_in * (k[0] * k[1] if k else 1)
            for w in ("w1", "w2"):
                out.append(TensorEntry(f"{m.key}.hada_{w}_a", dtype, (m.d_out, r)))
                out.append(TensorEntry(f"{m.key}.hada_{w}_b", dtype, (r, d_in)))
        elif network_type == "LoKr":
            om, on = _factor(m.d_out, 8)
            im, in_ = _factor(m.d_in, 8)
            out.append(TensorEntry(f"{m.key}.lokr_w1", dtype, (om, im)))
            out.append(TensorEntry(f"{m.key}.lokr_w2_a", dtype, (on, r)))
            out.append(TensorEntry(f"{m.key}.lokr_w2_b", dtype, (r, in_) + (k if k else ())))
        else:
            raise ValueError(f"unknown network type {network_type!r}")
    return out


# --------------------------------------------------------------------------------------------
# Header assembly
# --------------------------------------------------------------------------------------------


def _layout_entries(
    entries: Sequence[TensorEntry], scalars_first: bool
) -> tuple[list[tuple[TensorEntry, int, int]], int]:
    """Assign data offsets. Sorted by name like the safetensors writer; ``scalars_first`` puts the
    alpha scalars at the start of the data area (valid safetensors) so a sparse file can hold real
    alpha values without writing anywhere else."""
    ordered = sorted(entries, key=lambda e: e.key)
    if scalars_first:
        ordered = sorted(ordered, key=lambda e: e.shape != ())
    placed, pos = [], 0
    for e in ordered:
        placed.append((e, pos, pos + e.nbytes))
        pos += e.nbytes
    return placed, pos


def _tensor_json_body(placed: Sequence[tuple[TensorEntry, int, int]]) -> str:
    """The tensor part of the header JSON (no braces), in key order."""
    parts = []
    for e, b, end in sorted(placed, key=lambda p: p[0].key):
        parts.append(
            '"%s":{"dtype":"%s","shape":[%s],"data_offsets":[%d,%d]}'
            % (e.key, e.dtype, ",".join(map(str, e.shape)), b, end)
        )
    return ",".join(parts)


def build_header(body: str, metadata: dict[str, str] | None) -> bytes:
    """8-byte little-endian length + JSON header, space-padded to 8-byte alignment like safetensors."""
    meta = json.dumps(metadata, ensure_ascii=False, separators=(",", ":")) if metadata else None
    text = "{" + (f'"__metadata__":{meta},' if meta else "") + body + "}"
    raw = text.encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


@dataclass
class LoraSpec:
    """Everything that determines one synthetic LoRA file."""

    family: str
    network_type: str = "LoRA"  # LoRA | LoCon | LoHa | LoKr | DoRA
    rank: int = 16
    alpha: float = 8.0
    dtype: str = "F16"
    text_encoder: bool = True
    conv_rank: int | None = None
    module_filter: str | None = (
        None  # None = all; "attn" = attention only; "sparse:<k>" = every k-th module + cross-attn K/V
    )
    rank_jitter_seed: int | None = None  # per-module ranks (resized / dynamic LoRAs)
    metadata: dict[str, str] | None = None

    @property
    def layout(self) -> str:
        return LAYOUT_OF_FAMILY[self.family]

    @property
    def base_model(self) -> str:
        return BASE_MODEL_OF_FAMILY[self.family]


def _filter_modules(mods: Sequence[Module], module_filter: str | None) -> list[Module]:
    if not module_filter:
        return list(mods)
    if module_filter == "attn":
        return [m for m in mods if m.role.startswith(("attn", "te_attn", "double.attn", "single.attn"))]
    if module_filter.startswith("sparse:"):
        k = int(module_filter.split(":", 1)[1])
        # Keep every k-th module and the first cross-attention K and V, whose input width identifies SD1/SD2/SDXL.
        first_kv = {}
        for m in mods:
            if m.role in ("attn2.to_k", "attn2.to_v"):
                first_kv.setdefault(m.role, m.key)
        return [m for i, m in enumerate(mods) if i % k == 0 or m.key in first_kv.values()]
    if module_filter.startswith("blocks:"):
        # FLUX trainers often adapt a handful of blocks only (e.g. AI-Toolkit "only_if_contains").
        wanted = module_filter.split(":", 1)[1].split(",")
        return [m for m in mods if any(f"_{w}_" in m.key or f".{w}." in m.key for w in wanted)]
    raise ValueError(module_filter)


@functools.lru_cache(maxsize=256)
def _cached_body(
    family: str,
    network_type: str,
    rank: int,
    dtype: str,
    text_encoder: bool,
    conv_rank: int | None,
    module_filter: str | None,
    rank_jitter_seed: int | None,
    scalars_first: bool,
) -> tuple[str, int, tuple[tuple[TensorEntry, int, int], ...]]:
    conv = (
        network_type in ("LoCon", "LoHa", "LoKr")
        and family in ("kohya_sd1", "kohya_sd2", "kohya_sdxl")
        and conv_rank is not None
    )
    mods = _filter_modules(module_table(family, text_encoder, conv), module_filter)
    rank_of = None
    if rank_jitter_seed is not None:
        jr = random.Random(rank_jitter_seed)
        ranks = {m.key: max(1, min(rank, int(rank * jr.uniform(0.25, 1.0)))) for m in mods}
        rank_of = lambda m: ranks[m.key]
    entries = tensor_entries(mods, network_type, rank, dtype, conv_rank, rank_of, peft=family.startswith("peft"))
    placed, total = _layout_entries(entries, scalars_first)
    return _tensor_json_body(placed), total, tuple(placed)


def _f32_to_bf16_bytes(values) -> bytes:
    import numpy as np

    u = np.asarray(values, dtype=np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2").tobytes()


def _tensor_bytes(e: TensorEntry, value_rng, alpha: float) -> bytes:
    """Real bytes for one tensor: the alpha scalar, or small random weights (distinct per file)."""
    import numpy as np

    if e.shape == ():
        vals = np.array([alpha], dtype=np.float32)
    elif e.key.endswith((".lora_up.weight", ".lora_B.weight", "_w2_a")):
        vals = value_rng.standard_normal(math.prod(e.shape), dtype=np.float32) * 1e-3
    elif e.key.endswith(".dora_scale"):
        vals = 1.0 + value_rng.random(math.prod(e.shape), dtype=np.float32) * 0.1
    else:
        vals = value_rng.standard_normal(math.prod(e.shape), dtype=np.float32) * 0.02
    if e.dtype == "F16":
        return vals.astype("<f2").tobytes()
    if e.dtype == "F32":
        return vals.astype("<f4").tobytes()
    return _f32_to_bf16_bytes(vals)


def write_lora(path: Path, spec: LoraSpec, *, sparse: bool = True, data_seed: int = 0) -> int:
    """Write one LoRA file; returns its size in bytes.

    ``sparse``: header + real alpha scalars, then ``os.truncate`` to the declared size (a hole).
    Otherwise every tensor gets real random bytes from ``data_seed`` (numpy), for small demo files.
    """
    body, total, placed = _cached_body(
        spec.family,
        spec.network_type,
        spec.rank,
        spec.dtype,
        spec.text_encoder,
        spec.conv_rank,
        spec.module_filter,
        spec.rank_jitter_seed,
        sparse,
    )
    header = build_header(body, spec.metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(header)
        if sparse:
            scalars = [e for e, _, _ in placed if e.shape == ()]
            if scalars:
                one = _tensor_bytes(scalars[0], None, spec.alpha)
                f.write(one * len(scalars))
        else:
            import numpy as np

            value_rng = np.random.default_rng(data_seed)
            for e, _, _ in placed:
                f.write(_tensor_bytes(e, value_rng, spec.alpha))
    size = len(header) + total
    if sparse:
        os.truncate(path, size)
    return size


# --------------------------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------------------------

_ARCH = {
    "SD1": ("sd_v1", "stable-diffusion-v1/lora", "v1-5-pruned-emaonly.safetensors", "512,512"),
    "SD2": ("sd_v2_v", "stable-diffusion-v2-768-v/lora", "v2-1_768-ema-pruned.safetensors", "768,768"),
    "SDXL": ("sdxl_base_v1-0", "stable-diffusion-xl-v1-base/lora", "sd_xl_base_1.0.safetensors", "1024,1024"),
    "FLUX": ("flux1", "flux-1-dev/lora", "flux1-dev.safetensors", "1024,1024"),
}
_MODULE_OF = {
    "LoRA": "networks.lora",
    "LoCon": "lycoris.kohya",
    "LoHa": "lycoris.kohya",
    "LoKr": "lycoris.kohya",
    "DoRA": "lycoris.kohya",
}
_ALGO_OF = {"LoCon": "locon", "LoHa": "loha", "LoKr": "lokr", "DoRA": "lora"}


def kohya_metadata(
    rng: random.Random,
    *,
    name: str,
    base_model: str,
    network_type: str,
    rank: int,
    alpha: float,
    tags: dict[str, int],
    dataset_dir: str,
    title: str | None = None,
    author: str | None = None,
    description: str | None = None,
    trigger: str | None = None,
    conv_rank: int | None = None,
    extra: dict[str, str] | None = None,
    modelspec: bool = True,
    minimal: bool = False,
) -> dict[str, str]:
    """``__metadata__`` as sd-scripts writes it: every value a string, nested values JSON-encoded.

    ``minimal`` mimics ``--no_metadata`` (network keys + base model version only).
    """
    version, arch, sd_model, res = _ARCH[base_model]
    net_args = {}
    if network_type != "LoRA":
        net_args["algo"] = _ALGO_OF[network_type]
        if network_type == "DoRA":
            net_args["dora_wd"] = "True"
    if conv_rank:
        net_args["conv_dim"] = str(conv_rank)
        net_args["conv_alpha"] = str(max(1, conv_rank // 2))
    md: dict[str, str] = {
        "ss_network_module": "networks.lora_flux"
        if base_model == "FLUX" and network_type == "LoRA"
        else _MODULE_OF[network_type],
        "ss_network_dim": str(rank),
        "ss_network_alpha": _num(alpha),
        "ss_v2": str(base_model == "SD2"),
        "ss_base_model_version": version,
    }
    if net_args:  # sd-scripts only writes it when --network_args was given
        md["ss_network_args"] = json.dumps(net_args)
    if minimal:
        return md
    started = 1_672_531_200 + rng.randrange(0, 86_400 * 900)
    steps = rng.choice([800, 1200, 1600, 2000, 2400, 3000, 4000])
    images = rng.randint(12, 180)
    repeats = rng.choice([1, 2, 4, 5, 8, 10, 20])
    epochs = max(1, steps // max(1, images * repeats // 2))
    md.update(
        {
            "ss_session_id": str(rng.randrange(10**9, 4 * 10**9)),
            "ss_output_name": name,
            "ss_training_comment": f"trigger: {trigger}" if trigger else "None",
            "ss_sd_model_name": sd_model,
            "ss_new_sd_model_hash": "%064x" % rng.getrandbits(256),
            "ss_sd_scripts_commit_hash": "%040x" % rng.getrandbits(160),
            "ss_training_started_at": f"{started}.{rng.randrange(10**6):06d}",
            "ss_training_finished_at": f"{started + steps * rng.randint(1, 4)}.{rng.randrange(10**6):06d}",
            "ss_learning_rate": rng.choice(["0.0001", "0.0002", "5e-05", "0.0004", "1.0"]),
            "ss_unet_lr": rng.choice(["0.0001", "0.0002", "5e-05"]),
            "ss_text_encoder_lr": rng.choice(["5e-05", "1e-05", "0.0"]),
            "ss_optimizer": rng.choice(
                [
                    "bitsandbytes.optim.adamw.AdamW8bit",
                    "prodigyopt.prodigy.Prodigy",
                    "torch.optim.adamw.AdamW",
                    "transformers.optimization.Adafactor",
                ]
            ),
            "ss_lr_scheduler": rng.choice(["cosine", "constant", "cosine_with_restarts", "linear"]),
            "ss_lr_warmup_steps": str(rng.choice([0, 50, 100])),
            "ss_max_train_steps": str(steps),
            "ss_steps": str(steps),
            "ss_epoch": str(epochs),
            "ss_num_epochs": str(epochs),
            "ss_num_batches_per_epoch": str(max(1, images * repeats // 2)),
            "ss_batch_size_per_device": str(rng.choice([1, 2, 4])),
            "ss_gradient_accumulation_steps": "1",
            "ss_mixed_precision": rng.choice(["fp16", "bf16"]),
            "ss_full_fp16": "False",
            "ss_seed": str(rng.randrange(2**31)),
            "ss_clip_skip": "2" if base_model == "SD1" and rng.random() < 0.6 else "None",
            "ss_max_token_length": rng.choice(["225", "None"]),
            "ss_noise_offset": rng.choice(["None", "0.05", "0.1"]),
            "ss_min_snr_gamma": rng.choice(["None", "5.0"]),
            "ss_num_train_images": str(images * repeats),
            "ss_num_reg_images": "0",
            "ss_resolution": f"({res})",
            "ss_enable_bucket": "True",
            "ss_min_bucket_reso": "256",
            "ss_max_bucket_reso": "1024" if base_model == "SD1" else "2048",
            "ss_bucket_no_upscale": "True",
            "ss_keep_tokens": "1" if trigger else "0",
            "ss_caption_dropout_rate": "0.0",
            "ss_caption_tag_dropout_rate": rng.choice(["0.0", "0.1"]),
            "ss_shuffle_caption": rng.choice(["True", "False"]),
            "ss_cache_latents": "True",
            "ss_gradient_checkpointing": "True",
            "ss_dataset_dirs": json.dumps({dataset_dir: {"n_repeats": repeats, "img_count": images}}),
            "ss_tag_frequency": json.dumps({dataset_dir: tags}, ensure_ascii=False),
            "sshs_model_hash": "%064x" % rng.getrandbits(256),
            "sshs_legacy_hash": "%08x" % rng.getrandbits(32),
        }
    )
    if modelspec:
        date = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started))
        md.update(
            {
                "modelspec.sai_model_spec": "1.0.0",
                "modelspec.architecture": arch,
                "modelspec.implementation": "https://github.com/Stability-AI/generative-models"
                if base_model != "FLUX"
                else "https://github.com/black-forest-labs/flux",
                "modelspec.title": title or name,
                "modelspec.resolution": res.replace(",", "x"),
                "modelspec.date": date,
                "modelspec.prediction_type": "v" if base_model == "SD2" else "epsilon",
            }
        )
        if author:
            md["modelspec.author"] = author
        if description:
            md["modelspec.description"] = description
        if trigger:
            md["modelspec.trigger_phrase"] = trigger
    if extra:
        md.update(extra)
    return md


def peft_metadata(
    *,
    base_model: str,
    rank: int,
    alpha: float,
    title: str | None = None,
    trigger: str | None = None,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """What diffusers / AI-Toolkit write for PEFT-layout LoRAs: ``format: pt`` plus, sometimes, modelspec."""
    md = {"format": "pt"}
    if title:
        md.update(
            {
                "modelspec.sai_model_spec": "1.0.0",
                "modelspec.architecture": _ARCH[base_model][1],
                "modelspec.title": title,
                "lora_rank": str(rank),
                "lora_alpha": _num(alpha),
            }
        )
        if trigger:
            md["modelspec.trigger_phrase"] = trigger
    if extra:
        md.update(extra)
    return md


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


# --------------------------------------------------------------------------------------------
# Random specs and the 50,000-file library
# --------------------------------------------------------------------------------------------

_ADJ = [
    "crimson",
    "velvet",
    "neon",
    "misty",
    "golden",
    "frozen",
    "ancient",
    "cyber",
    "pastel",
    "gothic",
    "solar",
    "lunar",
    "wild",
    "silent",
    "electric",
    "rustic",
    "ivory",
    "obsidian",
    "paper",
    "glass",
    "retro",
    "dreamy",
    "stormy",
    "cozy",
    "feral",
    "celestial",
    "brutalist",
    "baroque",
    "pixel",
    "ink",
]
_NOUN = [
    "knight",
    "witch",
    "samurai",
    "forest",
    "city",
    "garden",
    "dragon",
    "robot",
    "portrait",
    "castle",
    "harbor",
    "desert",
    "library",
    "market",
    "mermaid",
    "pilot",
    "chef",
    "detective",
    "fox",
    "owl",
    "kimono",
    "armor",
    "hoodie",
    "sneakers",
    "cathedral",
    "subway",
    "lighthouse",
    "greenhouse",
    "diner",
    "tavern",
]
_KIND = ["style", "concept", "character", "outfit", "background", "pose", "lighting", "detailer", "slider", "texture"]
_TAGS = [
    "1girl",
    "1boy",
    "solo",
    "looking at viewer",
    "smile",
    "outdoors",
    "indoors",
    "night",
    "day",
    "sky",
    "cloud",
    "tree",
    "flower",
    "water",
    "city",
    "building",
    "long hair",
    "short hair",
    "blue eyes",
    "jacket",
    "dress",
    "armor",
    "sword",
    "hat",
    "glasses",
    "upper body",
    "full body",
    "portrait",
    "landscape",
    "scenery",
    "detailed background",
    "depth of field",
    "bokeh",
    "film grain",
    "watercolor",
    "oil painting",
    "lineart",
    "monochrome",
    "pixel art",
    "3d render",
    "cinematic lighting",
    "rim light",
    "sunset",
    "rain",
    "snow",
    "neon lights",
    "reflection",
    "from side",
    "from above",
    "holding",
]
_AUTHORS = ["mossgarden", "kohaku_lab", "pixelwright", "northlight", "tinkerfox", "aurora_ai", "quietbrush", "lumen"]

DEFAULT_MIX: dict[str, float] = {
    "kohya_sd1": 0.45,
    "peft_sdxl": 0.25,
    "kohya_sdxl": 0.10,
    "kohya_flux": 0.12,
    "peft_flux": 0.05,
    "peft_sd1": 0.03,
}


def random_spec(
    rng: random.Random, family: str | None = None, mix: dict[str, float] | None = None
) -> tuple[LoraSpec, dict]:
    """A plausible LoRA: family, network type, rank/alpha, naming and training metadata.

    Returns (spec, facts) where facts holds the name, trigger and tags used (for sidecars).
    """
    mix = mix or DEFAULT_MIX
    if family is None:
        family = rng.choices(list(mix), weights=list(mix.values()))[0]
    base = BASE_MODEL_OF_FAMILY[family]
    kohya = family.startswith("kohya")
    network_type = "LoRA"
    if kohya and base != "FLUX":
        network_type = rng.choices(["LoRA", "LoCon", "LoHa", "LoKr", "DoRA"], [80, 8, 5, 4, 3])[0]
    rank = rng.choice([4, 8, 16, 16, 32, 32, 64, 128] if base != "FLUX" else [4, 8, 16, 16, 32, 64])
    if network_type in ("LoHa", "LoKr"):
        rank = min(rank, 16)
    alpha = rng.choice([rank, rank / 2, 1.0, rank / 4 if rank >= 4 else 1.0])
    conv_rank = rng.choice([4, 8, 16]) if network_type in ("LoCon", "LoHa", "LoKr") else None
    adj, noun, kind = rng.choice(_ADJ), rng.choice(_NOUN), rng.choice(_KIND)
    version = rng.randint(1, 4)
    name = f"{adj}_{noun}_{kind}_v{version}"
    if rng.random() < 0.3:
        name = f"{name}-{rng.choice(['000008', '000010', '000012', 'epoch-05'])}"
    trigger = f"{adj} {noun}" if kind in ("character", "outfit", "concept", "style") else None
    n_tags = rng.randint(5, 40)
    tags = {t: rng.randint(1, 150) for t in rng.sample(_TAGS, min(n_tags, len(_TAGS)))}
    if trigger:
        tags = {trigger: max(tags.values(), default=1) + rng.randint(1, 40), **tags}
    dataset_dir = f"{rng.choice([1, 2, 5, 10, 20])}_{adj}{noun}"
    author = rng.choice(_AUTHORS)
    if kohya:
        metadata = kohya_metadata(
            rng,
            name=name,
            base_model=base,
            network_type=network_type,
            rank=rank,
            alpha=alpha,
            tags=tags,
            dataset_dir=dataset_dir,
            title=f"{adj.title()} {noun.title()} {kind.title()}",
            author=author,
            description=f"A {kind} LoRA: {adj} {noun}.",
            trigger=trigger,
            conv_rank=conv_rank,
            modelspec=rng.random() < 0.6,
            minimal=rng.random() < 0.05,
        )
    else:
        metadata = peft_metadata(
            base_model=base,
            rank=rank,
            alpha=alpha,
            title=f"{adj.title()} {noun.title()}" if rng.random() < 0.5 else None,
            trigger=trigger,
        )
    spec = LoraSpec(
        family=family,
        network_type=network_type,
        rank=rank,
        alpha=float(alpha),
        dtype=rng.choices(["F16", "BF16", "F32"], [75, 20, 5])[0],
        text_encoder=(base != "FLUX" and rng.random() < 0.6) or (family == "kohya_flux" and rng.random() < 0.15),
        conv_rank=conv_rank,
        rank_jitter_seed=rng.randrange(4) if rng.random() < 0.05 else None,
        metadata=metadata,
    )
    return spec, {"name": name, "trigger": trigger, "tags": list(tags), "author": author, "kind": kind}


def tiny_png(rgb: tuple[int, int, int], size: int = 8) -> bytes:
    """A valid solid-colour PNG without PIL (fast enough for tens of thousands of previews)."""
    raw = b"".join(b"\x00" + bytes(rgb) * size for _ in range(size))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


@dataclass
class LibraryStats:
    root: Path
    files: int = 0
    sidecars: int = 0
    previews: int = 0
    apparent_bytes: int = 0
    header_bytes: int = 0
    by_family: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def _folder(family: str, facts: dict, counts: dict[str, int]) -> str:
    """<base>/<kind>s/<author>/ with overflow into part_NN subfolders once a folder holds 200 files."""
    base = {"SD1": "SD1.5", "SD2": "SD2", "SDXL": "SDXL", "FLUX": "Flux"}[BASE_MODEL_OF_FAMILY[family]]
    folder = f"{base}/{facts['kind']}s/{facts['author']}"
    seen = counts.get(folder, 0)
    counts[folder] = seen + 1
    return folder if seen < 200 else f"{folder}/part_{seen // 200:02d}"


#: Header profiles of :func:`write_library`.
PROFILES = ("mixed", "sd15-kohya")


def write_library(
    root: Path | str,
    n: int,
    seed: int = 0,
    sparse: bool = True,
    mix: dict[str, float] | None = None,
    sidecar_fraction: float = 0.2,
    progress: bool = False,
    profile: str = "mixed",
) -> LibraryStats:
    """Write ``n`` LoRA files under nested folders of ``root``; deterministic for ``seed``.

    ``mix``: family -> weight (default :data:`DEFAULT_MIX`: kohya SD1.5, PEFT SDXL, FLUX, ...).
    ``profile``: ``"mixed"`` (that mix, ~990 tensors / ~157 KB headers on average) or ``"sd15-kohya"``
    (every file a kohya SD1.5 LoRA with text encoder: the real 792-tensor key set, ~111 KB headers,
    the most common file in real libraries); see :data:`PROFILES`.
    ``sidecar_fraction`` of the files also get a Civitai Helper ``.civitai.info`` and, separately,
    a ``.preview.png`` (as in a library managed by Civitai Helper / LoRA Manager).
    """
    root = Path(root)
    rng = random.Random(seed)
    stats = LibraryStats(root=root)
    t0 = time.perf_counter()
    png_cache: dict[int, bytes] = {}
    counts: dict[str, int] = {}
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    if profile == "sd15-kohya":
        mix = {"kohya_sd1": 1.0}
    for i in range(n):
        spec, facts = random_spec(rng, mix=mix)
        if profile == "sd15-kohya":  # plain kohya LoRA over U-Net and text encoder: 264 modules x 3 tensors
            spec = LoraSpec(
                family="kohya_sd1",
                rank=spec.rank,
                alpha=spec.alpha,
                dtype=spec.dtype,
                metadata=kohya_metadata(
                    rng,
                    name=facts["name"],
                    base_model="SD1",
                    network_type="LoRA",
                    rank=spec.rank,
                    alpha=spec.alpha,
                    tags={t: rng.randint(1, 150) for t in facts["tags"]},
                    dataset_dir=f"10_{facts['name']}",
                    author=facts["author"],
                    trigger=facts["trigger"],
                ),
            )
        folder = root / _folder(spec.family, facts, counts)
        path = folder / f"{facts['name']}_{i:05d}.safetensors"
        size = write_lora(path, spec, sparse=sparse, data_seed=seed * 1_000_003 + i)
        with open(path, "rb") as f:  # the page is still cached: what the scan will read, besides tensor data
            stats.header_bytes += 8 + int.from_bytes(f.read(8), "little")
        stats.files += 1
        stats.apparent_bytes += size
        stats.by_family[spec.family] = stats.by_family.get(spec.family, 0) + 1
        if rng.random() < sidecar_fraction:
            info = {
                "id": 100000 + i,
                "modelId": 50000 + i // 3,
                "name": f"v{facts['name'][-1]}",
                "baseModel": CIVITAI_BASE_MODEL[spec.base_model],
                "trainedWords": [facts["trigger"]] if facts["trigger"] else [],
                "model": {"name": facts["name"].replace("_", " ").title(), "type": "LORA", "nsfw": False},
                "files": [{"name": path.name, "sizeKB": size / 1024, "type": "Model", "primary": True}],
                "images": [],
            }
            path.with_name(path.stem + ".civitai.info").write_text(json.dumps(info))
            stats.sidecars += 1
        if rng.random() < sidecar_fraction:
            colour = rng.randrange(8)
            if colour not in png_cache:
                png_cache[colour] = tiny_png(((colour * 37) % 256, (colour * 91) % 256, (colour * 53) % 256))
            path.with_name(path.stem + ".preview.png").write_bytes(png_cache[colour])
            stats.previews += 1
        if progress and (i + 1) % 5000 == 0:
            print(f"  wrote {i + 1}/{n} files ({time.perf_counter() - t0:.0f}s)", flush=True)
    stats.seconds = time.perf_counter() - t0
    return stats


def _main(argv: Iterable[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Write a synthetic LoRA library (sparse files).")
    ap.add_argument("root")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dense", action="store_true", help="write real random tensor bytes (large!)")
    args = ap.parse_args(list(argv) if argv is not None else None)
    s = write_library(args.root, args.n, args.seed, sparse=not args.dense, progress=True)
    print(
        f"{s.files} files ({s.apparent_bytes / 2**30:.1f} GiB apparent), {s.sidecars} .civitai.info, "
        f"{s.previews} previews in {s.seconds:.1f}s: {s.by_family}"
    )


if __name__ == "__main__":
    _main()
