"""Civitai /api/v1/models import: real items from the shared dump, re-import, joins with scanned files."""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lora_factory import write_safetensors

import workbench
from workbench.catalog import import_items, item_to_record, link_local_files, read_items
from workbench.cli import main as cli_main


@pytest.fixture(scope="module")
def real_items(shared_data: Path) -> list[dict]:
    return list(itertools.islice(read_items(shared_data / "civitai" / "loras_2023.jsonl.gz"), 40))


def test_record_carries_civitai_fields(real_items: list[dict]) -> None:
    detail = (
        next(i for i in real_items if i["id"] == 58390) if any(i["id"] == 58390 for i in real_items) else real_items[0]
    )
    rec = item_to_record(detail)
    assert rec["path"] == "" and rec["missing"] is True and rec["origin"] == "civitai"
    assert rec["civitai_model_id"] == detail["id"]
    assert rec["civitai_version_id"] == detail["modelVersions"][0]["id"]
    assert rec["name"] == detail["name"].strip()
    assert rec["file_tags"] == detail["tags"]
    assert rec["stats"] == detail["stats"]
    assert rec["creator"] == detail["creator"]
    words = [w for v in detail["modelVersions"] for w in v["trainedWords"] if w.strip()]
    assert set(rec["trigger_words"]) == {w.strip() for w in words}
    files = [f for v in rec["metadata"]["civitai"]["versions"] for f in v["files"]]
    assert files and all(f["sha256"] and len(f["sha256"]) == 64 for f in files)
    assert rec["sha256_claimed"] in {f["sha256"] for f in files}


def test_import_jsonl_gz_and_reimport_updates_in_place(tmp_path: Path, real_items: list[dict]) -> None:
    src = tmp_path / "models.jsonl.gz"
    with gzip.open(src, "wt") as fh:
        for item in real_items:
            fh.write(json.dumps(item) + "\n")
    wb = workbench.open(tmp_path / "home")
    report = wb.import_civitai(src, progress=False)
    assert (report.added, report.updated, report.joined) == (40, 0, 0)
    df = wb.catalog.query()
    assert len(df) == 40 and df["missing"].all() and (df["path"] == "").all()
    assert set(df["civitai_model_id"]) == {i["id"] for i in real_items}
    first = real_items[0]
    row = df[df["civitai_model_id"] == first["id"]].iloc[0]
    assert row["base_model"] == "SD1"  # "SD 1.5" normalised
    assert row["creator"] == first["creator"]
    assert list(row["tags"]) == first["tags"]
    assert row["sha256"] == first["modelVersions"][0]["files"][0]["hashes"]["SHA256"].lower()
    wb.catalog.update(int(row["id"]), rating=5)

    # the same items again (one renamed): updated, not duplicated; user fields kept
    changed = [dict(i) for i in real_items]
    changed[0]["name"] = "Renamed model"
    report = import_items(wb.db, changed)
    assert (report.added, report.updated) == (0, 40)
    df = wb.catalog.query()
    assert len(df) == 40
    row = df[df["civitai_model_id"] == first["id"]].iloc[0]
    assert row["name"] == "Renamed model" and row["rating"] == 5


def test_json_file_shapes(tmp_path: Path, real_items: list[dict]) -> None:
    one, page, listing = tmp_path / "one.json", tmp_path / "page.json", tmp_path / "list.json"
    one.write_text(json.dumps(real_items[0]))
    page.write_text(json.dumps({"items": real_items[1:4], "metadata": {"totalItems": 3}}))
    listing.write_text(json.dumps(real_items[4:6]))
    assert [i["id"] for i in read_items(one)] == [real_items[0]["id"]]
    assert [i["id"] for i in read_items(page)] == [i["id"] for i in real_items[1:4]]
    assert len(list(read_items(listing))) == 2


def test_bad_items_are_skipped_not_fatal(tmp_path: Path) -> None:
    wb = workbench.open(tmp_path / "home")
    report = import_items(wb.db, [{"id": "x"}, {"name": "no id"}, {"id": 5, "name": "ok", "modelVersions": []}])
    assert report.added == 1 and report.skipped == 2
    row = wb.catalog.query().iloc[0]
    assert row["name"] == "ok" and row["civitai_model_id"] == 5
    assert pd.isna(row["civitai_version_id"])


