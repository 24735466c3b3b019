"""What a LoRA's tensor names and shapes say: key layout, network type, rank, base model.

Only the header's ``{name: {dtype, shape}}`` entries are used; tensors are never loaded.
:func:`analyse_tensors` is pure and depends on nothing but the entries, so callers may cache its
result by the header's structure key. Metadata-based claims (``ss_network_dim``,
``ss_base_model_version``…) are combined with it in :func:`base_model_from_metadata` and by
``workbench.files._inspect``.
"""

from __future__ import annotations

import operator
import re
from collections import Counter
from collections.abc import Mapping
from typing import Any, NamedTuple

from workbench.files._taxonomy import CROSS_ATTENTION_WIDTH, FINETUNE_NAMES, base_model_family, normalize_base_model

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
    r"^(?:((?:unet|text_encoder(?:_2)?):\d+):(down|up)|(.+?)[._](" + _PARAMS + r")|(.*))$", re.MULTILINE
)
_DOWN_PARAMS = frozenset(
    {"lora_down.weight", "lora_A.weight", "lora.down.weight", "lora_linear_layer.down.weight", "down"}
)
_FACTOR_PARAMS = frozenset({"hada_w1_b", "lokr_w1_b", "lokr_w2_b"})  # LoHa/LoKr `_b` = [rank, in(...)]
_PEFT_PARAMS = frozenset(
    {
        "lora_A.weight",
        "lora_B.weight",
        "lora.down.weight",
        "lora.up.weight",
        "lora_linear_layer.down.weight",
        "lora_linear_layer.up.weight",
        "lora_magnitude_vector",
    }
)
_TE_MARKERS = ("lora_te", "text_encoder")


class _KeyFacts(NamedTuple):
    """What one tensor name says, independent of its shape (cached per name)."""

    module: str
    param: str
    layout: str
    text_encoder: bool
    rank_source: bool  # a tensor whose shape[0] is the module's rank
    cross_attn_kv: bool  # a U-Net cross-attention K/V input projection (width → base model)


_KEY_FACTS_CACHE: dict[str, _KeyFacts] = {}
_KEY_FACTS_CACHE_MAX = 50_000


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
            module,
            param,
            _layout_of(key, param),
            module.startswith(_TE_MARKERS),
            rank_source,
            rank_source
            and not param.startswith("lokr")
            and "attn2" in module
            and ("to_k" in module or "to_v" in module),
        )


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


class _NameFacts(NamedTuple):
    """Everything a file's set of tensor names says (cached per name list; shapes come per file)."""

    param_counts: Counter[str]
    module_count: int
    has_text_encoder: bool
    key_layout: str
    rank_index: list[int]  # tensors whose shape[0] is their module's rank
    rank_modules: list[str]
    cross_attn_index: list[int]  # cross-attention K/V down tensors (input width → base model)
    unnamed_down_index: list[int]  # cloneofsimo `:down` tensors
    te_down_index: list[int]  # text-encoder down tensors (input width → SD1/SD2)
    alpha_index: list[int]
    name_base_model: tuple[str | None, str]  # verdict from names alone, before shapes
    name_fallback: tuple[str | None, str]  # name verdict used only when shapes say nothing
    text_encoder_module_count: int
    has_second_text_encoder: bool
    foreign_keys: list[str]  # names no LoRA loader understands (bundled embeddings, …), at most 5


_NAME_FACTS_CACHE: dict[tuple[str, ...], _NameFacts] = {}
_NAME_FACTS_CACHE_MAX = 128  # each holds its name tuple (~100 KB)
_NAME_FACTS_MAX_KEYS = 10_000  # real LoRAs have ≤ ~3,000 tensors; larger name lists are not cached


def _name_facts(keys: list[str]) -> _NameFacts:
    signature = tuple(keys)
    cached = _NAME_FACTS_CACHE.get(signature)
    if cached is not None:
        return cached
    facts = key_facts(keys)
    param_counts = Counter(f.param for f in facts)
    layouts = Counter(f.layout for f in facts)
    rank_index = [i for i, f in enumerate(facts) if f.rank_source]
    names = " ".join(keys)
    name_verdict: tuple[str | None, str]
    fallback: tuple[str | None, str]
    if "double_blocks" in names or "single_blocks" in names or "single_transformer_blocks" in names:
        name_verdict = ("FLUX", "tensor names: FLUX double_blocks/single_blocks")
    elif "joint_blocks" in names or "context_block" in names:
        name_verdict = ("SD3", "tensor names: SD3 MMDiT joint_blocks")
    else:
        name_verdict = (None, "")
    if "lora_te1_" in names or "lora_te2_" in names or "text_encoder_2." in names:
        fallback = ("SDXL", "tensor names: two text encoders (lora_te1_/lora_te2_)")
    elif "input_blocks" in names or "output_blocks" in names or "middle_block" in names:
        fallback = ("SDXL", "tensor names: SGM U-Net blocks (input_blocks/output_blocks)")
    else:
        fallback = (None, "")
    result = _NameFacts(
        param_counts=param_counts,
        module_count=len({f.module for f in facts if f.param and f.param != "alpha"}),
        has_text_encoder=any(f.text_encoder for f in facts),
        key_layout=next((lay for lay, _ in layouts.most_common() if lay != "unknown"), "unknown"),
        rank_index=rank_index,
        rank_modules=[facts[i].module for i in rank_index],
        cross_attn_index=[i for i in rank_index if facts[i].cross_attn_kv],
        unnamed_down_index=[
            i for i in rank_index if facts[i].param == "down" and not facts[i].module.startswith("text_encoder")
        ],
        te_down_index=[
            i for i in rank_index if facts[i].text_encoder and not facts[i].param.startswith(("hada", "lokr"))
        ],
        alpha_index=[i for i, f in enumerate(facts) if f.param == "alpha"],
        name_base_model=name_verdict,
        name_fallback=fallback,
        text_encoder_module_count=len({f.module for f in facts if f.text_encoder and f.param and f.param != "alpha"}),
        has_second_text_encoder="lora_te2_" in names or "text_encoder_2." in names,
        foreign_keys=[key for key, f in zip(keys, facts) if f.layout == "unknown"][:5],
    )
    if len(keys) > _NAME_FACTS_MAX_KEYS:
        return result  # a hostile 50,000-tensor file: 128 of them cached would hold ~400 MB
    if len(_NAME_FACTS_CACHE) >= _NAME_FACTS_CACHE_MAX:
        _NAME_FACTS_CACHE.pop(next(iter(_NAME_FACTS_CACHE)))
    _NAME_FACTS_CACHE[signature] = result
    return result


