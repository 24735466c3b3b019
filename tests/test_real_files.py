"""inspect_lora on real public LoRA files and real metadata dumps (../shared/data)."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from malformed_corpus import write_safetensors

from workbench.files import inspect_lora, md_bool, md_float, md_int

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
LORAS = DATA / "loras"

pytestmark = pytest.mark.skipif(not LORAS.is_dir(), reason="shared/data is not beside the clone")


def _row(name: str) -> dict:
    row = inspect_lora(LORAS / name)
    assert row["error"] is None, row["error"]
    return row


@pytest.mark.parametrize(
    "name",
    [
        "catundchat_weapons_sd15_pytorch_lora_weights.safetensors",
        "wellCh4n_pokemon_sd15_pytorch_lora_weights.safetensors",
    ],
)
def test_diffusers_attn_processor_files(name):
    row = _row(name)
    assert row["format"] == "safetensors"
    assert row["key_layout"] == "diffusers_attn"
    assert row["network_type"] == "LoRA"
    assert (row["rank"], row["rank_min"], row["rank_max"]) == (4, 4, 4)
    assert row["dtype"] == "F32"
    assert row["alpha"] is None and row["scale"] == 1.0
    assert row["tensor_count"] == 256 and row["module_count"] == 128
    assert row["has_text_encoder"] is False
    assert row["base_model"] == "SD1"
    assert "attn2" in row["base_model_evidence"] and "768" in row["base_model_evidence"]
    assert row["metadata"] == {"format": "pt"}
    assert row["name"] == Path(name).stem


def test_cloneofsimo_file():
    row = _row("analog_svd_rank4.safetensors")
    assert row["key_layout"] == "cloneofsimo"
    assert row["network_type"] == "LoRA"
    assert (row["rank"], row["rank_min"], row["rank_max"]) == (4, 4, 4)
    assert row["dtype"] == "F16"
    assert row["has_text_encoder"] is True
    assert row["tensor_count"] == 384 and row["module_count"] == 192
    assert row["base_model"] == "SD1" and "768" in row["base_model_evidence"]
    assert row["metadata"]["unet"] == '["CrossAttention", "Attention", "GEGLU"]'


def test_botched_kohya_conversion_gets_sensible_values():
    row = _row("timohavdk_sd-lora_new_malformed-kohya-conversion.safetensors")
    assert row["metadata"] == {}
    assert row["key_layout"] == "kohya"
    assert row["network_type"] == "LoRA"
    assert (row["rank"], row["rank_min"], row["rank_max"]) == (4, 4, 4)
    assert row["alpha"] is None and row["scale"] == 1.0
    assert row["module_count"] == 128
    assert row["base_model"] == "SD1" and "attn2" in row["base_model_evidence"]
    assert row["trigger_words"] == [] and row["training_tags"] == []


def test_all_real_files_are_sd1_with_evidence():
    for path in sorted(LORAS.glob("*.safetensors")):
        row = inspect_lora(path)
        assert row["base_model"] == "SD1", path.name
        assert row["base_model_evidence"], path.name
        assert row["sources"]["base_model"] == "tensors"


def _flux_file(tmp_path: Path, name: str) -> Path:
    dump = json.loads((DATA / "metadata" / f"{name}.json").read_text())
    entries = {key: ("BF16", shape) for key, shape in dump["state_dict_keys"].items()}
    return write_safetensors(tmp_path / f"{name}.safetensors", entries)


def test_flux_kohya_key_list(tmp_path):
    row = inspect_lora(_flux_file(tmp_path, "flux_lora_kohya_format"))
    assert row["error"] is None
    assert row["key_layout"] == "kohya"
    assert row["base_model"] == "FLUX" and "double_blocks" in row["base_model_evidence"]
    assert row["network_type"] == "LoRA"
    assert row["rank"] == 16
    assert row["tensor_count"] == 912 and row["module_count"] == 304
    assert row["has_text_encoder"] is False


def test_flux_diffusers_key_list(tmp_path):
    row = inspect_lora(_flux_file(tmp_path, "flux_lora_diffusers_format"))
    assert row["error"] is None
    assert row["key_layout"] == "peft"
    assert row["base_model"] == "FLUX"
    assert row["rank"] == 32 and row["alpha"] is None and row["scale"] == 1.0
    assert row["tensor_count"] == 988


def test_traintrain_metadata(tmp_path):
    dump = json.loads((DATA / "metadata" / "traintrain_ss_metadata_LighthouseConceptLora.json").read_text())
    # The dump shows ss_tag_frequency already decoded; in a file it is a JSON string like every value.
    metadata = {
        key: value if isinstance(value, str) else orjson.dumps(value).decode()
        for key, value in dump["metadata"].items()
    }
    from malformed_corpus import kohya_sd15_entries

    path = write_safetensors(tmp_path / "lighthouse.safetensors", kohya_sd15_entries(16, alpha=False), metadata)
    row = inspect_lora(path)
    assert row["error"] is None
    md = row["metadata"]
    assert md["ss_network_module"] == "network.lora"
    assert md["ss_tag_frequency"] == {"1": {"lighthouse": 12}}
    assert md_int(md, "ss_max_train_steps") == 1000
    assert md_bool(md, "ss_v2") is False
    assert md_float(md, "ss_min_snr_gamma") == 5.0
    assert row["tag_frequency"] == {"lighthouse": 12}
    assert row["training_tags"] == [("lighthouse", 12)]
    assert row["rank"] == 16 and row["alpha"] == 8.0 and row["scale"] == 0.5
    assert row["base_model"] == "SD1"
    assert row["base_model_evidence"] == "metadata: ss_base_model_version=sd_v1"
    assert row["name"] == "LighthouseConceptLora" and row["sources"]["name"] == "header"


CONTRACT_KEYS = {
    "format",
    "header_len",
    "key_layout",
    "network_type",
    "rank",
    "rank_min",
    "rank_max",
    "alpha",
    "scale",
    "base_model",
    "base_model_evidence",
    "module_count",
    "tensor_count",
    "has_text_encoder",
    "metadata",
    "tag_frequency",
    "training_tags",
    "description",
    "trigger_words",
    "sidecars",
    "sidecar_errors",
    "merged",
    "sources",
    "preview_path",
    "preview_embedded",
    "civitai_model_id",
    "civitai_version_id",
    "sha256_claimed",
    "error",
}
EXTRA_KEYS = {"name", "name_candidates", "dtype", "base_model_detected"}


def test_rows_have_the_contract_keys_and_serialise():
    for path in sorted(LORAS.glob("*.safetensors")):
        row = inspect_lora(path)
        assert set(row) == CONTRACT_KEYS | EXTRA_KEYS
        orjson.dumps(row)  # plain JSON types only: the scanner stores rows as JSON
