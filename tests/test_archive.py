"""Archives round-trip user data, dry-runs change nothing, and unsafe archives are refused whole."""

from __future__ import annotations

import json
import stat
import zipfile
from pathlib import Path

import pytest
from lora_factory import write_kohya_lora

import workbench
from workbench.catalog import ArchiveError
from workbench.cli import main


@pytest.fixture
def source(tmp_path: Path) -> workbench.Workbench:
    lib = tmp_path / "lib"
    write_kohya_lora(lib / "a.safetensors", seed=1)
    write_kohya_lora(lib / "sub" / "b.safetensors", seed=2)
    (lib / "sub" / "b.civitai.info").write_text(json.dumps({"id": 1, "modelId": 2, "trainedWords": ["bee"]}))
    wb = workbench.open(tmp_path / "home1")
    wb.scan([lib], progress=False)
    wb.hash(progress=False)
    ids = dict(zip(wb.catalog.query()["file_name"], wb.catalog.query()["id"]))
    wb.catalog.update(int(ids["a.safetensors"]), rating=5, tags=["ink", "style"], notes="keeper")
    wb.catalog.update(int(ids["b.safetensors"]), favorite=True)
    with wb.db.write() as con:
        con.execute(
            "INSERT INTO recipes (name, stack, params) VALUES ('duo', '[{\"name\": \"a\", \"weight\": 0.7}]', '{}')"
        )
    return wb


def test_round_trip_with_files_into_a_fresh_home(source: workbench.Workbench, tmp_path: Path) -> None:
    archive = source.export(tmp_path / "out.zip", include_files=True)
    target = workbench.open(tmp_path / "home2")
    dry = target.import_archive(archive, dry_run=True, restore_to=tmp_path / "restored")
    assert dry.restored_files == 3 and not (tmp_path / "restored").exists() and target.catalog.count() == 0
    report = target.import_archive(archive, restore_to=tmp_path / "restored")
    assert report.restored_files == 3 and report.matched == 2 and report.updated == 2 and report.recipes == 1
    rows = {r["file_name"]: r for r in target.catalog.query().to_dict("records")}
    assert rows["a.safetensors"]["rating"] == 5 and list(rows["a.safetensors"]["tags"]) == ["ink", "style"]
    assert bool(rows["b.safetensors"]["favorite"]) and "bee" in list(rows["b.safetensors"]["trigger_words"])
    assert target.db.read_df("SELECT name FROM recipes")["name"].tolist() == ["duo"]


def test_conflict_policies(source: workbench.Workbench, tmp_path: Path) -> None:
    archive = source.export(tmp_path / "out.zip")
    a = int(source.catalog.query(text="a")["id"].iloc[0])
    source.catalog.update(a, rating=2, tags=["mine"])
    report = source.import_archive(archive, conflict="skip")
    assert report.skipped_conflicts == 1 and source.catalog.query(ids=[a]).iloc[0]["rating"] == 2
    source.import_archive(archive, conflict="merge")
    row = source.catalog.query(ids=[a]).iloc[0]
    assert row["rating"] == 2 and list(row["tags"]) == ["mine", "ink", "style"]
    assert main(["import", "--home", str(source.home), str(archive), "--conflict", "overwrite"]) == 0
    row = source.catalog.query(ids=[a]).iloc[0]
    assert row["rating"] == 5 and list(row["tags"]) == ["ink", "style"]


def _rewrite(archive: Path, dest: Path, change) -> Path:
    with zipfile.ZipFile(archive) as zin, zipfile.ZipFile(dest, "w") as zout:
        members = {i.filename: zin.read(i.filename) for i in zin.infolist()}
        change(members, zout)
        for name, data in members.items():
            zout.writestr(name, data)
    return dest


def _symlink_member(members: dict, zout: zipfile.ZipFile) -> None:
    info = zipfile.ZipInfo("files/link.safetensors")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    zout.writestr(info, "/etc/passwd")


def _manifest_with(members: dict, **changes) -> None:
    manifest = json.loads(members["manifest.json"])
    manifest.update(changes)
    members["manifest.json"] = json.dumps(manifest).encode()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m, z: m.update({"../evil.txt": b"x"}), "escapes"),
        (lambda m, z: m.update({"/abs/evil.txt": b"x"}), "absolute"),
        (_symlink_member, "symbolic link"),
        (lambda m, z: m.update({"files/big.bin": b"\0" * (8 << 20)}), "zip bomb"),
        (lambda m, z: m.update({"loras.jsonl": m["loras.jsonl"].replace(b"keeper", b"KEEPER")}), "checksum mismatch"),
        (lambda m, z: m.pop("manifest.json"), "manifest.json is missing"),
        (lambda m, z: m.update({"manifest.json": b"[1, 2"}), "not valid JSON"),
        (lambda m, z: _manifest_with(m, format="something-else"), "wrong format"),
        (lambda m, z: _manifest_with(m, version=99), "newer"),
        (lambda m, z: m.update({"extra.txt": b"hi"}), "not in the manifest"),
    ],
)
def test_unsafe_or_damaged_archives_are_refused_and_change_nothing(
    source: workbench.Workbench, tmp_path: Path, change, message
) -> None:
    archive = source.export(tmp_path / "out.zip")
    bad = _rewrite(archive, tmp_path / "bad.zip", lambda m, z: change(m, z))
    if message == "zip bomb":  # compress the bomb member for real
        with zipfile.ZipFile(bad) as zin:
            members = {i.filename: zin.read(i.filename) for i in zin.infolist()}
        with zipfile.ZipFile(bad, "w", compression=zipfile.ZIP_DEFLATED) as zout:
            for name, data in members.items():
                zout.writestr(name, data)
    target = workbench.open(tmp_path / "home2")
    with pytest.raises(ArchiveError, match=message):
        target.import_archive(bad, restore_to=tmp_path / "restored")
    assert target.catalog.count() == 0 and not (tmp_path / "restored").exists()
    assert not (tmp_path / "evil.txt").exists()


def test_not_a_zip_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "x.zip").write_text("hello")
    wb = workbench.open(tmp_path / "home")
    with pytest.raises(ArchiveError, match="not a readable zip"):
        wb.import_archive(tmp_path / "x.zip")
    assert main(["import", "--home", str(wb.home), str(tmp_path / "x.zip")]) == 2


def test_negative_text_travels_a_chosen_preview_stays_local(source: workbench.Workbench, tmp_path: Path) -> None:
    import io

    from PIL import Image

    lora_id = int(source.catalog.query().iloc[0]["id"])
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    source.set_preview(lora_id, buffer.getvalue())
    source.catalog.update(lora_id, negative_text="lowres")
    archive = source.export(tmp_path / "out.zip", include_files=True)
    target = workbench.open(tmp_path / "home2")
    target.import_archive(archive, restore_to=tmp_path / "restored")
    row = target.catalog.query(text=source.catalog.get(lora_id)["name"]).iloc[0]
    assert row["negative_text"] == "lowres"
    assert not str(row["preview_path"] or "").startswith(str(source.home))
