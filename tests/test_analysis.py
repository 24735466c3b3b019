"""Key layout, network type, rank/alpha/scale and base-model detection on kohya-named headers."""

from __future__ import annotations

import pytest
from malformed_corpus import header_entries, kohya_metadata, kohya_sd15_entries, kohya_sdxl_entries, write_safetensors

from workbench.files import (
    analyse_tensors,
    base_model_family,
    base_model_from_metadata,
    inspect_lora,
    normalize_base_model,
)


def _analyse(entries):
    tensors, _ = header_entries(entries)
    return analyse_tensors(tensors)


def test_kohya_sd15_with_text_encoder():
    result = _analyse(kohya_sd15_entries(8))
    assert result["key_layout"] == "kohya"
    assert result["network_type"] == "LoRA"  # 1x1 proj_in/proj_out convs are not LoCon
    assert result["ranks"] == {8: 264}
    assert result["module_count"] == 264 and result["tensor_count"] == 792
    assert result["has_text_encoder"] is True
    assert result["base_model"] == "SD1" and "768" in result["base_model_evidence"]
    assert result["alpha_tensor"].endswith(".alpha")


def test_kohya_locon_has_mixed_ranks():
    result = _analyse(kohya_sd15_entries(16, conv_rank=4, text_encoder=False))
    assert result["network_type"] == "LoCon"
    assert (result["rank_min"], result["rank_max"]) == (4, 16)
    assert result["has_text_encoder"] is False


def test_dora():
    assert _analyse(kohya_sd15_entries(4, dora=True))["network_type"] == "DoRA"


def test_loha_lokr_and_full():
    loha = {
        f"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_{p}.{w}": ("F16", shape)
        for p in ("to_k", "to_q")
        for w, shape in (
            ("hada_w1_a", [320, 8]),
            ("hada_w1_b", [8, 768]),
            ("hada_w2_a", [320, 8]),
            ("hada_w2_b", [8, 768]),
            ("alpha", []),
        )
    }
    result = _analyse(loha)
    assert result["network_type"] == "LoHa" and result["ranks"] == {8: 2}
    assert result["base_model"] == "SD1"
    lokr = {
        "lora_unet_mid_block_attentions_0_proj_in.lokr_w1": ("F16", [4, 4]),
        "lora_unet_mid_block_attentions_0_proj_in.lokr_w2_a": ("F16", [320, 6]),
        "lora_unet_mid_block_attentions_0_proj_in.lokr_w2_b": ("F16", [6, 320]),
    }
    result = _analyse(lokr)
    assert result["network_type"] == "LoKr" and result["ranks"] == {6: 1}
    full = {"lora_unet_mid_block_attentions_0_proj_in.diff": ("F16", [1280, 1280])}
    result = _analyse(full)
    assert result["network_type"] == "full" and result["rank_min"] is None


def test_sdxl_by_width_and_prefixes():
    result = _analyse(kohya_sdxl_entries(16))
    assert result["base_model"] == "SDXL" and "2048" in result["base_model_evidence"]
    only_te = {k: v for k, v in kohya_sdxl_entries(16).items() if k.startswith("lora_te")}
    result = _analyse(only_te)
    assert result["base_model"] == "SDXL" and "lora_te1_" in result["base_model_evidence"]


def test_peft_sd15_layout():
    entries = {
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight": ("F32", [4, 768]),
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.lora_B.weight": ("F32", [320, 4]),
        "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight": ("F32", [4, 768]),
        "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_B.weight": ("F32", [768, 4]),
    }
    result = _analyse(entries)
    assert result["key_layout"] == "peft" and result["has_text_encoder"] is True
    assert result["base_model"] == "SD1" and result["module_count"] == 2


def test_sd2_by_width():
    entries = {
        "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": ("F16", [8, 1024]),
        "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight": ("F16", [1280, 8]),
    }
    assert _analyse(entries)["base_model"] == "SD2"


def test_unknown_layout():
    result = _analyse({"foo.bar": ("F16", [3, 3])})
    assert result["key_layout"] == "unknown" and result["network_type"] == "unknown"
    assert result["base_model"] is None


@pytest.mark.parametrize(
    "label,expected",
    [
        ("SD 1.5", "SD1"),
        ("SD 1.4", "SD1"),
        ("SD1", "SD1"),
        ("sd_v1", "SD1"),
        ("stable-diffusion-v1/lora", "SD1"),
        ("SD 2.1 768", "SD2"),
        ("sd_v2_v", "SD2"),
        ("SDXL 1.0", "SDXL"),
        ("sdxl_base_v1-0", "SDXL"),
        ("stable-diffusion-xl-v1-base/lora", "SDXL"),
        ("SDXL Lightning", "SDXL"),
        ("Pony", "Pony"),
        ("Illustrious", "Illustrious"),
        ("NoobAI", "NoobAI"),
        ("Flux.1 D", "FLUX"),
        ("flux1", "FLUX"),
        ("flux-1-dev/lora", "FLUX"),
        ("SD 3.5 Large", "SD3"),
        ("chroma", "Chroma"),
        ("Other", None),
        ("Unknown", None),
        ("", None),
        (None, None),
        (12, None),
    ],
)
def test_normalize_base_model(label, expected):
    assert normalize_base_model(label) == expected


