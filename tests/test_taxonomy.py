"""One base-model taxonomy: the catalog, the generation check and the views agree on every label."""

import pathlib
import re

import pytest

from workbench.files import (
    BASE_MODEL_FAMILY,
    BASE_MODELS,
    LORA_SUFFIXES,
    TINY_BASE_MODEL,
    base_model_family,
    base_model_from_metadata,
    merge_fields,
    normalize_base_model,
)
from workbench.generate import LoraFileInfo, LoraIncompatibleError, check_diffusers_compatible

CASES = [
    ("Chroma", "Chroma", "FLUX"),
    ("chroma1-hd", "Chroma", "FLUX"),
    ("Flux.1 D", "FLUX", "FLUX"),
    ("SD 3.5", "SD3", "SD3"),
    ("SD 3.5 Large", "SD3", "SD3"),
    ("sd3.5_medium", "SD3", "SD3"),
    ("Pony", "Pony", "SDXL"),
    ("Illustrious", "Illustrious", "SDXL"),
    ("NoobAI", "NoobAI", "SDXL"),
    ("sdxl_base_v1-0", "SDXL", "SDXL"),
    ("stable-diffusion-xl-v1-base/lora", "SDXL", "SDXL"),
    ("SD 1.5", "SD1", "SD1"),
    ("sd_v2_768_v", "SD2", "SD2"),
    ("tiny_sd1", TINY_BASE_MODEL, TINY_BASE_MODEL),
]


def _info(family: str | None) -> LoraFileInfo:
    return LoraFileInfo(
        path=pathlib.Path("x.safetensors"),
        layout="kohya",
        network_type="LoRA",
        family=family,
        family_from_shapes=None,
        has_text_encoder=False,
        has_te2=False,
        unet_modules=1,
        te_modules=0,
        foreign_keys=[],
        metadata={},
        output_name=None,
    )


@pytest.mark.parametrize(("label", "name", "family"), CASES)
def test_every_stage_reads_a_label_the_same_way(label: str, name: str, family: str) -> None:
    assert normalize_base_model(label) == name and base_model_family(label) == family
    # catalog: the header route (kohya ss_base_model_version) and the sidecar route (Civitai baseModel)
    assert base_model_from_metadata({"ss_base_model_version": label})[0] == name
    merged, _ = merge_fields({"civitai.info": {"base_model": normalize_base_model(label)}})
    assert merged["base_model"] == name
    # views offer exactly the taxonomy's labels
    assert name in BASE_MODELS
    # generation: a LoRA of this label runs on a pipeline of its family and is refused elsewhere
    check_diffusers_compatible(_info(base_model_family(label)), family, "lora")
    other = "SD1" if family != "SD1" else "SDXL"
    with pytest.raises(LoraIncompatibleError, match=re.escape(f"is for {family} but")):
        check_diffusers_compatible(_info(base_model_family(label)), other, "lora")


def test_one_home_for_each_fact() -> None:
    import workbench.catalog
    import workbench.generate.backends as compat

    assert set(BASE_MODELS) == set(BASE_MODEL_FAMILY) and set(BASE_MODEL_FAMILY.values()) <= set(BASE_MODELS)
    assert ".safetensors" in LORA_SUFFIXES and not hasattr(compat, "LORA_SUFFIXES")
    assert not hasattr(workbench.catalog, "LORA_SUFFIXES") and not hasattr(compat, "normalize_family")