def _local_lora(folder: Path) -> tuple[Path, str]:
    rng = np.random.default_rng(0)
    path = write_safetensors(
        folder / "inkwash_v2.safetensors",
        {
            "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": rng.standard_normal(
                (4, 768)
            ).astype("float16"),
            "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight": rng.standard_normal(
                (320, 4)
            ).astype("float16"),
        },
    )
    return path, hashlib.sha256(path.read_bytes()).hexdigest().upper()


def _item_for(sha: str, model_id: int = 990001) -> dict:
    return {
        "id": model_id,
        "name": "Ink Wash Painting",
        "description": "<p>Chinese <b>ink</b> wash</p>",
        "tags": ["style", "ink"],
        "creator": {"username": "someone"},
        "type": "LORA",
        "stats": {"downloadCount": 10},
        "modelVersions": [
            {
                "id": 2,
                "baseModel": "SD 1.5",
                "trainedWords": ["inkwash"],
                "files": [
                    {"name": "inkwash_v2.safetensors", "primary": True, "sizeKB": 1.0, "hashes": {"SHA256": sha}}
                ],
            },
            {
                "id": 1,
                "baseModel": "SD 1.5",
                "trainedWords": ["ink painting"],
                "files": [
                    {"name": "inkwash_v1.safetensors", "primary": True, "sizeKB": 1.0, "hashes": {"SHA256": "AB" * 32}}
                ],
            },
        ],
    }


def test_import_joins_scanned_file_by_sha256(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    _, sha = _local_lora(lib)
    wb = workbench.open(tmp_path / "home")
    wb.scan([lib], workers=1, progress=False)
    wb.hash(progress=False, workers=1)
    report = import_items(wb.db, [_item_for(sha)])
    assert (report.added, report.joined) == (0, 1)
    df = wb.catalog.query()
    assert len(df) == 1
    row = df.iloc[0]
    assert not row["missing"] and row["path"].endswith("inkwash_v2.safetensors")
    assert row["civitai_model_id"] == 990001 and row["civitai_version_id"] == 2 and row["creator"] == "someone"
    assert set(row["trigger_words"]) == {"inkwash", "ink painting"}
    assert row["sha256"].lower() == sha.lower()


def test_catalog_only_entry_merges_when_file_appears(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    _, sha = _local_lora(lib)
    wb = workbench.open(tmp_path / "home")
    import_items(wb.db, [_item_for(sha)])
    only = wb.catalog.query().iloc[0]
    assert only["missing"] and only["path"] == ""
    wb.catalog.update(int(only["id"]), notes="keep me")
    wb.scan([lib], workers=1, progress=False)
    wb.hash(progress=False, workers=1)  # hashing joins the catalog-only entry to the file
    assert link_local_files(wb.db) == 0
    df = wb.catalog.query()
    assert len(df) == 1
    row = df.iloc[0]
    assert row["path"].endswith("inkwash_v2.safetensors") and row["civitai_model_id"] == 990001
    assert row["notes"] == "keep me"
    # re-importing now joins instead of re-creating the catalog-only entry
    report = import_items(wb.db, [_item_for(sha)])
    assert report.joined == 1 and len(wb.catalog.query()) == 1
    # a rescan of the changed file keeps what Civitai said where the files say nothing
    os.utime(row["path"], ns=(10**18, 10**18))
    assert wb.scan(progress=False).changed == 1
    row = wb.catalog.query().iloc[0]
    assert row["civitai_model_id"] == 990001 and row["creator"] == "someone" and row["notes"] == "keep me"


def test_cli_import_civitai(tmp_path: Path, real_items: list[dict], capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "models.jsonl"
    src.write_text("\n".join(json.dumps(i) for i in real_items[:5]) + "\n")
    assert cli_main(["import-civitai", str(src), "--home", str(tmp_path / "home"), "--quiet"]) == 0
    assert "5 added" in capsys.readouterr().out
    assert workbench.open(tmp_path / "home").catalog.count() == 5
