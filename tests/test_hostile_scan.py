"""Issue 14 (part 1): a hostile library scans whole.

One bad file, name, link or sidecar gives one row with a clear message and the scan goes on;
nothing outside the library root is opened or listed, nothing outside the home is written, and
what is stored stays bounded. The corpus is ``malformed_corpus.build_hostile_corpus`` plus the
malformed corpus, scanned together.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import orjson
import pytest
from malformed_corpus import (
    OUTSIDE_SECRET,
    _tiny_entries,
    build_hostile_corpus,
    build_malformed_corpus,
    write_safetensors,
)

import workbench
from workbench.catalog import MAX_ERROR_CHARS, MAX_NOTE_CHARS, MAX_NOTES, MAX_STORED_JSON_BYTES, RootRefusedError
from workbench.files import ThumbnailCache, catalog_path, fs_path, inspect_lora

# -- recording what a scan opens and lists (PEP 578 audit hooks cannot be removed, so they are gated) --

_RECORD: list[tuple[str, str, object]] | None = None


def _audit(event: str, args: tuple) -> None:
    if _RECORD is None:
        return
    if event == "open":
        path, mode, flags = args
        if isinstance(path, (str, bytes, os.PathLike)):
            _RECORD.append(("open", os.fsdecode(path), (mode, flags)))
    elif event in ("os.listdir", "os.scandir") and args and isinstance(args[0], (str, bytes, os.PathLike)):
        _RECORD.append(("list", os.fsdecode(args[0]), None))


sys.addaudithook(_audit)


def _writes(mode: object, flags: object) -> bool:
    if isinstance(mode, str) and any(c in mode for c in "wax+"):
        return True
    return isinstance(flags, int) and bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC))


def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every entry under ``folder`` (links not followed) with its size and mtime."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            out[os.path.join(dirpath, name)] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile")
    lib, outside = base / "lib", base / "outside"
    cases, folder_links = build_hostile_corpus(lib, outside)
    for rel, expect in build_malformed_corpus(lib / "malformed").items():
        cases[f"malformed/{rel}"] = expect
    return base, lib.resolve(), outside.resolve(), cases, folder_links


@pytest.fixture(scope="module")
def scanned(hostile, tmp_path_factory):
    global _RECORD
    base, lib, outside, cases, folder_links = hostile
    home = tmp_path_factory.mktemp("hostile_home")
    wb = workbench.open(home)
    before = _tree(lib), _tree(outside)
    _RECORD = []
    try:
        report = wb.scan([lib], workers=1, progress=False)
        events = list(_RECORD)
    finally:
        _RECORD = None
    after = _tree(lib), _tree(outside)
    rows = wb.db.read_df(
        "SELECT *, length(CAST(metadata AS VARCHAR)) AS metadata_chars, "
        "length(CAST(sidecars AS VARCHAR)) AS sidecars_chars FROM loras"
    )
    rows = rows.astype(object).where(rows.notna(), None)  # NaN → None
    by_path = {row["path"]: row for row in rows.to_dict("records")}
    return wb, home, report, events, (before, after), by_path


def test_the_corpus_holds_enough_cases(hostile):
    _, _, _, cases, folder_links = hostile
    assert len(cases) + len(folder_links) >= 170


def test_every_case_has_one_row_with_its_message(hostile, scanned):
    _, lib, _, cases, _ = hostile
    _, _, report, _, _, by_path = scanned
    failures = []
    for rel, expected in sorted(cases.items()):
        stored = catalog_path(str(lib / rel))
        row = by_path.get(stored)
        if row is None:
            failures.append(f"{rel!r}: no row")
            continue
        messages = [row["error"] or "", *(row["sidecar_errors"] if row["sidecar_errors"] is not None else [])]
        if expected and not any(expected in m for m in messages):
            failures.append(f"{rel!r}: expected {expected!r}, got {messages}")
        if not expected and row["error"]:
            failures.append(f"{rel!r}: expected no error, got {row['error']!r}")
        if any("internal error" in m or "could not store" in m or "could not inspect" in m for m in messages):
            failures.append(f"{rel!r}: unclear message {messages}")
    assert not failures, "\n".join(failures)
    assert report.errors >= 60


def test_what_is_stored_stays_bounded(scanned):
    *_, by_path = scanned
    for path, row in by_path.items():
        assert len(row["error"] or "") <= MAX_ERROR_CHARS, path
        notes = list(row["sidecar_errors"]) if row["sidecar_errors"] is not None else []
        assert len(notes) <= MAX_NOTES + 1 and all(len(n) <= MAX_NOTE_CHARS for n in notes), path
        for column in ("trigger_words", "file_tags"):
            values = row[column]
            assert values is None or len(values) <= 1000, (path, column)
        assert len(row["name"] or "") <= 500, path
        assert len(row["description"] or "") <= 70_000, path
        for column in ("metadata_chars", "sidecars_chars"):
            value = row[column]
            assert value is None or value <= MAX_STORED_JSON_BYTES, (path, column)


def test_huge_tag_counts_are_clamped_not_fatal(hostile, scanned):
    _, lib, _, _, _ = hostile
    *_, by_path = scanned
    for stem in ("tagfreq_u64_max", "tagfreq_1e308", "tagfreq_sum_overflow"):
        row = by_path[str(lib / "meta" / f"{stem}.safetensors")]
        tags = dict(orjson.loads(row["training_tags"]))
        assert tags["girl"] == 2**53 - 1 and tags["solo" if "sum" not in stem else "girl"] > 0, stem
    big = by_path[str(lib / "meta" / "tagfreq_100k_tags.safetensors")]
    assert len(orjson.loads(big["training_tags"])) == 50
    huge = by_path[str(lib / "meta" / "tagfreq_12mb.safetensors")]
    assert huge["metadata_chars"] < 10_000  # a note, not 12 MB
    assert "not read" in orjson.loads(huge["metadata"])["ss_tag_frequency"]
    mid = by_path[str(lib / "meta" / "tagfreq_100k_tags.safetensors")]  # 2 MB: counted, then kept as a note
    assert "too large to keep" in orjson.loads(mid["metadata"])["ss_tag_frequency"]


def test_long_lists_are_cut_with_a_note(hostile, scanned):
    _, lib, _, _, _ = hostile
    *_, by_path = scanned
    row = by_path[str(lib / "bounds" / "trained_words_100k.safetensors")]
    assert list(row["trigger_words"])[:3] == ["w0", "w1", "w2"] and len(row["trigger_words"]) == 1000
    row = by_path[str(lib / "bounds" / "tags_300k.safetensors")]
    assert len(row["file_tags"]) == 1000
    row = by_path[str(lib / "bounds" / "trained_words_dupes.safetensors")]
    assert list(row["trigger_words"]) == ["same"]


def test_nothing_outside_the_root_is_opened_or_listed(hostile, scanned):
    _, lib, outside, _, _ = hostile
    _, home, _, events, _, _ = scanned
    assert events, "the audit hook recorded nothing: the check would be vacuous"
    assert any(kind == "open" and path.startswith(str(lib)) for kind, path, _ in events)
    for kind, path, _ in events:
        resolved = os.path.realpath(path)
        assert not resolved.startswith(str(outside)), (kind, path)
        assert not resolved.startswith("/proc/") and resolved not in ("/etc/passwd", "/dev/zero"), (kind, path)
        if kind == "list":  # the library, the home, and Python's own import folders (lazy imports)
            allowed = (str(lib), str(home), sys.prefix, sys.base_prefix, *(p for p in sys.path if p))
            assert resolved.startswith(allowed) and resolved not in ("/", "/usr", "/etc"), (kind, path)


def test_nothing_outside_the_home_is_written(hostile, scanned):
    _, lib, outside, _, _ = hostile
    _, home, _, events, (before, after), _ = scanned
    assert before == after  # library and outside folders untouched
    for kind, path, flags in events:
        if kind == "open" and _writes(*flags):
            assert os.path.realpath(path).startswith(str(home.resolve())), path


def test_no_secret_reaches_the_catalog(scanned):
    wb, *_ = scanned
    dump = wb.db.read_df("SELECT * FROM loras").to_json(date_format="iso")
    assert OUTSIDE_SECRET not in dump
    assert "PATH=" not in dump and "root:x:0:0" not in dump


def test_folder_links_outside_or_to_the_system_are_listed_not_walked(hostile, scanned):
    _, lib, _, _, folder_links = hostile
    _, _, report, _, _, by_path = scanned
    for rel, expected in folder_links.items():
        assert any(str(lib / rel) in s and expected in s for s in report.skipped_dirs), (rel, report.skipped_dirs)
    assert not any("bait_dir" in p or p.startswith(("/usr", "/proc", "/etc")) for p in by_path)


def test_non_utf8_paths_are_stored_escaped_and_read_again(hostile, scanned):
    _, lib, _, cases, _ = hostile
    wb, home, *_, by_path = scanned
    odd = [rel for rel in cases if rel.startswith("names/") and catalog_path(rel) != rel]
    assert len(odd) >= 8
    for rel in odd:
        stored = catalog_path(str(lib / rel))
        row = by_path[stored]
        stored.encode("utf-8")  # valid text for DuckDB, JSON and browsers
        assert fs_path(stored) == str(lib / rel) and os.path.exists(fs_path(stored))
        assert os.path.isdir(os.path.join(lib, fs_path(row["folder"]))), row["folder"]
        again = inspect_lora(fs_path(stored))
        assert again["error"] == row["error"] or (again["error"] or "").startswith((row["error"] or "")[:20])
    side = by_path[catalog_path(str(lib / os.fsdecode(b"names/side\xff.safetensors")))]
    assert list(side["trigger_words"]) == ["ink"]
    thumbs = ThumbnailCache(home, wb.roots)
    assert thumbs.get(side["preview_path"]) is not None  # the stored (escaped) preview path is readable


def test_rescan_of_the_hostile_library_reopens_nothing(hostile, scanned):
    _, lib, _, _, _ = hostile
    wb, *_, by_path = scanned
    report = wb.scan([lib], workers=1, progress=False)
    assert report.new == 0 and report.changed == 0 and report.missing == 0
    assert wb.db.read_df("SELECT count(*) AS n FROM loras")["n"][0] == len(by_path)


def test_pool_scan_of_odd_names_and_links_matches(hostile, tmp_path, monkeypatch):
    """The same messages when files are inspected in forked pool workers."""
    _, lib, _, cases, _ = hostile
    monkeypatch.setattr("workbench.catalog._scan._POOL_THRESHOLD", 4)
    wb = workbench.open(tmp_path / "home")
    wb.scan([lib / "names", lib / "links"], workers=2, progress=False)
    rows = wb.db.read_df("SELECT path, coalesce(error, '') AS error, coalesce(sidecar_errors, []) AS notes FROM loras")
    messages = {path: [error, *notes] for path, error, notes in zip(rows["path"], rows["error"], rows["notes"])}
    checked = 0
    for rel, expected in cases.items():
        if rel.startswith(("names/", "links/")):
            found = messages[catalog_path(str(lib / rel))]
            assert (expected and any(expected in m for m in found)) or (not expected and not found[0]), (rel, found)
            checked += 1
    assert checked >= 50


def test_follow_outside_still_never_reads_system_files(hostile, tmp_path):
    _, lib, outside, _, _ = hostile
    wb = workbench.open(tmp_path / "home")
    report = wb.scan([lib / "links"], workers=1, progress=False, follow_outside=True)
    rows = wb.db.read_df("SELECT path, error, sidecar_errors FROM loras")
    paths = set(rows["path"])
    assert str(outside / "bait.safetensors") in paths  # opted in: the outside file is catalogued
    assert any("never followed" in s for s in report.skipped_dirs)  # links to / and /proc still refused
    env = rows[rows["path"] == str(lib / "links" / "side_civitai_info_environ.safetensors")].iloc[0]
    assert any("links outside the library root" in n for n in env["sidecar_errors"])
    assert OUTSIDE_SECRET not in rows.to_json().replace(str(outside), "")  # names only, never contents


@pytest.mark.parametrize("root", ["/", "/proc", "/sys/kernel", "/usr", "/usr/share", "/etc", "/dev"])
def test_system_folders_are_refused_as_roots(root, tmp_path):
    wb = workbench.open(tmp_path / "home")
    with pytest.raises(RootRefusedError, match="refusing to scan"):
        wb.scan([root], progress=False)
    assert wb.catalog.roots() == []


def test_a_link_to_the_root_folder_is_refused_too(tmp_path, capsys):
    from workbench.cli import main

    os.symlink("/", tmp_path / "everything")
    assert main(["scan", str(tmp_path / "everything"), "--home", str(tmp_path / "home"), "-q"]) == 2
    assert "file-system root" in capsys.readouterr().err


def test_the_probe_library_scans_without_stopping(tmp_path):
    """The probe's two scan-stoppers side by side with a good file: every file gets its row."""
    lib = tmp_path / "lib"
    write_safetensors(lib / "good.safetensors", _tiny_entries())
    write_safetensors(lib / os.fsdecode(b"bad\xff.safetensors"), _tiny_entries())
    (lib / os.fsdecode(b"folder\xfe")).mkdir()
    write_safetensors(lib / os.fsdecode(b"folder\xfe/x.safetensors"), _tiny_entries())
    write_safetensors(
        lib / "counts.safetensors", _tiny_entries(), {"ss_tag_frequency": '{"a": {"t": 18446744073709551615}}'}
    )
    wb = workbench.open(tmp_path / "home")
    report = wb.scan([lib], progress=False)
    assert report.new == 4 and report.errors == 0
    assert wb.catalog.count() == 4


