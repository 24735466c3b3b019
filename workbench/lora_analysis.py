"""What a LoRA's tensor names and shapes say: key layout, network type, rank, base model.

Only the header's ``{name: {dtype, shape}}`` entries are used; tensors are never loaded.
:func:`analyse_tensors` is pure and depends on nothing but the entries, so callers may cache its
result by the header's structure key. Metadata-based claims (``ss_network_dim``,
``ss_base_model_version``…) are combined with it in :func:`base_model_from_metadata` and by
``workbench.lora_file``.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Any, Mapping

# --- key naming ------------------------------------------------------------------------------

_KOHYA_PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_", "lora_te3_", "lora_transformer_")
_PEFT_PREFIXES = ("unet.", "text_encoder.", "text_encoder_2.", "transformer.", "base_model.model.")
_CLONEOFSIMO = re.compile(r"^(unet|text_encoder|text_encoder_2):\d+:(down|up)$")

# `<module><sep><param>`; non-greedy module so the longest known param wins.
_PARAM = re.compile(
    r"^(?P<module>.+?)[._](?P<param>"
    r"lora_down\.weight|lora_up\.weight|lora_mid\.weight|lora_A\.weight|lora_B\.weight|"
    r"lora\.down\.weight|lora\.up\.weight|lora_linear_layer\.down\.weight|lora_linear_layer\.up\.weight|"
    r"lora_magnitude_vector|alpha|dora_scale|"
    r"hada_w1_a|hada_w1_b|hada_w2_a|hada_w2_b|hada_t1|hada_t2|"
    r"lokr_w1|lokr_w1_a|lokr_w1_b|lokr_w2|lokr_w2_a|lokr_w2_b|lokr_t2|"
    r"diff|diff_b|oft_blocks|oft_diag|on_input|weight|bias)$"
)
_DOWN_PARAMS = {"lora_down.weight", "lora_A.weight", "lora.down.weight", "lora_linear_layer.down.weight"}
_UP_PARAMS = {"lora_up.weight", "lora_B.weight", "lora.up.weight", "lora_linear_layer.up.weight"}
_TE_MARKERS = ("lora_te", "text_encoder")

_CROSS_ATTN_WIDTH = {768: "SD1", 1024: "SD2", 2048: "SDXL", 1280: "SDXL"}

BASE_MODEL_FAMILY = {
    "SD1": "SD1", "SD2": "SD2", "SDXL": "SDXL", "Pony": "SDXL", "Illustrious": "SDXL", "NoobAI": "SDXL",
    "SD3": "SD3", "FLUX": "FLUX", "Chroma": "FLUX", "Lumina2": "Lumina2", "HunyuanImage": "HunyuanImage",
}


def base_model_family(name: str | None) -> str | None:
    """Architecture family of a base-model label (Pony/Illustrious/NoobAI are SDXL finetunes)."""
    return BASE_MODEL_FAMILY.get(name) if name else None


def _classify_key(key: str) -> tuple[str, str, str]:
    """Return ``(layout, module, param)`` for one tensor name."""
    m = _CLONEOFSIMO.match(key)
    if m:
        return "cloneofsimo", key.rsplit(":", 1)[0], m.group(2)
    m = _PARAM.match(key)
    module, param = (m.group("module"), m.group("param")) if m else (key, "")
    if key.startswith(_KOHYA_PREFIXES):
        return "kohya", module, param
    if key.endswith(("_lora.down.weight", "_lora.up.weight")):
        return "diffusers_attn", module, param
    if param in ("lora_A.weight", "lora_B.weight", "lora.down.weight", "lora.up.weight",
                 "lora_linear_layer.down.weight", "lora_linear_layer.up.weight", "lora_magnitude_vector"):
        return "peft", module, param
    if key.startswith(_PEFT_PREFIXES) and param:
        return "peft", module, param
    return "unknown", module, param


def _is_text_encoder(module: str) -> bool:
    return module.startswith(_TE_MARKERS)


def analyse_tensors(tensors: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Structure facts from validated tensor entries.

    Keys: key_layout, network_type, ranks ({rank: modules}), rank_min, rank_max, module_count,
    tensor_count, has_text_encoder, dtype (most common), alpha_tensor (name of the first
    per-module ``alpha`` or None), base_model, base_model_evidence (tensor route only).
    """
    layouts: Counter[str] = Counter()
    params: Counter[str] = Counter()
    dtypes: Counter[str] = Counter()
    ranks: dict[str, int] = {}
    modules: set[str] = set()
    cross_attn: list[tuple[int, str]] = []
    unnamed_widths: set[int] = set()
    has_te = False
    conv_kernel = False
    alpha_tensor = None
    for key, info in tensors.items():
        layout, module, param = _classify_key(key)
        layouts[layout] += 1
        params[param] += 1
        dtypes[info.get("dtype")] += 1
        shape = info.get("shape") or []
        if param and param not in ("alpha",):
            modules.add(module)
        if not has_te and _is_text_encoder(module):
            has_te = True
        if param == "alpha" and alpha_tensor is None and not shape:
            alpha_tensor = key
        down = param in _DOWN_PARAMS or param == "down"
        if down and len(shape) >= 2:
            ranks[module] = shape[0]
            if len(shape) == 4 and (shape[2] > 1 or shape[3] > 1):
                conv_kernel = True
            if "attn2" in module and ("to_k" in module or "to_v" in module):
                cross_attn.append((shape[1], key))
            if layout == "cloneofsimo":
                unnamed_widths.add(shape[1])
        elif param == "lora_mid.weight":
            conv_kernel = True
        elif param in ("hada_w1_b", "lokr_w1_b", "lokr_w2_b") and len(shape) >= 2:
            # LoHa/LoKr low-rank factors: `_b` is [rank, in(...)]; LoKr w2 beats w1 when both exist.
            if param != "lokr_w1_b" or module not in ranks:
                ranks[module] = shape[0]
            if param == "hada_w1_b" and "attn2" in module and ("to_k" in module or "to_v" in module):
                cross_attn.append((shape[1], key))
            if len(shape) == 4 and (shape[2] > 1 or shape[3] > 1):
                conv_kernel = True

    key_layout = layouts.most_common(1)[0][0] if layouts else "unknown"
    if key_layout == "unknown" and len(layouts) > 1:
        key_layout = next(lay for lay, _ in layouts.most_common() if lay != "unknown")
    rank_counts = Counter(ranks.values())
    network_type = _network_type(params, conv_kernel, bool(ranks))
    base, evidence = _base_model_from_tensors(tensors, cross_attn, unnamed_widths, key_layout)
    return {
        "key_layout": key_layout,
        "network_type": network_type,
        "ranks": dict(rank_counts),
        "rank_min": min(rank_counts) if rank_counts else None,
        "rank_max": max(rank_counts) if rank_counts else None,
        "module_count": len(modules),
        "tensor_count": len(tensors),
        "has_text_encoder": has_te,
        "dtype": dtypes.most_common(1)[0][0] if dtypes else None,
        "alpha_tensor": alpha_tensor,
        "base_model": base,
        "base_model_evidence": evidence,
    }


