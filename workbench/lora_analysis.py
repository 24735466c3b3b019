"""What a LoRA's tensor names and shapes say: key layout, network type, rank, base model.

Only the header's ``{name: {dtype, shape}}`` entries are used; tensors are never loaded.
:func:`analyse_tensors` is pure and depends on nothing but the entries, so callers may cache its
result by the header's structure key. Metadata-based claims (``ss_network_dim``,
``ss_base_model_version``…) are combined with it in :func:`base_model_from_metadata` and by
``workbench.lora_file``.
"""
from __future__ import annotations

import operator
import re
from collections import Counter
from typing import Any, Mapping, NamedTuple

# --- key naming ------------------------------------------------------------------------------

_KOHYA_PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_", "lora_te3_", "lora_transformer_")
_PEFT_PREFIXES = ("unet.", "text_encoder.", "text_encoder_2.", "transformer.", "base_model.model.")
_PARAMS = (
    r"lora_down\.weight|lora_up\.weight|lora_mid\.weight|lora_A\.weight|lora_B\.weight|"
    r"lora\.down\.weight|lora\.up\.weight|lora_linear_layer\.down\.weight|lora_linear_layer\.up\.weight|"
    r"lora_magnitude_vector|alpha|dora_scale|"
    r"hada_w1_a|hada_w1_b|hada_w2_a|hada_w2_b|hada_t1|hada_t2|"
    r"lokr_w1|lokr_w1_a|lokr_w1_b|lokr_w2|lokr_w2_a|lokr_w2_b|lokr_t2|"
    r"diff|diff_b|oft_blocks|oft_diag|on_input|weight|bias"
)
# One pass over all names joined by "\n": every line yields (cloneofsimo module, its param,
# module, param, unmatched name). The module is non-greedy so the longest known param wins;
# cloneofsimo names look like `unet:0:down`.
_KEY_LINE = re.compile(
    r"^(?:((?:unet|text_encoder(?:_2)?):\d+):(down|up)|(.+?)[._](" + _PARAMS + r")|(.*))$", re.MULTILINE)
_DOWN_PARAMS = frozenset({"lora_down.weight", "lora_A.weight", "lora.down.weight", "lora_linear_layer.down.weight",
                          "down"})
_FACTOR_PARAMS = frozenset({"hada_w1_b", "lokr_w1_b", "lokr_w2_b"})  # LoHa/LoKr `_b` = [rank, in(...)]
_PEFT_PARAMS = frozenset({"lora_A.weight", "lora_B.weight", "lora.down.weight", "lora.up.weight",
                          "lora_linear_layer.down.weight", "lora_linear_layer.up.weight", "lora_magnitude_vector"})
_TE_MARKERS = ("lora_te", "text_encoder")

_CROSS_ATTN_WIDTH = {768: "SD1", 1024: "SD2", 2048: "SDXL", 1280: "SDXL"}

BASE_MODEL_FAMILY = {
    "SD1": "SD1", "SD2": "SD2", "SDXL": "SDXL", "Pony": "SDXL", "Illustrious": "SDXL", "NoobAI": "SDXL",
    "SD3": "SD3", "FLUX": "FLUX", "Chroma": "FLUX", "Lumina2": "Lumina2", "HunyuanImage": "HunyuanImage",
}


def base_model_family(name: str | None) -> str | None:
    """Architecture family of a base-model label (Pony/Illustrious/NoobAI are SDXL finetunes)."""
    return BASE_MODEL_FAMILY.get(name) if name else None


class _KeyFacts(NamedTuple):
    """What one tensor name says, independent of its shape (cached per name)."""

    module: str
    param: str
    layout: str
    text_encoder: bool
    rank_source: bool  # a tensor whose shape[0] is the module's rank
    cross_attn_kv: bool  # a U-Net cross-attention K/V input projection (width → base model)


_KEY_FACTS_CACHE: dict[str, _KeyFacts] = {}
_KEY_FACTS_CACHE_MAX = 200_000