def test_files_with_undecodable_names_are_hashed(tmp_path):
    lib = tmp_path / "lib"
    path = write_safetensors(lib / os.fsdecode(b"h\xff\xfe.safetensors"), _tiny_entries())
    wb = workbench.open(tmp_path / "home")
    wb.scan([lib], progress=False)
    assert wb.hash(progress=False) == 1
    row = wb.catalog.query().iloc[0]
    import hashlib

    assert row["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert fs_path(row["path"]) == str(path.resolve())


def test_follow_outside_from_the_command_line_is_remembered_per_root(tmp_path):
    from workbench.cli import main

    lib, outside, home = tmp_path / "lib", tmp_path / "outside", tmp_path / "home"
    write_safetensors(lib / "in.safetensors", _tiny_entries())
    write_safetensors(outside / "out.safetensors", _tiny_entries())
    os.symlink(outside, lib / "linked")
    assert main(["scan", str(lib), "--home", str(home), "-q"]) == 0
    wb = workbench.open(home)
    assert sorted(wb.catalog.query()["file_name"]) == ["in.safetensors"]
    assert main(["scan", str(lib), "--home", str(home), "-q", "--follow-outside"]) == 0
    assert main(["scan", "--home", str(home), "-q"]) == 0  # remembered for this root
    assert sorted(wb.catalog.query(missing=False)["file_name"]) == ["in.safetensors", "out.safetensors"]
    assert main(["scan", str(lib), "--home", str(home), "-q", "--no-follow-outside"]) == 0
    assert sorted(wb.catalog.query(missing=False)["file_name"]) == ["in.safetensors"]


def test_a_row_the_catalog_refuses_keeps_its_identity_and_the_rest_are_written(tmp_path, monkeypatch):
    lib = tmp_path / "lib"
    for name in ("a", "b", "c"):
        write_safetensors(lib / f"{name}.safetensors", _tiny_entries())
    import sys

    real = sys.modules["workbench.catalog._scan"]._record_from_info

    def poisoned(item, info):
        record = real(item, info)
        if item.file_name == "b.safetensors":
            record["metadata"] = "{this is not JSON"  # DuckDB refuses the CAST AS JSON: the batch fails
        return record

    monkeypatch.setattr("workbench.catalog._scan._record_from_info", poisoned)
    wb = workbench.open(tmp_path / "home")
    wb.scan([lib], progress=False, workers=1)
    rows = wb.db.read_df("SELECT file_name, coalesce(error, '') AS error, header_len FROM loras ORDER BY file_name")
    assert list(rows["file_name"]) == ["a.safetensors", "b.safetensors", "c.safetensors"]
    assert rows["error"].iloc[0] == rows["error"].iloc[2] == "" and rows["header_len"].iloc[0] > 0
    assert "could not store this file's details" in rows["error"].iloc[1]