def _network_type(params: Counter[str], conv_kernel: bool, has_lowrank: bool) -> str:
    if params["diff"]:
        return "full"
    if params["lokr_w1"] or params["lokr_w1_a"] or params["lokr_w2"] or params["lokr_w2_a"]:
        return "LoKr"
    if params["hada_w1_a"]:
        return "LoHa"
    if params["dora_scale"] or params["lora_magnitude_vector"]:
        return "DoRA"
    if has_lowrank:
        return "LoCon" if conv_kernel else "LoRA"
    return "unknown"


def nominal_rank(ranks: Mapping[int, int]) -> int | None:
    """Most common per-module rank (ties go to the larger rank)."""
    if not ranks:
        return None
    return max(ranks.items(), key=lambda item: (item[1], item[0]))[0]


def _base_model_from_tensors(tensors: Mapping[str, Any], cross_attn: list[tuple[int, str]],
                             unnamed_widths: set[int], key_layout: str) -> tuple[str | None, str]:
    names = " ".join(tensors) if len(tensors) < 20000 else " ".join(list(tensors)[:20000])
    if "double_blocks" in names or "single_blocks" in names or "single_transformer_blocks" in names:
        return "FLUX", "tensor names: FLUX double_blocks/single_blocks"
    if "joint_blocks" in names or "context_block" in names:
        return "SD3", "tensor names: SD3 MMDiT joint_blocks"
    if cross_attn:
        widths = Counter(width for width, _ in cross_attn)
        width = widths.most_common(1)[0][0]
        family = _CROSS_ATTN_WIDTH.get(width)
        if family:
            return family, f"tensor shapes: cross-attention (attn2 to_k/to_v) input width {width}"
    if "lora_te1_" in names or "lora_te2_" in names or "text_encoder_2." in names:
        return "SDXL", "tensor names: two text encoders (lora_te1_/lora_te2_)"
    if "input_blocks" in names or "output_blocks" in names or "middle_block" in names:
        return "SDXL", "tensor names: SGM U-Net blocks (input_blocks/output_blocks)"
    te_widths = Counter(info.get("shape", [0, 0])[1] for key, info in tensors.items()
                        if key.startswith(("lora_te_", "text_encoder.", "text_encoder:"))
                        and len(info.get("shape") or ()) >= 2
                        and (key.endswith(("lora_down.weight", "lora_A.weight", ":down"))))
    for width, family in ((1024, "SD2"), (768, "SD1")):
        if te_widths.get(width):
            return family, f"tensor shapes: text-encoder input width {width}"
    if key_layout == "cloneofsimo":
        for width in (2048, 1024, 768):
            if width in unnamed_widths:
                return _CROSS_ATTN_WIDTH[width], f"tensor shapes: input width {width} among unnamed (cloneofsimo) modules"
    return None, ""