def test_base_model_from_metadata_order():
    assert (
        base_model_from_metadata(
            {"ss_base_model_version": "sdxl_base_v1-0", "modelspec.architecture": "stable-diffusion-v1/lora"}
        )[0]
        == "SDXL"
    )
    assert base_model_from_metadata({"ss_v2": "True"}) == ("SD2", "metadata: ss_v2=True")
    assert base_model_from_metadata({"ss_v2": "False"}) == (None, "")
    pony = base_model_from_metadata(
        {"ss_base_model_version": "sdxl_base_v1-0", "ss_sd_model_name": "ponyDiffusionV6XL_v6.safetensors"}
    )
    assert pony[0] == "Pony" and "ss_sd_model_name" in pony[1]
    # A name hint never turns an SD1 claim into something else.
    assert base_model_from_metadata({"ss_base_model_version": "sd_v1", "ss_sd_model_name": "pony.ckpt"})[0] == "SD1"
    assert base_model_from_metadata({"ss_sd_model_name": "v1-5-pruned-emaonly.safetensors"})[0] == "SD1"
    assert base_model_family("Pony") == "SDXL"


def test_inspect_kohya_file_rank_alpha_scale(tmp_path):
    path = write_safetensors(
        tmp_path / "a.safetensors",
        kohya_sd15_entries(8),
        kohya_metadata(rank=8, alpha=4, tags=["1girl", "solo", "smile"]),
        alpha_value=2.0,
    )
    row = inspect_lora(path)
    assert row["error"] is None
    # The per-module alpha tensor (2.0) wins over ss_network_alpha ("4").
    assert row["rank"] == 8 and row["alpha"] == 2.0 and row["scale"] == 0.25
    assert row["base_model"] == "SD1" and row["base_model_evidence"].startswith("metadata: ss_base_model_version")
    assert row["tag_frequency"] == {"1girl": 23, "solo": 19, "smile": 18}
    assert row["training_tags"][0] == ("1girl", 23)
    assert row["metadata"]["ss_dataset_dirs"] == {"10_mychar": {"n_repeats": 10, "img_count": 15}}
    assert row["metadata"]["ss_network_args"] == {}
    assert row["name"] == "my_lora"


def test_inspect_without_alpha_anywhere(tmp_path):
    md = kohya_metadata(rank=8)
    del md["ss_network_alpha"]
    path = write_safetensors(tmp_path / "b.safetensors", kohya_sd15_entries(8, alpha=False), md)
    row = inspect_lora(path)
    assert row["alpha"] is None and row["scale"] == 1.0


def test_alpha_zero_means_rank(tmp_path):
    path = write_safetensors(tmp_path / "z.safetensors", kohya_sd15_entries(8), {}, alpha_value=0.0)
    row = inspect_lora(path)
    assert row["alpha"] == 8.0 and row["scale"] == 1.0


def test_metadata_rank_is_nominal_and_tensors_give_min_max(tmp_path):
    path = write_safetensors(
        tmp_path / "c.safetensors", kohya_sd15_entries(16, conv_rank=4), kohya_metadata(rank=16, alpha=8)
    )
    row = inspect_lora(path)
    assert row["network_type"] == "LoCon"
    assert (row["rank"], row["rank_min"], row["rank_max"]) == (16, 4, 16)


def test_tensors_override_contradicting_metadata(tmp_path):
    path = write_safetensors(tmp_path / "d.safetensors", kohya_sdxl_entries(8), kohya_metadata(base="sd_v1"))
    row = inspect_lora(path)
    assert row["base_model"] == "SDXL"
    assert "2048" in row["base_model_evidence"] and "overrides metadata" in row["base_model_evidence"]


def test_structure_cache_gives_identical_results(tmp_path):
    first = write_safetensors(
        tmp_path / "e1.safetensors", kohya_sd15_entries(8), kohya_metadata(output_name="one", tags=["a", "b"])
    )
    second = write_safetensors(
        tmp_path / "e2.safetensors", kohya_sd15_entries(8), kohya_metadata(output_name="two", tags=["c"])
    )
    row1, row2 = inspect_lora(first), inspect_lora(second)
    for key in (
        "key_layout",
        "network_type",
        "rank",
        "rank_min",
        "rank_max",
        "module_count",
        "tensor_count",
        "base_model",
        "has_text_encoder",
    ):
        assert row1[key] == row2[key], key
    assert row1["name"] == "one" and row2["name"] == "two"
    assert row2["tag_frequency"] == {"c": 23}


def test_alpha_read_beyond_the_first_read(tmp_path):
    """A header over 256 KiB puts the alpha scalars outside the first read: they are read separately."""
    md = kohya_metadata(rank=8, alpha=4)
    md["ss_training_comment"] = "x" * 300_000
    path = write_safetensors(tmp_path / "big.safetensors", kohya_sd15_entries(8), md, alpha_value=3.0)
    row = inspect_lora(path)
    assert row["header_len"] > 256 * 1024
    assert row["alpha"] == 3.0 and row["scale"] == 3.0 / 8
