"""Migrating from other LoRA tools loses nothing: sidecar values become imported values user edits override."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import duckdb
import orjson
import pandas as pd
from lora_factory import write_kohya_lora

import workbench
from workbench.catalog import MIGRATIONS


def _write(path: Path, obj) -> None:
    path.write_bytes(orjson.dumps(obj))


def _library(tmp_path: Path) -> Path:
    lib = tmp_path / "lib"
    write_kohya_lora(lib / "a1111_style.safetensors")
    _write(
        lib / "a1111_style.json",
        {"preferred weight": 0.65, "notes": "use at low cfg", "negative text": "blurry, lowres", "sd version": "SD1"},
    )
    write_kohya_lora(lib / "lm_style.safetensors", seed=1)
    _write(
        lib / "lm_style.metadata.json",
        {"model_name": "LM Style", "favorite": True, "notes": "from lora manager", "usage_tips": '{"strength": 0.8}'},
    )
    write_kohya_lora(lib / "plain.safetensors", seed=2)
    return lib


def test_sidecar_values_are_imported_and_user_edits_override(home: Path, tmp_path: Path) -> None:
    lib = _library(tmp_path)
    wb = workbench.open(home)
    wb.scan(lib, progress=False)
    frame = wb.catalog.query().set_index("name")
    a = frame.loc["a1111_style"]
    assert a["preferred_weight"] == 0.65 and a["notes"] == "use at low cfg" and a["negative_text"] == "blurry, lowres"
    lm = frame.loc["LM Style"]
    assert bool(lm["favorite"]) is True and lm["notes"] == "from lora manager" and lm["preferred_weight"] == 0.8
    plain = frame.loc["plain"]
    assert bool(plain["favorite"]) is False and pd.isna(plain["notes"])

    a_id = int(a["id"])
    record = wb.catalog.get(a_id)
    assert record["sources"]["preferred_weight"] == "a1111.json"
    assert record["sources"]["negative_text"] == "a1111.json"
    assert record["user_fields"]["preferred_weight"] is None  # imported, not a user value

    wb.catalog.update(a_id, preferred_weight=1.1, negative_text="")
    wb.catalog.update(int(lm["id"]), favorite=False)
    wb.scan(lib, progress=False)  # a rescan refreshes imported values, never the user's
    (lib / "a1111_style.json").write_text(json.dumps({"preferred weight": 0.5, "notes": "changed in A1111"}))
    wb.scan(lib, progress=False)
    frame = wb.catalog.query().set_index("name")
    assert frame.loc["a1111_style"]["preferred_weight"] == 1.1  # the user's edit wins
    assert frame.loc["a1111_style"]["negative_text"] == ""  # cleared by the user, not re-imported
    assert frame.loc["a1111_style"]["notes"] == "changed in A1111"  # imported value followed the file
    assert bool(frame.loc["LM Style"]["favorite"]) is False
    assert wb.catalog.get(a_id)["sources"]["preferred_weight"] == "user"

    wb.catalog.undo()
    wb.catalog.undo()
    assert wb.catalog.query(ids=[a_id]).iloc[0]["preferred_weight"] == 0.5


def test_bad_negative_text_is_refused(home: Path) -> None:
    import pytest

    from workbench.catalog import CatalogError, validate_user_fields

    with pytest.raises(CatalogError, match="negative_text must be text"):
        validate_user_fields({"negative_text": 3})
    assert validate_user_fields({"negative_text": "ugly"}) == {"negative_text": "ugly"}


def test_old_catalog_migrates_without_losing_user_fields(home: Path, tmp_path: Path) -> None:
    """A catalog written by the previous schema opens, keeps its user fields and gains the new columns."""
    path = home / "catalog.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE schema_version (version INTEGER)")
    for version, sql in enumerate(MIGRATIONS[:2], start=1):
        con.execute(sql)
        con.execute("INSERT INTO schema_version VALUES (?)", [version])
    con.execute("INSERT INTO loras (path, file_name, name) VALUES ('/x/a.safetensors', 'a.safetensors', 'a')")
    con.execute("INSERT INTO user_fields (lora_id, notes, preferred_weight) VALUES (1, 'mine', 0.9)")
    con.close()
    wb = workbench.open(home)
    row = wb.catalog.query().iloc[0]
    assert row["notes"] == "mine" and row["preferred_weight"] == 0.9 and pd.isna(row["negative_text"])


def _real_model() -> dict:
    dump = Path(__file__).resolve().parents[2] / "shared" / "data" / "civitai" / "loras_2023.jsonl.gz"
    with gzip.open(dump, "rt", encoding="utf-8") as handle:
        return json.loads(handle.readline())


def test_original_lora_manager_json_found_by_file_name_with_stats(home: Path, tmp_path: Path) -> None:
    """The original LoRA Manager names its Civitai JSON after the model; it is matched by files[].name."""
    model = _real_model()
    model["nsfwLevel"] = 1
    model["weight"] = 0.75
    model["sd version"] = "SD1"
    file_name = model["modelVersions"][0]["files"][0]["name"]
    lib = tmp_path / "lib"
    write_kohya_lora(lib / file_name)
    _write(lib / "Detail Tweaker LoRA (model).json", model)
    write_kohya_lora(lib / "other.safetensors", seed=3)  # listed by no JSON: no sidecar
    wb = workbench.open(home)
    wb.scan(lib, progress=False)
    frame = wb.catalog.query().set_index("file_name")
    row = frame.loc[file_name]
    assert row["name"] == model["name"] and row["preferred_weight"] == 0.75 and row["nsfw_level"] == 1
    assert int(row["civitai_model_id"]) == model["id"]
    record = wb.catalog.get(int(row["id"]))
    assert record["stats"]["downloadCount"] == model["stats"]["downloadCount"]
    assert record["stats"]["rating"] == model["stats"]["rating"]
    assert record["sources"]["stats"] == "civitai.model.json"
    assert wb.catalog.get(int(frame.loc["other.safetensors"]["id"]))["sidecars"] == {}

    # editing the JSON in place rescans the file it describes
    model["weight"] = 0.5
    _write(lib / "Detail Tweaker LoRA (model).json", model)
    report = wb.scan(lib, progress=False)
    assert report.changed >= 1
    assert wb.catalog.query(ids=[int(row["id"])]).iloc[0]["preferred_weight"] == 0.5


def test_bad_stats_and_nsfw_level_are_reported_not_stored(tmp_path: Path) -> None:
    from workbench.files import inspect_lora

    lora = write_kohya_lora(tmp_path / "m.safetensors")
    _write(
        tmp_path / "m.json",
        {"modelVersions": [], "nsfwLevel": "lots", "stats": {"downloadCount": -4, "rating": 4.5}, "weight": "x"},
    )
    row = inspect_lora(lora)
    assert row["merged"]["stats"] == {"rating": 4.5}
    assert "nsfw_level" not in row["merged"] and "preferred_weight" not in row["merged"]
    errors = " ".join(row["sidecar_errors"])
    assert "nsfwLevel" in errors and "stats" in errors and "weight" in errors