# --- metadata route --------------------------------------------------------------------------

_FINETUNE_NAMES = (("pony", "Pony"), ("illustrious", "Illustrious"), ("noobai", "NoobAI"), ("noob_ai", "NoobAI"))


def normalize_base_model(label: Any) -> str | None:
    """Map a base-model label from any source to SD1/SD2/SDXL/SD3/FLUX/Pony/Illustrious/NoobAI/….

    Understands Civitai ``baseModel`` ("SD 1.5", "SDXL 1.0", "Pony", "Flux.1 D"), A1111
    ``sd version`` ("SD1"), kohya ``ss_base_model_version`` ("sdxl_base_v1-0") and SAI
    ``modelspec.architecture`` ("stable-diffusion-xl-v1-base/lora"). Unknown → None.
    """
    if not isinstance(label, str):
        return None
    text = label.strip().lower()
    if not text or text in ("unknown", "other", "none"):
        return None
    for needle, name in _FINETUNE_NAMES:
        if needle in text:
            return name
    compact = re.sub(r"[\s_.\-]", "", text)
    if compact.startswith("stablediffusion"):
        compact = "sd" + compact[len("stablediffusion"):]
    if "flux" in compact:
        return "FLUX"
    if "chroma" in compact:
        return "Chroma"
    if "lumina" in compact:
        return "Lumina2"
    if "hunyuan" in compact:
        return "HunyuanImage"
    if compact.startswith("sdxl") or compact.startswith("xl") or "sdxl" in compact:
        return "SDXL"
    if compact.startswith(("sd3", "sdv3")) or "mmdit" in compact:
        return "SD3"
    if compact.startswith(("sd2", "sdv2")):
        return "SD2"
    if compact.startswith(("sd1", "sdv1")) or compact in ("sd15", "v15"):
        return "SD1"
    return None


def _name_hint(name: str) -> str | None:
    low = name.lower()
    for needle, label in _FINETUNE_NAMES:
        if needle in low:
            return label
    if "flux" in low:
        return "FLUX"
    if "sdxl" in low or re.search(r"(^|[^a-z])xl([^a-z]|$)", low) or "_xl" in low or "xl_" in low:
        return "SDXL"
    if re.search(r"v2[-_.]?[01]|sd2|768-v", low):
        return "SD2"
    if re.search(r"v1[-_.]?[45]|sd1[-_.]?[45]|sd15|sd-1", low):
        return "SD1"
    return None


def base_model_from_metadata(md: Mapping[str, Any]) -> tuple[str | None, str]:
    """Base model claimed by header metadata, with the evidence string.

    Order: ``ss_base_model_version``, ``modelspec.architecture``, ``ss_v2=True``, then a hint in
    ``ss_sd_model_name``. The model name may only *refine* an SDXL claim into Pony/Illustrious/NoobAI.
    """
    found: str | None = None
    evidence = ""
    for key in ("ss_base_model_version", "modelspec.architecture"):
        value = md.get(key)
        label = normalize_base_model(value)
        if label:
            found, evidence = label, f"metadata: {key}={value}"
            break
    if found is None and str(md.get("ss_v2", "")).strip().lower() == "true":
        found, evidence = "SD2", "metadata: ss_v2=True"
    model_name = md.get("ss_sd_model_name")
    if isinstance(model_name, str) and model_name.strip():
        hint = _name_hint(model_name)
        if hint and (found is None or (found == "SDXL" and base_model_family(hint) == "SDXL" and hint != "SDXL")):
            found = hint
            evidence = (evidence + "; " if evidence else "metadata: ") + f"ss_sd_model_name={model_name}"
    return found, evidence
