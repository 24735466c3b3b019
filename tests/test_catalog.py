"""Catalog queries, user-field edits with undo, and that rescans never touch user fields."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from lora_factory import write_kohya_lora

import workbench
from workbench.catalog import CONTRACT_COLUMNS, CatalogError


@pytest.fixture
def library(tmp_path: Path) -> Path:
    lib = tmp_path / "lib"
    write_kohya_lora(
        lib / "styles" / "watercolor_style.safetensors",
        seed=1,
        metadata={
            "ss_output_name": "Watercolor Style",
            "ss_tag_frequency": json.dumps({"img": {"watercolor": 20, "painting": 5}}),
        },
    )
    write_kohya_lora(lib / "styles" / "ink" / "ink_wash.safetensors", seed=2, metadata={"ss_output_name": "Ink Wash"})
    write_kohya_lora(
        lib / "characters" / "red_knight.safetensors", base="SDXL", seed=3, metadata={"ss_output_name": "Red Knight"}
    )
    write_kohya_lora(
        lib / "characters" / "blue_mage.safetensors",
        base="SDXL",
        seed=4,
        rank=8,
        metadata={"ss_output_name": "Blue Mage"},
    )
    return lib


@pytest.fixture
def wb(home: Path, library: Path) -> workbench.Workbench:
    bench = workbench.open(home)
    bench.scan([library], progress=False)
    return bench


def test_query_contract_and_filters(wb: workbench.Workbench) -> None:
    frame = wb.catalog.query()
    assert set(CONTRACT_COLUMNS) <= set(frame.columns)
    assert len(frame) == 4 and wb.catalog.count() == 4
    assert list(frame["name"]) == sorted(frame["name"], key=str.lower)
    assert set(wb.catalog.query(base_models=["SDXL"])["name"]) == {"Red Knight", "Blue Mage"}
    assert set(wb.catalog.query(folder="styles")["name"]) == {"Watercolor Style", "Ink Wash"}
    assert set(wb.catalog.query(folder="styles/ink")["name"]) == {"Ink Wash"}
    assert list(wb.catalog.query(text="knight")["name"]) == ["Red Knight"]
    assert list(wb.catalog.query(text="dragon", fuzzy=True)["name"]) == []  # too far
    assert list(wb.catalog.query(text="knihgt", fuzzy=True)["name"]) == ["Red Knight"]
    assert list(wb.catalog.query(sort="size", descending=True)["name"])[0] == "Blue Mage"
    page = wb.catalog.query(limit=2, offset=2)
    assert len(page) == 2 and list(page["name"]) == list(frame["name"])[2:4]
    assert wb.catalog.count(base_models=["SD1"]) == 2
    a = list(wb.catalog.query(sort="random", seed=1)["id"])
    assert a == list(wb.catalog.query(sort="random", seed=1)["id"])  # a seed gives a stable shuffle
    assert sorted(a) == sorted(frame["id"])


def test_bad_query_arguments_are_clear_errors(wb: workbench.Workbench) -> None:
    with pytest.raises(CatalogError, match="unknown sort"):
        wb.catalog.query(sort="name; DROP TABLE loras")
    with pytest.raises(CatalogError, match="limit"):
        wb.catalog.query(limit=-1)
    # text is data, never SQL
    assert len(wb.catalog.query(text="' OR 1=1 --")) == 0
    assert wb.catalog.count() == 4


def test_edits_tags_undo_and_rescan_keeps_user_fields(wb: workbench.Workbench, library: Path) -> None:
    ids = dict(zip(wb.catalog.query()["name"], wb.catalog.query()["id"]))
    knight = int(ids["Red Knight"])
    wb.catalog.update(
        knight,
        rating=5,
        favorite=True,
        notes="great <b>armor</b>",
        preferred_weight=0.8,
        trigger_words=["red knight", "armor"],
        base_model_override="Pony",
    )
    wb.catalog.add_tags([knight, int(ids["Blue Mage"])], ["character", "fantasy"])
    edit = wb.catalog.remove_tags([knight], ["FANTASY"])
    row = wb.catalog.query(ids=[knight]).iloc[0]
    assert row["rating"] == 5 and row["favorite"] and list(row["tags"]) == ["character"]
    assert row["base_model"] == "Pony" and list(row["trigger_words"]) == ["red knight", "armor"]
    assert wb.catalog.query(tags_all=["character", "fantasy"])["name"].tolist() == ["Blue Mage"]
    assert set(wb.catalog.query(tags_any=["fantasy", "character"])["name"]) == {"Blue Mage", "Red Knight"}
    assert wb.catalog.undo() is True  # undoes remove_tags
    assert set(wb.catalog.query(ids=[knight]).iloc[0]["tags"]) == {"character", "fantasy"}
    assert wb.catalog.undo(edit) is False  # already undone

    # a rescan after the file changed keeps every user field
    path = library / "characters" / "red_knight.safetensors"
    write_kohya_lora(path, base="SDXL", seed=9, metadata={"ss_output_name": "Red Knight v2"})
    report = wb.scan(progress=False)
    assert report.changed == 1
    row = wb.catalog.query(ids=[knight]).iloc[0]
    assert row["name"] == "Red Knight v2" and row["rating"] == 5 and row["base_model"] == "Pony"
    detail = wb.catalog.get(knight)
    assert detail["sources"]["base_model"] == "user" and detail["base_model_detected"] == "SDXL"
    assert detail["user_fields"]["notes"] == "great <b>armor</b>"


def test_remove_hides_and_undo_restores(wb: workbench.Workbench) -> None:
    first = int(wb.catalog.query()["id"].iloc[0])
    wb.catalog.remove([first])
    assert wb.catalog.count() == 3
    wb.scan(progress=False)
    assert wb.catalog.count() == 3  # a rescan does not bring back what a person removed
    assert wb.catalog.undo()
    assert wb.catalog.count() == 4


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"rating": 7}, "rating"),
        ({"rating": "5"}, "rating"),
        ({"favorite": "yes"}, "favorite"),
        ({"preferred_weight": float("nan")}, "preferred_weight"),
        ({"tags": [1, 2]}, "tags"),
        ({"tags": ["x" * 500]}, "tags"),
        ({"path": "/etc/passwd"}, "not an editable field"),
        ({}, "nothing to update"),
    ],
)
def test_invalid_edits_are_refused_and_change_nothing(wb: workbench.Workbench, fields: dict, message: str) -> None:
    first = int(wb.catalog.query()["id"].iloc[0])
    before = wb.catalog.get(first)["user_fields"]
    with pytest.raises(CatalogError, match=message):
        wb.catalog.update(first, **fields)
    assert wb.catalog.get(first)["user_fields"] == before
    with pytest.raises(CatalogError, match="unknown LoRA"):
        wb.catalog.update(999_999, rating=1)


def test_export_catalog_cli_prints_contract_columns(wb: workbench.Workbench) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "workbench.cli", "export-catalog", "--home", str(wb.home), "--format", "jsonl"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    ).stdout
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 4
    assert set(CONTRACT_COLUMNS) <= set(lines[0])
    assert isinstance(lines[0]["trigger_words"], list) and isinstance(lines[0]["tags"], list)


def test_snapshot_sees_writes_from_another_process(wb: workbench.Workbench) -> None:
    first = int(wb.catalog.query()["id"].iloc[0])
    assert wb.catalog.query(favorites=True).empty
    code = f"import workbench; workbench.open({str(wb.home)!r}).catalog.update({first}, favorite=True)"
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert wb.catalog.query(favorites=True)["id"].tolist() == [first]


def test_opening_does_not_import_torch(home: Path) -> None:
    code = (
        f"import sys, workbench; wb = workbench.open({str(home)!r}); wb.catalog.query(); print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    ).stdout
    assert out.strip() == "False"


def test_snapshot_replaces_only_changed_rows_and_matches_a_fresh_load(
    wb: workbench.Workbench, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pandas as pd

    from workbench.catalog import Catalog

    catalog = wb.catalog
    catalog.count()  # first load: the whole view
    ids = [int(i) for i in catalog.query()["id"]]
    elsewhere = workbench.open(wb.home).catalog  # another process, as far as the snapshot can tell
    full_loads: list[bool] = []
    real_load_all = catalog._load_all
    monkeypatch.setattr(
        catalog, "_load_all", lambda con, attach: full_loads.append(attach) or real_load_all(con, attach)
    )
    elsewhere.update(ids[0], rating=4, tags=["changed"])
    elsewhere.remove([ids[1]])
    frame = catalog.query()
    assert full_loads == []  # two rows replaced in place, no reload
    assert ids[1] not in set(frame["id"]) and catalog.count(tags_all=["changed"]) == 1
    fresh = Catalog(wb.db)
    pd.testing.assert_frame_equal(frame, fresh.query())
    assert catalog.facets() == fresh.facets()
    elsewhere.undo()  # the removed row comes back
    pd.testing.assert_frame_equal(
        catalog.query(sort="rating", descending=True), fresh.query(sort="rating", descending=True)
    )
    assert full_loads == [] and len(catalog.query()) == len(ids)
    catalog.refresh(force=True)
    assert full_loads == [True]


def test_snapshot_version_follows_row_changes_only(wb: workbench.Workbench) -> None:
    catalog = wb.catalog
    version, table = catalog.snapshot_table()
    assert table.num_rows == len(catalog.query()) and "_row_hash" not in table.column_names
    assert catalog.snapshot_version() == version
    with wb.db.write() as con:  # a write that touches no LoRA row (the stamp moves, the rows do not)
        con.execute("INSERT INTO jobs (id, state, created_at) VALUES ('j1', 'queued', now())")
    assert catalog.snapshot_version() == version  # derived caches (recommendations) stay valid
    first = int(table.column("id")[0].as_py())
    workbench.open(wb.home).catalog.update(first, rating=5)
    changed, fresh = catalog.snapshot_table()
    assert changed != version
    assert fresh.to_pandas().set_index("id").loc[first, "rating"] == 5
    catalog.refresh(force=True)
    assert catalog.snapshot_version() != changed  # a forced reload is new content too


def test_snapshot_survives_a_view_changed_by_another_process(wb: workbench.Workbench) -> None:
    catalog = wb.catalog
    before = catalog.query()
    with wb.db.write() as con:  # as a newer version's migration might: the view gains a column
        sql = con.execute("SELECT sql FROM duckdb_views() WHERE view_name = 'lora_view'").fetchone()[0]
        body = sql[sql.upper().index(" AS ") + 4 :].rstrip().rstrip(";")
        con.execute(f"CREATE OR REPLACE VIEW lora_view AS SELECT *, 42 AS added_later FROM ({body})")
    after = catalog.query()  # a row-by-row update would put columns in the wrong place: a full load instead
    assert list(after.columns) == [*before.columns, "added_later"] and set(after["added_later"]) == {42}
    assert after["name"].tolist() == before["name"].tolist()


def test_page_columns_is_page_with_fewer_columns(wb: workbench.Workbench) -> None:
    import pandas as pd

    frame, total = wb.catalog.page(limit=2, offset=1, sort="size", descending=True)
    narrow, narrow_total = wb.catalog.page_columns(
        ["name", "size_bytes"], limit=2, offset=1, sort="size", descending=True
    )
    assert list(narrow.columns) == ["id", "name", "size_bytes"] and narrow_total == total
    assert narrow["id"].tolist() == frame["id"].tolist() and narrow["name"].tolist() == frame["name"].tolist()
    some = [int(i) for i in frame["id"]][::-1]
    assert wb.catalog.page_columns(["path"], ids=some)[0]["id"].tolist() == wb.catalog.query(ids=some)["id"].tolist()
    cards, _ = wb.catalog.page_columns(["name", "rating"], limit=10)  # then a change elsewhere
    first = int(cards["id"][0])
    workbench.open(wb.home).catalog.update(first, rating=3)
    again, _ = wb.catalog.page_columns(["name", "rating"], limit=10)
    assert int(again.set_index("id").loc[first, "rating"]) == 3
    pd.testing.assert_frame_equal(again, wb.catalog.query(limit=10)[["id", "name", "rating"]])
    with pytest.raises(CatalogError, match="unknown column"):
        wb.catalog.page_columns(["name", "_haystack"])
    with pytest.raises(CatalogError, match="list of column names"):
        wb.catalog.page_columns("name")  # type: ignore[arg-type]
