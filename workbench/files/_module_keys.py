"""One name per network module whatever the key layout, and the block it belongs to.

The same module is ``lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k`` in a kohya file,
``unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k`` in a diffusers/PEFT file,
``down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor.to_k_lora`` in the old diffusers
attention-processor format and ``lora_unet_input_blocks_1_1_transformer_blocks_0_attn2_to_k`` in SGM
naming (kohya SDXL). :func:`canonical_module` maps them all to ``unet/down_blocks_0_…_attn2_to_k`` (the
component, then the diffusers path with ``.`` written as ``_``), so a converted file compares equal to its
original. :func:`block_of` then says where the module sits the way block-weight users count (``IN04``,
``MID``, ``OUT05``; FLUX ``D07``/``S12``; text encoders ``TE``/``TE2``).

FLUX files in BFL/kohya naming (``lora_unet_double_blocks_7_img_attn_proj``) map to diffusers names
(``unet/transformer_blocks_7_attn_to_out_0``); their fused ``qkv``/``linear1`` modules are split by output rows
into the diffusers ``to_q``/``to_k``/``to_v``/``proj_mlp`` modules (:func:`fused_parts`). Not mapped:
cloneofsimo's numbered modules (``unet:12``), which only match other cloneofsimo files.
"""

from __future__ import annotations

import re
from typing import NamedTuple

_KOHYA_COMPONENTS = (
    ("lora_unet_", "unet"),
    ("lora_transformer_", "unet"),
    ("lora_te1_", "te1"),
    ("lora_te2_", "te2"),
    ("lora_te3_", "te3"),
    ("lora_te_", "te1"),
)
_PEFT_COMPONENTS = (
    ("unet.", "unet"),
    ("transformer.", "unet"),
    ("text_encoder_2.", "te2"),
    ("text_encoder_3.", "te3"),
    ("text_encoder.", "te1"),
)
_CLONEOFSIMO = re.compile(r"^(unet|text_encoder(?:_2)?):(\d+)$")

# SGM (input_blocks/middle_block/output_blocks) ResBlock layer names → diffusers ResnetBlock2D names.
_RESNET_LAYERS = (
    ("in_layers_0", "norm1"),
    ("in_layers_2", "conv1"),
    ("emb_layers_1", "time_emb_proj"),
    ("out_layers_0", "norm2"),
    ("out_layers_3", "conv2"),
    ("skip_connection", "conv_shortcut"),
)
_SGM_INPUT = re.compile(r"^input_blocks_(\d+)_(\d+)_(.+)$")
_SGM_MIDDLE = re.compile(r"^middle_block_(\d+)_(.+)$")
_SGM_OUTPUT = re.compile(r"^output_blocks_(\d+)_(\d+)_(.+)$")


def _resnet(rest: str) -> str:
    for sgm, diffusers in _RESNET_LAYERS:
        if rest.startswith(sgm):
            return diffusers + rest[len(sgm) :]
    return rest


def _sgm_to_diffusers(path: str) -> str:
    """``input_blocks_4_1_transformer…`` → ``down_blocks_1_attentions_0_transformer…`` (SD1/SD2/SDXL U-Nets:
    two layers per resolution level, a down/upsampler as the third)."""
    match = _SGM_INPUT.match(path)
    if match:
        index, layer, rest = int(match[1]), int(match[2]), match[3]
        if index == 0:
            return "conv_in" + rest[len("conv") :] if rest.startswith("conv") else path
        level, slot = divmod(index - 1, 3)
        if slot == 2:
            return f"down_blocks_{level}_downsamplers_0_conv" if rest.startswith("op") else path
        if layer == 0:
            return f"down_blocks_{level}_resnets_{slot}_{_resnet(rest)}"
        return f"down_blocks_{level}_attentions_{slot}_{rest}"
    match = _SGM_MIDDLE.match(path)
    if match:
        layer, rest = int(match[1]), match[2]
        if layer == 1:
            return f"mid_block_attentions_0_{rest}"
        return f"mid_block_resnets_{layer // 2}_{_resnet(rest)}"
    match = _SGM_OUTPUT.match(path)
    if match:
        index, layer, rest = int(match[1]), int(match[2]), match[3]
        level, slot = divmod(index, 3)
        if layer == 0:
            return f"up_blocks_{level}_resnets_{slot}_{_resnet(rest)}"
        if rest.startswith("conv") and not rest.startswith("conv_"):
            return f"up_blocks_{level}_upsamplers_0_conv"
        return f"up_blocks_{level}_attentions_{slot}_{rest}"
    return path


