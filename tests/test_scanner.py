"""Scanning real and hostile libraries: extraction, incremental rescans, missing/relinked files."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from lora_factory import write_kohya_lora
from malformed_corpus import build_malformed_corpus

import workbench
import workbench.files


def test_scan_real_files(home: Path, shared_data: Path, tmp_path: Path) -> None:
    lib = tmp_path / "real"
    shutil.copytree(shared_data / "loras", lib)
    wb = workbench.open(home)
    report = wb.scan([lib], progress=False)
    assert report.new == 4 and report.errors == 0
    frame = wb.catalog.query()
    assert set(frame["base_model"]) == {"SD1"}
    assert set(frame["rank"]) == {4}
    layouts = dict(zip(frame["file_name"], frame["key_layout"]))
    assert layouts["analog_svd_rank4.safetensors"] == "cloneofsimo"
    assert layouts["catundchat_weapons_sd15_pytorch_lora_weights.safetensors"] == "diffusers_attn"
    assert frame["error"].isna().all()
    assert frame["base_model_evidence"].str.len().gt(0).all()


def test_malformed_corpus_gets_clear_errors_and_the_scan_goes_on(home: Path, tmp_path: Path) -> None:
    lib = tmp_path / "bad"
    cases = build_malformed_corpus(lib)
    assert len(cases) >= 50
    write_kohya_lora(lib / "fine.safetensors", seed=3)
    wb = workbench.open(home)
    report = wb.scan([lib], progress=False)
    frame = wb.catalog.query()
    assert "fine" in set(frame["name"]) and frame.loc[frame["name"] == "fine", "error"].isna().all()
    assert report.errors >= 40
    details = {int(i): wb.catalog.get(int(i)) for i in frame["id"]}
    by_path = {os.path.relpath(d["path"], lib.resolve()): d for d in details.values()}
    checked = 0
    for rel, expected in cases.items():
        if not rel.endswith((".safetensors", ".ckpt", ".pt", ".bin")):
            continue
        match = by_path.get(rel) or next((d for r, d in by_path.items() if r.endswith(os.path.basename(rel))), None)
        assert match is not None, f"{rel} has no catalog row"
        text = " ".join([match.get("error") or "", *(match.get("sidecar_errors") or [])])
        assert expected.lower() in text.lower(), f"{rel}: expected {expected!r} in {text!r}"
        checked += 1
    assert checked >= 40
    assert not list(tmp_path.rglob("PWNED*")), "a pickle was executed"


def test_symlinks_followed_without_duplicates_or_loops(home: Path, tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    write_kohya_lora(lib / "a" / "one.safetensors", seed=1)
    os.symlink(lib / "a", lib / "a_again")  # same folder twice
    os.symlink(lib, lib / "a" / "loop")  # a loop back to the root
    outside = tmp_path / "outside"
    write_kohya_lora(outside / "two.safetensors", seed=2)
    os.symlink(outside, lib / "linked")  # a linked folder elsewhere
    os.symlink(outside / "two.safetensors", lib / "two_link.safetensors")  # the same file by a file link
    wb = workbench.open(home)
    # By default nothing outside the root is followed: the file link is listed with a note, the folder skipped.
    report = wb.scan([lib, lib / "a"], progress=False)  # overlapping roots too
    assert report.seen == 2
    frame = wb.catalog.query()
    assert sorted(frame["file_name"]) == ["one.safetensors", "two_link.safetensors"]
    link_row = frame[frame["file_name"] == "two_link.safetensors"].iloc[0]
    assert "outside the library root" in link_row["error"] and "--follow-outside" in link_row["error"]
    assert link_row["path"] == str(lib.resolve() / "two_link.safetensors")
    assert link_row["network_type"] is None or link_row["network_type"] != link_row["network_type"]
    assert any("linked" in s and "outside the library root" in s for s in report.skipped_dirs)
    # Opted in (and remembered for the root): the outside file is catalogued once.
    report = wb.scan([lib], progress=False, follow_outside=True)
    assert sorted(wb.catalog.query(missing=False)["file_name"]) == ["one.safetensors", "two.safetensors"]
    report = wb.scan(progress=False)  # remembered
    assert report.unchanged >= 2
    assert "two.safetensors" in set(wb.catalog.query(missing=False)["file_name"])


def test_incremental_rescan_reopens_only_changed_files(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = tmp_path / "lib"
    for i in range(5):
        write_kohya_lora(lib / f"l{i}.safetensors", seed=i)
    wb = workbench.open(home)
    wb.scan([lib], progress=False)
    opened: list[str] = []
    real_inspect = workbench.files.inspect_lora
    monkeypatch.setattr(
        workbench.files,
        "inspect_lora",
        lambda p, st=None, **kw: opened.append(Path(p).name) or real_inspect(p, st, **kw),
    )
    report = wb.scan(progress=False)
    assert opened == [] and report.unchanged == 5
    os.utime(lib / "l1.safetensors", ns=(10**18, 10**18))
    (lib / "l2.civitai.info").write_text(
        '{"id": 5, "modelId": 7, "name": "v1", "baseModel": "SD 1.5", "trainedWords": ["inkwash"]}'
    )
    report = wb.scan(progress=False)
    assert sorted(opened) == ["l1.safetensors", "l2.safetensors"] and report.changed == 2
    row = wb.catalog.query(text="l2").iloc[0]
    assert "inkwash" in list(row["trigger_words"])


def test_missing_files_are_marked_then_relinked(home: Path, tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    path = write_kohya_lora(lib / "keep.safetensors", seed=1)
    write_kohya_lora(lib / "moving.safetensors", seed=2)
    wb = workbench.open(home)
    wb.scan([lib], progress=False)
    ids = dict(zip(wb.catalog.query()["file_name"], wb.catalog.query()["id"]))
    wb.catalog.update(int(ids["keep.safetensors"]), rating=4, tags=["mine"])
    wb.catalog.update(int(ids["moving.safetensors"]), favorite=True)

    hidden = tmp_path / "keep.safetensors.away"
    path.rename(hidden)
    report = wb.scan(progress=False)
    assert report.missing == 1
    row = wb.catalog.query(ids=[int(ids["keep.safetensors"])]).iloc[0]
    assert bool(row["missing"]) and row["rating"] == 4  # marked, not deleted
    assert wb.catalog.query(missing=True)["file_name"].tolist() == ["keep.safetensors"]

    hidden.rename(path)
    report = wb.scan(progress=False)
    assert report.returned == 1
    row = wb.catalog.query(ids=[int(ids["keep.safetensors"])]).iloc[0]
    assert not bool(row["missing"]) and list(row["tags"]) == ["mine"]

    (lib / "sub").mkdir()
    (lib / "moving.safetensors").rename(lib / "sub" / "moving.safetensors")
    report = wb.scan(progress=False)
    assert report.relinked == 1 and wb.catalog.count() == 2
    row = wb.catalog.query(ids=[int(ids["moving.safetensors"])]).iloc[0]
    assert row["folder"] == "sub" and bool(row["favorite"])  # same id, user fields followed the file


def test_scan_cli_and_parallel_pool(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from workbench.cli import main

    lib = tmp_path / "lib"
    for i in range(12):
        write_kohya_lora(lib / f"f{i // 4}" / f"l{i}.safetensors", seed=i, base="SD1" if i % 2 else "SDXL")
    monkeypatch.setattr("workbench.catalog._scan._POOL_THRESHOLD", 4)  # force the process pool on a small library
    assert main(["scan", str(lib), "--home", str(home), "--workers", "2", "-q", "--hash"]) == 0
    wb = workbench.open(home)
    frame = wb.catalog.query()
    assert len(frame) == 12 and frame["sha256"].notna().all()
    assert sorted(frame["base_model"].value_counts().to_dict().items()) == [("SD1", 6), ("SDXL", 6)]
    assert main(["scan", str(tmp_path / "nope"), "--home", str(home), "-q"]) == 2


def test_two_processes_scanning_at_once_make_no_duplicates(home: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    lib = tmp_path / "lib"
    for i in range(30):
        write_kohya_lora(lib / f"l{i}.safetensors", seed=i)
    workbench.open(home)
    code = f"import workbench; workbench.open({str(home)!r}).scan([{str(lib)!r}], progress=False)"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env) for _ in range(3)]
    assert all(p.wait(timeout=300) == 0 for p in procs)
    frame = workbench.open(home).catalog.query()
    assert len(frame) == 30 and frame["path"].is_unique


def test_a_rescan_with_nothing_to_do_writes_nothing(home: Path, tmp_path: Path) -> None:
    """No change → no write transaction: the change stamp stays, so no kernel reloads its snapshot.

    A removed file, a new root and a changed follow-outside choice are still recorded.
    """
    lib = tmp_path / "lib"
    for i in range(3):
        write_kohya_lora(lib / f"l{i}.safetensors", seed=i)
    wb = workbench.open(home)
    wb.scan([lib], progress=False)
    stamp = wb.db.stamp()
    again = wb.scan([lib], progress=False)
    assert again.unchanged == 3 and wb.db.stamp() == stamp
    assert wb.scan(progress=False).unchanged == 3 and wb.db.stamp() == stamp  # the remembered roots
    wb.scan([lib], progress=False, follow_outside=True)
    assert wb.db.stamp() != stamp
    stamp = wb.db.stamp()
    wb.scan([lib], progress=False, follow_outside=True)
    assert wb.db.stamp() == stamp
    (lib / "l0.safetensors").unlink()
    assert wb.scan([lib], progress=False).missing == 1 and wb.db.stamp() != stamp
    assert wb.catalog.count(missing=True) == 1


def test_a_failing_catalog_write_stops_the_scan_with_its_error_and_frees_the_lock(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = tmp_path / "lib"
    for i in range(7):
        write_kohya_lora(lib / f"l{i}.safetensors", seed=i)
    wb = workbench.open(home)
    monkeypatch.setattr("workbench.catalog._scan._BATCH_ROWS", 2)
    real_write = sys.modules["workbench.catalog._scan"]._write_contained  # white-box: the writer thread's write
    calls: list[int] = []

    def write_then_fail(db: object, records: list) -> None:
        calls.append(len(records))
        if len(calls) == 2:
            raise OSError("disk full (injected)")
        real_write(db, records)

    monkeypatch.setattr("workbench.catalog._scan._write_contained", write_then_fail)
    with pytest.raises(OSError, match="disk full"):
        wb.scan([lib], progress=False, workers=1)
    assert 1 <= len(calls) <= 3  # the batches after the failure are not written
    written = len(wb.catalog.query())
    assert written == calls[0]  # what was written before the failure is kept, nothing else
    monkeypatch.setattr("workbench.catalog._scan._write_contained", real_write)
    report = wb.scan(progress=False, workers=1)  # the scan lock was released: the next scan runs and completes
    assert len(wb.catalog.query()) == 7 and report.new == 7 - written
