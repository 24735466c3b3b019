"""The five sidecar kinds, their detection, sanitising and merge precedence."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import orjson
from malformed_corpus import kohya_metadata, kohya_sd15_entries, kohya_sdxl_entries, write_safetensors

from workbench.files import DESCRIPTIVE_ORDER, inspect_lora, merge_fields

CIVITAI_DUMP = Path(__file__).resolve().parents[2] / "shared" / "data" / "civitai" / "loras_2023.jsonl.gz"


def _real_civitai_model() -> dict:
    """The first real Civitai model record of the shared dump (Detail Tweaker LoRA)."""
    assert CIVITAI_DUMP.exists(), "shared/data must lie beside the clone"
    with gzip.open(CIVITAI_DUMP, "rt", encoding="utf-8") as handle:
        return json.loads(handle.readline())


def _lora(tmp_path: Path, stem: str = "add_detail", *, sdxl: bool = False, metadata=None) -> Path:
    entries = kohya_sdxl_entries(8) if sdxl else kohya_sd15_entries(4, text_encoder=False)
    return write_safetensors(tmp_path / f"{stem}.safetensors", entries, metadata)


def _write(path: Path, obj) -> None:
    path.write_bytes(obj if isinstance(obj, bytes) else orjson.dumps(obj))


def _version_info(model: dict) -> dict:
    """A civitai.info as Civitai Helper saves it: the version object plus modelId and model{}."""
    version = dict(model["modelVersions"][0])
    version["modelId"] = model["id"]
    version["model"] = {"name": model["name"], "type": "LORA", "nsfw": False}
    return version


def test_civitai_model_json_real_record_and_txt(tmp_path):
    model = _real_civitai_model()
    lora = _lora(tmp_path)  # named like the record's file, add_detail.safetensors
    _write(tmp_path / "add_detail.json", model)
    (tmp_path / "add_detail.txt").write_text("my own words\n")
    row = inspect_lora(lora)
    assert set(row["sidecars"]) == {"civitai.model.json", "description.txt"}
    assert row["sidecar_errors"] == []
    merged, sources = row["merged"], row["sources"]
    assert merged["name"] == model["name"] and sources["name"] == "civitai.model.json"
    assert row["civitai_model_id"] == int(model["id"])
    assert row["civitai_version_id"] == int(model["modelVersions"][0]["id"])
    assert merged["creator"] == model["creator"]
    real_file = model["modelVersions"][0]["files"][0]
    assert row["sha256_claimed"] == real_file["hashes"]["SHA256"].lower()
    assert merged["tags"] == model["tags"]
    assert merged["base_model_raw"] == "SD 1.5" and row["base_model"] == "SD1"
    assert row["description"].startswith("<p>") and sources["description"] == "civitai.model.json"
    assert row["sidecars"]["description.txt"] == {"text": "my own words"}


def test_version_is_picked_by_file_name(tmp_path):
    model = {
        "id": 1,
        "name": "m",
        "modelVersions": [
            {"id": 10, "name": "v2", "baseModel": "SDXL 1.0", "files": [{"name": "other.safetensors"}]},
            {
                "id": 11,
                "name": "v1",
                "baseModel": "SD 1.5",
                "trainedWords": ["tw"],
                "files": [{"name": "Mine.safetensors", "hashes": {"SHA256": "AB" * 32}}],
            },
        ],
    }
    lora = _lora(tmp_path, "mine")
    _write(tmp_path / "mine.json", model)
    row = inspect_lora(lora)
    assert row["civitai_version_id"] == 11 and row["merged"]["version_name"] == "v1"
    assert row["trigger_words"] == ["tw"] and row["sha256_claimed"] == "ab" * 32


def test_a1111_json_with_civitai_browser_plus_fields(tmp_path):
    lora = _lora(tmp_path, "a")
    _write(
        tmp_path / "a.json",
        {
            "description": "desc",
            "sd version": "SD1",
            "activation text": "foo, bar baz, foo",
            "preferred weight": 0.7,
            "negative text": "ugly",
            "notes": "n",
            "sha256": "ABCDEF" * 10 + "ABCD",
            "modelId": 12,
            "modelVersionId": "34",
        },
    )
    row = inspect_lora(lora)
    assert set(row["sidecars"]) == {"a1111.json"}
    merged = row["merged"]
    assert row["trigger_words"] == ["foo", "bar baz"]
    assert merged["preferred_weight"] == 0.7 and merged["negative_text"] == "ugly" and merged["notes"] == "n"
    assert row["civitai_model_id"] == 12 and row["civitai_version_id"] == 34
    assert row["sha256_claimed"] == ("abcdef" * 10 + "abcd")
    assert row["sidecar_errors"] == []


def test_a1111_preferred_weight_zero_means_default(tmp_path):
    lora = _lora(tmp_path, "w")
    _write(tmp_path / "w.json", {"preferred weight": 0, "sd version": "Unknown"})
    row = inspect_lora(lora)
    assert "preferred_weight" not in row["merged"] and row["sidecar_errors"] == []


def test_lm_metadata_json(tmp_path):
    lora = _lora(tmp_path, "lm", sdxl=True)
    _write(
        tmp_path / "lm.metadata.json",
        {
            "file_name": "lm",
            "model_name": "LM Name",
            "sha256": "cd" * 32,
            "base_model": "Pony",
            "preview_url": "/x/lm.webp",
            "notes": "note",
            "usage_tips": '{"strength": 0.8, "clip_skip": 2}',
            "tags": ["style"],
            "modelDescription": "<p>d</p>",
            "favorite": True,
            "unknown_field": [1],
            "civitai": {
                "id": 5,
                "modelId": 6,
                "trainedWords": ["trig"],
                "baseModel": "Pony",
                "creator": {"username": "bob"},
            },
        },
    )
    row = inspect_lora(lora)
    merged = row["merged"]
    assert merged["name"] == "LM Name" and merged["favorite"] is True
    assert merged["usage_tips"] == {"strength": 0.8, "clip_skip": 2.0} and merged["preferred_weight"] == 0.8
    assert row["trigger_words"] == ["trig"] and merged["creator"] == "bob"
    assert row["civitai_version_id"] == 5 and row["civitai_model_id"] == 6
    # Pony refines the file's own SDXL detection.
    assert row["base_model"] == "Pony" and row["base_model_detected"] == "SDXL"
    assert "refines" in row["base_model_evidence"] and row["sources"]["base_model"] == "lm.metadata.json"
    assert row["sidecars"]["lm.metadata.json"]["unknown_field"] == [1]


def test_contradicting_sidecar_base_model_loses(tmp_path):
    lora = _lora(tmp_path, "c", sdxl=True)
    _write(tmp_path / "c.json", {"sd version": "SD1"})
    row = inspect_lora(lora)
    assert row["base_model"] == "SDXL"
    assert any("contradicts the file" in e for e in row["sidecar_errors"])


def test_civitai_info_empty_means_not_found(tmp_path):
    lora = _lora(tmp_path, "e")
    _write(tmp_path / "e.civitai.info", {})
    row = inspect_lora(lora)
    assert row["sidecars"] == {"civitai.info": {}} and row["sidecar_errors"] == []
    assert row["civitai_version_id"] is None


def test_precedence_with_every_kind_present(tmp_path):
    model = _real_civitai_model()
    lora = _lora(tmp_path, "add_detail", metadata=kohya_metadata(output_name="header_name"))
    _write(tmp_path / "add_detail.civitai.info", _version_info(model) | {"trainedWords": ["info_word"]})
    _write(tmp_path / "add_detail.metadata.json", {"model_name": "lm_name", "civitai": {"id": 999999}})
    (tmp_path / "add_detail.description.txt").write_text("txt description")
    row = inspect_lora(lora)
    sources = row["sources"]
    assert set(row["sidecars"]) == {"civitai.info", "lm.metadata.json", "description.txt"}
    assert row["name"] == "lm_name" and sources["name"] == "lm.metadata.json"
    assert row["trigger_words"] == ["info_word"] and sources["trigger_words"] == "civitai.info"
    # Identity: civitai.info beats the LM file's civitai copy.
    assert row["civitai_version_id"] == int(model["modelVersions"][0]["id"])
    assert sources["civitai_version_id"] == "civitai.info"
    assert row["name_candidates"][:3] == ["lm_name", model["name"], "header_name"]
    assert row["name_candidates"][-1] == "add_detail"
    # A1111 json (same file name as SD.Next's) beats civitai.info for text fields.
    _write(tmp_path / "add_detail.json", {"description": "a1111 words"})
    row = inspect_lora(lora)
    assert row["description"] == "a1111 words" and row["sources"]["description"] == "a1111.json"


def test_merge_fields_orders_are_documented():
    doc = sys.modules[merge_fields.__module__].__doc__  # the precedence is documented where it is coded
    for source in DESCRIPTIVE_ORDER[:-1]:
        assert f"``{source}``" in doc
    merged, sources = merge_fields(
        {
            "header": {"name": "h", "civitai_model_id": 1},
            "a1111.json": {"name": "a", "civitai_model_id": 2},
            "civitai.info": {"name": "c", "civitai_model_id": 3},
        }
    )
    assert merged == {"name": "a", "civitai_model_id": 3}
    assert sources == {"name": "a1111.json", "civitai_model_id": "civitai.info"}


def test_sidecar_names_match_case_insensitively(tmp_path):
    lora = _lora(tmp_path, "Case")
    _write(tmp_path / "CASE.Civitai.Info", {"id": 7, "modelId": 8})
    row = inspect_lora(lora)
    assert row["civitai_version_id"] == 7


def test_new_sidecar_is_seen_after_listing_was_cached(tmp_path):
    lora = _lora(tmp_path, "late")
    assert inspect_lora(lora)["sidecars"] == {}
    import os

    _write(tmp_path / "late.civitai.info", {"id": 3})
    st = os.stat(tmp_path)
    os.utime(tmp_path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # coarse-mtime filesystems
    assert inspect_lora(lora)["civitai_version_id"] == 3


def test_pickle_files_still_get_sidecars(tmp_path):
    (tmp_path / "old.ckpt").write_bytes(b"\x80\x04K\x01.")
    _write(tmp_path / "old.civitai.info", {"id": 4, "trainedWords": ["w"]})
    row = inspect_lora(tmp_path / "old.ckpt")
    assert row["format"] == "ckpt" and "never opened" in row["error"]
    assert row["trigger_words"] == ["w"] and row["civitai_version_id"] == 4