# FLUX: BFL/kohya names (`double_blocks_N_img_attn_proj`) → diffusers names. Fused projections are split in
# :data:`_FLUX_FUSED` (rows of the fused output, as fractions of it).
_FLUX_DOUBLE = re.compile(r"^double_blocks_(\d+)_(.+)$")
_FLUX_SINGLE = re.compile(r"^single_blocks_(\d+)_(.+)$")
_FLUX_DOUBLE_NAMES = {
    "img_attn_proj": "attn_to_out_0",
    "txt_attn_proj": "attn_to_add_out",
    "img_mlp_0": "ff_net_0_proj",
    "img_mlp_2": "ff_net_2",
    "txt_mlp_0": "ff_context_net_0_proj",
    "txt_mlp_2": "ff_context_net_2",
    "img_mod_lin": "norm1_linear",
    "txt_mod_lin": "norm1_context_linear",
}
_FLUX_SINGLE_NAMES = {"linear2": "proj_out", "modulation_lin": "norm_linear"}
_FLUX_FUSED = {
    # fused name → ((part name, first row, end row), …) in units of 1/denominator of the output rows
    "img_attn_qkv": (3, (("attn_to_q", 0, 1), ("attn_to_k", 1, 2), ("attn_to_v", 2, 3))),
    "txt_attn_qkv": (3, (("attn_add_q_proj", 0, 1), ("attn_add_k_proj", 1, 2), ("attn_add_v_proj", 2, 3))),
    # single blocks: q, k, v (hidden each) then the MLP input (4 × hidden) in one 7 × hidden output
    "linear1": (7, (("attn_to_q", 0, 1), ("attn_to_k", 1, 2), ("attn_to_v", 2, 3), ("proj_mlp", 3, 7))),
}


def _flux_to_diffusers(path: str) -> str:
    match = _FLUX_DOUBLE.match(path)
    if match and match[2] in _FLUX_DOUBLE_NAMES:
        return f"transformer_blocks_{match[1]}_{_FLUX_DOUBLE_NAMES[match[2]]}"
    match = _FLUX_SINGLE.match(path)
    if match and match[2] in _FLUX_SINGLE_NAMES:
        return f"single_transformer_blocks_{match[1]}_{_FLUX_SINGLE_NAMES[match[2]]}"
    return path


def fused_parts(canonical: str) -> tuple[int, list[tuple[str, int, int]]] | None:
    """For a FLUX BFL/kohya fused module (``double_blocks_N_img_attn_qkv``, ``single_blocks_N_linear1``): the
    denominator and the diffusers modules its output rows split into; None for an ordinary module."""
    component, _, path = canonical.partition("/")
    for pattern, prefix in ((_FLUX_DOUBLE, "transformer_blocks"), (_FLUX_SINGLE, "single_transformer_blocks")):
        match = pattern.match(path)
        if match and match[2] in _FLUX_FUSED:
            denominator, parts = _FLUX_FUSED[match[2]]
            return denominator, [(f"{component}/{prefix}_{match[1]}_{name}", a, b) for name, a, b in parts]
    return None


def canonical_module(module: str) -> str:
    """The layout-independent name of a module (as parsed from a tensor key by ``workbench.files._analysis``)."""
    match = _CLONEOFSIMO.match(module)
    if match:
        return f"{'unet' if match[1] == 'unet' else 'te2' if match[1].endswith('_2') else 'te1'}/#{match[2]}"
    component, rest = "", module
    for prefix, name in _KOHYA_COMPONENTS:
        if module.startswith(prefix):
            component, rest = name, module[len(prefix) :]
            break
    else:
        for prefix, name in _PEFT_COMPONENTS:
            if module.startswith(prefix):
                component, rest = name, module[len(prefix) :]
                break
        else:
            rest = module.removeprefix("base_model.model.")
            component = "te1" if rest.startswith("text_model") else "unet"
    path = rest.replace(".", "_")
    if component == "unet":
        path = path.removeprefix("unet_")  # kohya conversions that kept diffusers' `unet.` prefix
        path = _flux_to_diffusers(_sgm_to_diffusers(path))
    # Old diffusers attention processors: `attn1.processor.to_k_lora`, `to_out_lora` = `to_out.0`.
    path = path.replace("_processor_", "_")
    if path.endswith("_to_out"):
        path += "_0"
    return f"{component}/{path}"