def _layout_of(key: str, param: str) -> str:
    if param in ("down", "up"):
        return "cloneofsimo"
    if key.startswith(_KOHYA_PREFIXES):
        return "kohya"
    if key.endswith(("_lora.down.weight", "_lora.up.weight")):
        return "diffusers_attn"
    if param and (param in _PEFT_PARAMS or key.startswith(_PEFT_PREFIXES)):
        return "peft"
    return "unknown"


def _learn_keys(keys: list[str]) -> None:
    text = "\n".join(keys)
    if text.count("\n") != len(keys) - 1:  # a name containing a newline would shift the lines
        text = "\n".join(key.replace("\n", " ") for key in keys)
    for key, (c_mod, c_param, mod, param, rest) in zip(keys, _KEY_LINE.findall(text)):
        module, param = c_mod or mod or rest, c_param or param
        rank_source = param in _DOWN_PARAMS or param in _FACTOR_PARAMS
        _KEY_FACTS_CACHE[key] = _KeyFacts(
            module, param, _layout_of(key, param), module.startswith(_TE_MARKERS), rank_source,
            rank_source and not param.startswith("lokr") and "attn2" in module
            and ("to_k" in module or "to_v" in module))


def key_facts(keys: list[str]) -> list[_KeyFacts]:
    """Facts for each tensor name, cached per name.

    Libraries reuse a handful of naming schemes, so after the first file of a scheme this is
    dictionary lookups only (the regex costs a few microseconds per name).
    """
    cache = _KEY_FACTS_CACHE
    new = [key for key in keys if key not in cache]
    if new:
        if len(cache) + len(new) > _KEY_FACTS_CACHE_MAX:
            cache.clear()
            new = list(dict.fromkeys(keys))
        _learn_keys(new)
    return list(map(cache.__getitem__, keys))


def split_keys(keys: list[str]) -> tuple[list[str], list[str]]:
    """``(modules, params)`` for tensor names; param is "" for names of no known form."""
    facts = key_facts(keys)
    return [f.module for f in facts], [f.param for f in facts]


def analyse_tensors(tensors: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Structure facts from validated tensor entries.

    Keys: key_layout, network_type, ranks ({rank: modules}), rank_min, rank_max, module_count,
    tensor_count, has_text_encoder, dtype (most common), alpha_tensor (name of the first
    per-module ``alpha`` or None), base_model, base_model_evidence (tensor route only).
    """
    keys = list(tensors)
    infos = list(tensors.values())
    facts = key_facts(keys)
    param_counts = Counter(f.param for f in facts)
    dtypes = Counter(map(operator.itemgetter("dtype"), infos))
    module_set = {f.module for f in facts if f.param and f.param != "alpha"}
    has_te = any(f.text_encoder for f in facts)
    alpha_tensor = None
    if param_counts["alpha"]:
        alpha_tensor = next((key for key, f, info in zip(keys, facts, infos)
                             if f.param == "alpha" and not info["shape"]), None)

    ranks: dict[str, int] = {}
    cross_attn: list[tuple[int, str]] = []
    unnamed_widths: set[int] = set()
    conv_kernel = param_counts["lora_mid.weight"] > 0
    for key, f, info in zip(keys, facts, infos):
        if not f.rank_source:
            continue
        shape = info["shape"]
        if len(shape) < 2:
            continue
        if f.param != "lokr_w1_b" or f.module not in ranks:  # LoKr: w2's rank beats w1's
            ranks[f.module] = shape[0]
        if len(shape) == 4 and (shape[2] > 1 or shape[3] > 1):
            conv_kernel = True
        if f.cross_attn_kv:
            cross_attn.append((shape[1], key))
        elif f.param == "down":
            unnamed_widths.add(shape[1])

    layouts = Counter(f.layout for f in facts)
    key_layout = next((lay for lay, _ in layouts.most_common() if lay != "unknown"), "unknown")
    rank_counts = Counter(ranks.values())
    network_type = _network_type(param_counts, conv_kernel, bool(ranks))
    base, evidence = _base_model_from_tensors(tensors, cross_attn, unnamed_widths, key_layout)
    return {
        "key_layout": key_layout,
        "network_type": network_type,
        "ranks": dict(rank_counts),
        "rank_min": min(rank_counts) if rank_counts else None,
        "rank_max": max(rank_counts) if rank_counts else None,
        "module_count": len(module_set),
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