def analyse_tensors(tensors: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Structure facts from validated tensor entries.

    Keys: key_layout, network_type, ranks ({rank: modules}), rank_min, rank_max, module_count,
    tensor_count, has_text_encoder, text_encoder_module_count, has_second_text_encoder, foreign_keys
    (names no LoRA loader understands, at most 5), dtype (most common), alpha_tensor (name of the first
    per-module scalar ``alpha`` or None), base_model, base_model_evidence (tensor route only).
    """
    keys = list(tensors)
    infos = list(tensors.values())
    names = _name_facts(keys)
    shapes = list(map(operator.itemgetter("shape"), infos))
    rank_shapes = [shapes[i] for i in names.rank_index]
    ranks: dict[str, int] = {}
    if names.param_counts["lokr_w1_b"]:
        facts = key_facts(keys)
        for index, module, shape in zip(names.rank_index, names.rank_modules, rank_shapes):
            if len(shape) >= 2 and (facts[index].param != "lokr_w1_b" or module not in ranks):
                ranks[module] = shape[0]  # LoKr: w2's rank beats w1's
    else:
        ranks = {module: shape[0] for module, shape in zip(names.rank_modules, rank_shapes) if len(shape) >= 2}
    conv_kernel = names.param_counts["lora_mid.weight"] > 0 or any(
        len(shape) == 4 and (shape[2] > 1 or shape[3] > 1) for shape in rank_shapes
    )
    alpha_tensor = next((keys[i] for i in names.alpha_index if not shapes[i]), None)
    dtypes = Counter(map(operator.itemgetter("dtype"), infos))
    rank_counts = Counter(ranks.values())
    base, evidence = _base_model_from_shapes(names, shapes)
    return {
        "key_layout": names.key_layout,
        "network_type": _network_type(names.param_counts, conv_kernel, bool(ranks)),
        "ranks": dict(rank_counts),
        "rank_min": min(rank_counts) if rank_counts else None,
        "rank_max": max(rank_counts) if rank_counts else None,
        "module_count": names.module_count,
        "tensor_count": len(keys),
        "has_text_encoder": names.has_text_encoder,
        "text_encoder_module_count": names.text_encoder_module_count,
        "has_second_text_encoder": names.has_second_text_encoder,
        "foreign_keys": names.foreign_keys,
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


def _widths(shapes: list[Any], index: list[int]) -> Counter[int]:
    return Counter(shapes[i][1] for i in index if len(shapes[i]) >= 2)


def _base_model_from_shapes(names: _NameFacts, shapes: list[Any]) -> tuple[str | None, str]:
    """Tensor route: FLUX/SD3 block names, cross-attention width, SDXL names, text-encoder width."""
    if names.name_base_model[0]:
        return names.name_base_model
    widths = _widths(shapes, names.cross_attn_index)
    if widths:
        width = widths.most_common(1)[0][0]
        family = CROSS_ATTENTION_WIDTH.get(width)
        if family:
            return family, f"tensor shapes: cross-attention (attn2 to_k/to_v) input width {width}"
    if names.name_fallback[0]:
        return names.name_fallback
    te_widths = _widths(shapes, names.te_down_index)
    for width, family in ((1024, "SD2"), (768, "SD1")):
        if te_widths.get(width):
            return family, f"tensor shapes: text-encoder input width {width}"
    unnamed = _widths(shapes, names.unnamed_down_index)
    for width in (2048, 1024, 768):
        if unnamed.get(width):
            return CROSS_ATTENTION_WIDTH[
                width
            ], f"tensor shapes: input width {width} among unnamed (cloneofsimo) modules"
    return None, ""


# --- metadata route --------------------------------------------------------------------------


def _name_hint(name: str) -> str | None:
    low = name.lower()
    for needle, label in FINETUNE_NAMES:
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