class Block(NamedTuple):
    """Where a module sits: ``block`` (``IN04``…), ``stage`` (input/middle/output/…), ``level`` (resolution
    level, 0 = full latent resolution, None when not a U-Net level) and ``kind`` of layer."""

    block: str
    stage: str
    level: int | None
    kind: str


_DOWN = re.compile(r"^down_blocks_(\d+)_(attentions|resnets|downsamplers)_(\d+)")
_UP = re.compile(r"^up_blocks_(\d+)_(attentions|resnets|upsamplers)_(\d+)")
_DOUBLE = re.compile(r"^(?:double_blocks|transformer_blocks)_(\d+)_")
_SINGLE = re.compile(r"^(?:single_blocks|single_transformer_blocks)_(\d+)_")
_JOINT = re.compile(r"^(?:joint_blocks|transformer_blocks)_(\d+)_")
_TE_NAMES = {"te1": "TE", "te2": "TE2", "te3": "TE3"}

#: Stages in the order a heatmap shows them.
STAGE_ORDER = ("text encoder", "input", "middle", "output", "double", "single", "joint", "other")


def _kind(path: str) -> str:
    if "attn2" in path:
        return "cross-attention"
    if "attn1" in path or "self_attn" in path:
        return "self-attention"
    if "_attn_" in path or path.startswith("attn_"):
        return "attention"  # FLUX/SD3 joint attention over image and text tokens
    if "_ff_" in path or "mlp" in path or "_ff" in path or "linear1" in path or "linear2" in path:
        return "feed-forward"
    if "proj_in" in path or "proj_out" in path:
        return "projection"
    if "resnets" in path or "samplers" in path or "conv" in path:
        return "conv"
    return "other"


def block_of(canonical: str, family: str | None = None) -> Block:
    """The block of a canonical module name; ``family`` (SD1/SD2/SDXL/FLUX/SD3) fixes U-Net depth and DiT names."""
    component, _, path = canonical.partition("/")
    kind = _kind(path)
    if component in _TE_NAMES:
        return Block(_TE_NAMES[component], "text encoder", None, kind)
    if path.startswith("#"):
        return Block("?", "other", None, kind)
    levels = 3 if family == "SDXL" else 4
    match = _DOWN.match(path)
    if match:
        level, part, slot = int(match[1]), match[2], int(match[3])
        index = 3 * level + (3 if part == "downsamplers" else slot + 1)
        return Block(f"IN{index:02d}", "input", level, kind)
    if path.startswith("mid_block"):
        return Block("MID", "middle", levels - 1, kind)
    match = _UP.match(path)
    if match:
        level, part, slot = int(match[1]), match[2], int(match[3])
        index = 3 * level + (2 if part == "upsamplers" else slot)
        return Block(f"OUT{index:02d}", "output", levels - 1 - level, kind)
    if path.startswith("conv_in"):
        return Block("IN00", "input", 0, kind)
    if family == "SD3":
        match = _JOINT.match(path)
        if match:
            return Block(f"J{int(match[1]):02d}", "joint", None, kind)
    match = _SINGLE.match(path)
    if match:
        return Block(f"S{int(match[1]):02d}", "single", None, kind)
    match = _DOUBLE.match(path)
    if match:
        return Block(f"D{int(match[1]):02d}", "double", None, kind)
    return Block("BASE", "other", None, kind)


def block_sort_key(block: str, stage: str) -> tuple[int, str]:
    """Order blocks as the network runs: text encoders, input, middle, output, DiT blocks."""
    return (STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER), block)
