"""Domain facts every stage shares, each stated once: base-model labels and their families, the file
suffixes a LoRA comes in, and the fields a user may edit.

The catalog, the generation backends and the views all ask these; a second list anywhere else is a bug
(the catalog and the generation check once disagreed about "Chroma" and "SD 3.5").
"""

from __future__ import annotations

import re
from typing import Any

#: Suffixes catalogued as LoRA files. Pickle formats are listed but never opened.
LORA_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
#: The one format whose tensors are read (weights analysis, thumbnails of embedded covers, in-process loading).
TENSOR_SUFFIXES = (".safetensors",)

#: The tiny random-weight test pipeline is a base model of its own: its LoRAs run nowhere else.
TINY_BASE_MODEL = "tiny-sd1 (random weights)"
#: What the tiny LoRAs write as ``ss_base_model_version``.
TINY_BASE_MODEL_VERSION = "tiny_sd1"
#: Cross-attention width of the tiny U-Net (how its LoRAs are told apart by shape).
TINY_CROSS_ATTENTION_DIM = 32

#: Every base-model label the workbench uses, in display order, with its architecture family: a LoRA
#: runs on any checkpoint of its family (Pony/Illustrious/NoobAI are SDXL finetunes, Chroma is FLUX-based).
BASE_MODEL_FAMILY: dict[str, str] = {
    "SD1": "SD1",
    "SD2": "SD2",
    "SDXL": "SDXL",
    "Pony": "SDXL",
    "Illustrious": "SDXL",
    "NoobAI": "SDXL",
    "SD3": "SD3",
    "FLUX": "FLUX",
    "Chroma": "FLUX",
    "Lumina2": "Lumina2",
    "HunyuanImage": "HunyuanImage",
    TINY_BASE_MODEL: TINY_BASE_MODEL,
}
BASE_MODELS = tuple(BASE_MODEL_FAMILY)

#: U-Net cross-attention input width -> base model (the tensor-shape route).
CROSS_ATTENTION_WIDTH: dict[int, str] = {
    768: "SD1",
    1024: "SD2",
    2048: "SDXL",
    1280: "SDXL",
    TINY_CROSS_ATTENTION_DIM: TINY_BASE_MODEL,
}

#: SDXL finetunes named in labels and model names (substring, label).
FINETUNE_NAMES = (("pony", "Pony"), ("illustrious", "Illustrious"), ("noobai", "NoobAI"), ("noob_ai", "NoobAI"))

#: Fields a user edits, with their storage types; a rescan never touches them.
USER_FIELD_TYPES: dict[str, str] = {
    "tags": "list<string>",
    "notes": "string",
    "rating": "int32",
    "favorite": "bool",
    "preferred_weight": "float64",
    "trigger_words": "list<string>",
    "base_model_override": "string",
    "negative_text": "string",
    "preview_override": "string",
}
USER_FIELDS = tuple(USER_FIELD_TYPES)


def normalize_base_model(label: Any) -> str | None:
    """Map a base-model label from any source to one of :data:`BASE_MODELS` (unknown -> None).

    Understands Civitai ``baseModel`` ("SD 1.5", "SDXL 1.0", "Pony", "Flux.1 D", "SD 3.5"), A1111
    ``sd version`` ("SD1"), kohya ``ss_base_model_version`` ("sdxl_base_v1-0", "tiny_sd1") and SAI
    ``modelspec.architecture`` ("stable-diffusion-xl-v1-base/lora").
    """
    if not isinstance(label, str):
        return None
    if label in BASE_MODEL_FAMILY:
        return label
    text = label.strip().lower()
    if not text or text in ("unknown", "other", "none"):
        return None
    if text.startswith("tiny"):
        return TINY_BASE_MODEL
    for needle, name in FINETUNE_NAMES:
        if needle in text:
            return name
    compact = re.sub(r"[\s_.\-]", "", text)
    if compact.startswith("stablediffusion"):
        compact = "sd" + compact[len("stablediffusion") :]
    if "chroma" in compact:
        return "Chroma"
    if "flux" in compact:
        return "FLUX"
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


def base_model_family(label: Any) -> str | None:
    """Architecture family of any base-model label ("Pony" -> "SDXL", "Flux.1 Chroma" -> "FLUX")."""
    name = normalize_base_model(label)
    return BASE_MODEL_FAMILY.get(name) if name else None
