"""Hostile archives: each refused with a clear message by the dry run AND by the import, with nothing written
(no catalog change, no restored file, no staging folder); big imports are one transaction; a SIGKILL
mid-import leaves all or nothing."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import warnings
import zipfile
from collections.abc import Callable
from hashlib import sha256
from pathlib import Path

import pytest
from lora_factory import write_kohya_lora

import workbench
from workbench.catalog import ArchiveError, Database
from workbench.cli import main

REPO = Path(__file__).resolve().parents[1]
DEEP = "[" * 100_000 + "]" * 100_000


@pytest.fixture(scope="module")
def good_archive(tmp_path_factory) -> Path:
    """A real export with two files, a sidecar, user fields and a recipe."""
    base = tmp_path_factory.mktemp("good")
    lib = base / "lib"
    write_kohya_lora(lib / "a.safetensors", seed=1)
    write_kohya_lora(lib / "sub" / "b.safetensors", seed=2)
    (lib / "sub" / "b.civitai.info").write_text(json.dumps({"id": 1, "modelId": 2, "trainedWords": ["bee"]}))
    wb = workbench.open(base / "home")
    wb.scan([lib], progress=False, workers=1)
    wb.hash(progress=False, workers=1)
    ids = dict(zip(wb.catalog.query()["file_name"], wb.catalog.query()["id"]))
    wb.catalog.update(int(ids["a.safetensors"]), rating=5, tags=["ink"], notes="keeper")
    wb.catalog.update(int(ids["b.safetensors"]), favorite=True)
    with wb.db.write() as con:
        con.execute("INSERT INTO recipes (name, stack, params) VALUES ('duo', '[{\"name\": \"a\"}]', '{}')")
    return wb.export(base / "good.zip", include_files=True)


def _members(archive: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(archive) as zf:
        return {i.filename: zf.read(i.filename) for i in zf.infolist()}


def _write(
    dest: Path, members: dict[str, bytes], *, sign: bool = True, extra: Callable | None = None, stored: bool = False
) -> Path:
    """Write members (re-signing the manifest's checksums unless ``sign=False``) plus raw ``extra`` entries.
    ``stored``: no compression, so a deep JSON reaches the depth check instead of the bomb-ratio check."""
    if sign and "manifest.json" in members and len(members["manifest.json"]) < 100_000:
        manifest = json.loads(members["manifest.json"])
        if isinstance(manifest, dict) and isinstance(manifest.get("sha256"), dict):
            manifest["sha256"] = {n: sha256(d).hexdigest() for n, d in members.items() if n != "manifest.json"}
            for key in ("loras", "recipes"):
                manifest[key] = len([ln for ln in members.get(f"{key}.jsonl", b"").splitlines() if ln.strip()])
            members = {**members, "manifest.json": json.dumps(manifest).encode()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names on purpose
        with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED) as zf:
            for name, data in members.items():
                zf.writestr(name, data)
            if extra is not None:
                extra(zf)
    return dest


def _with_line(members: dict[str, bytes], name: str, line: str) -> dict[str, bytes]:
    return {**members, name: members[name] + line.encode() + b"\n"}


def _manifest(members: dict[str, bytes], **changes) -> dict[str, bytes]:
    manifest = json.loads(members["manifest.json"])
    manifest.update(changes)
    return {**members, "manifest.json": json.dumps(manifest).encode()}


def _lora_line(**fields) -> str:
    return json.dumps({"name": "x", "file_name": "x.safetensors", "size_bytes": 1, "user_fields": {}, **fields})


def _special(mode: int, name: str = "files/dev.safetensors") -> Callable:
    def add(zf: zipfile.ZipFile) -> None:
        info = zipfile.ZipInfo(name)
        info.external_attr = mode << 16
        zf.writestr(info, b"x")

    return add


def _case(build: Callable[[dict[str, bytes], Path], Path], message: str, setup: Callable | None = None):
    return (build, message, setup)


FILE_A = "files/a.safetensors"

HOSTILE = {
    "300-byte member name": _case(
        lambda m, d: _write(d, {**m, "files/" + "a" * 300 + ".safetensors": b"x"}), "longer than 255 bytes"
    ),
    "1100-byte path": _case(
        lambda m, d: _write(d, {**m, "files/" + "/".join(["d" * 100] * 11) + "/x": b"x"}), "member name of"
    ),
    "40 folders deep": _case(
        lambda m, d: _write(d, {**m, "files/" + "d/" * 40 + "x.safetensors": b"x"}), "folders deep"
    ),
    "file beside folder of the same name": _case(
        lambda m, d: _write(d, {**m, "files/a": b"x", "files/a/b.safetensors": b"y"}), "both a file and a folder"
    ),
    "duplicate member": _case(lambda m, d: _write(d, m, extra=lambda z: z.writestr(FILE_A, b"other")), "appears twice"),
    "control character in a name": _case(
        lambda m, d: _write(d, {**m, "files/a\nb.safetensors": b"x"}), "control characters"
    ),
    "symbolic link member": _case(lambda m, d: _write(d, m, extra=_special(stat.S_IFLNK | 0o777)), "symbolic link"),
    "device member": _case(lambda m, d: _write(d, m, extra=_special(stat.S_IFCHR | 0o644)), "not a regular file"),
    "fifo member": _case(lambda m, d: _write(d, m, extra=_special(stat.S_IFIFO | 0o644)), "not a regular file"),
    "absolute path": _case(lambda m, d: _write(d, {**m, "/etc/evil": b"x"}), "absolute"),
    "dot-dot path": _case(lambda m, d: _write(d, {**m, "files/../../evil": b"x"}), "escapes"),
    "64 x 1 MiB zero members (each <= 1 MiB)": _case(
        lambda m, d: _write(d, {**m, **{f"files/z{i}.bin": b"\0" * (1 << 20) for i in range(64)}}), "zip bomb"
    ),
    "100,000-deep recipe stack": _case(
        lambda m, d: _write(
            d, _with_line(m, "recipes.jsonl", json.dumps({"name": "deep", "stack": DEEP})), stored=True
        ),
        "nested",
    ),
    "100,000-deep manifest": _case(
        lambda m, d: _write(d, {**m, "manifest.json": DEEP.encode()}, stored=True), "nested too deeply"
    ),
    "100,000-deep loras line": _case(
        lambda m, d: _write(d, _with_line(m, "loras.jsonl", '{"user_fields": ' + DEEP + "}"), stored=True), "nested"
    ),
    "40-deep user field": _case(
        lambda m, d: _write(d, _with_line(m, "loras.jsonl", '{"user_fields": {"notes": ' + "[" * 40 + "]" * 40 + "}}")),
        "nested more than 32 levels",
    ),
    'sha256 ["list"] in an entry': _case(
        lambda m, d: _write(d, _with_line(m, "loras.jsonl", _lora_line(sha256=["list"]))), "sha256 must be str"
    ),
    "sha256 not hex": _case(
        lambda m, d: _write(d, _with_line(m, "loras.jsonl", _lora_line(sha256="zz"))), "64 hexadecimal"
    ),
    'manifest checksum ["list"]': _case(
        lambda m, d: _write(d, _manifest(m, sha256={"loras.jsonl": ["list"]}), sign=False), "no valid checksum table"
    ),
    "manifest checksums a list": _case(
        lambda m, d: _write(d, _manifest(m, sha256=["x"]), sign=False), "no valid checksum table"
    ),
    "size_bytes as text": _case(
        lambda m, d: _write(d, _with_line(m, "loras.jsonl", _lora_line(size_bytes="big"))), "size_bytes must be int"
    ),
    "rating 99": _case(
        lambda m, d: _write(d, _with_line(m, "loras.jsonl", _lora_line(user_fields={"rating": 99}))), "rating must be"
    ),
    "100,000 tags": _case(
        lambda m, d: _write(
            d, _with_line(m, "loras.jsonl", _lora_line(user_fields={"tags": [f"t{i}" for i in range(100_000)]}))
        ),
        "at most 500 tags",
    ),
    "user_fields not an object": _case(
        lambda m, d: _write(d, _with_line(m, "loras.jsonl", _lora_line(user_fields=[1]))),
        "user_fields is not an object",
    ),
    "line not an object": _case(lambda m, d: _write(d, _with_line(m, "loras.jsonl", "[1, 2]")), "not a JSON object"),
    "not UTF-8": _case(lambda m, d: _write(d, {**m, "loras.jsonl": m["loras.jsonl"] + b"\xff\xfe\n"}), "not UTF-8"),
    "wrong checksum on the second file": _case(
        lambda m, d: _write(
            d,
            _manifest(m, sha256={**json.loads(m["manifest.json"])["sha256"], "files/sub/b.safetensors": "0" * 64}),
            sign=False,
        ),
        "checksum mismatch for 'files/sub/b.safetensors'",
    ),
    "manifest lists a missing member": _case(
        lambda m, d: _write(
            d, _manifest(m, sha256={**json.loads(m["manifest.json"])["sha256"], "files/gone": "0" * 64}), sign=False
        ),
        "lacks",
    ),
    "manifest count wrong": _case(lambda m, d: _write(d, _manifest(m, loras=99), sign=False), "says 99 loras"),
    "manifest version as text": _case(lambda m, d: _write(d, _manifest(m, version="1")), "no valid version"),
    "recipe params NaN": _case(
        lambda m, d: _write(d, _with_line(m, "recipes.jsonl", '{"name": "r", "stack": [], "params": {"x": NaN}}')),
        "NaN or infinity",
    ),
    "recipe without a name": _case(
        lambda m, d: _write(d, _with_line(m, "recipes.jsonl", '{"stack": []}')), "needs a name"
    ),
    "recipe stack an object": _case(
        lambda m, d: _write(d, _with_line(m, "recipes.jsonl", '{"name": "r", "stack": {"a": 1}}')),
        "stack must be a list",
    ),
    "unexpected member": _case(lambda m, d: _write(d, {**m, "other/x.txt": b"x"}), "unexpected member"),
    "restore over a file where a folder goes": _case(
        lambda m, d: _write(d, m), "is a file, not a folder", setup=lambda t: (t.mkdir(), (t / "sub").write_text("x"))
    ),
    "restore through a symlinked folder": _case(
        lambda m, d: _write(d, m),
        "symbolic link",
        setup=lambda t: (t.mkdir(), (t.parent / "elsewhere").mkdir(), (t / "sub").symlink_to(t.parent / "elsewhere")),
    ),
}


def _snapshot(wb: workbench.Workbench) -> tuple:
    return (
        wb.db.read_df("SELECT count(*) AS n FROM user_fields")["n"][0],
        wb.db.read_df("SELECT count(*) AS n FROM recipes")["n"][0],
        wb.db.read_df("SELECT count(*) AS n FROM edits")["n"][0],
    )


def _files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


@pytest.mark.parametrize("label", list(HOSTILE), ids=list(HOSTILE))
def test_hostile_archive_is_refused_by_dry_run_and_import_with_nothing_written(good_archive, tmp_path, label):
    build, message, setup = HOSTILE[label]
    bad = build(_members(good_archive), tmp_path / "bad.zip")
    restore = tmp_path / "restored"
    if setup is not None:
        setup(restore)
    before_files = _files_under(restore)
    wb = workbench.open(tmp_path / "home")
    before = _snapshot(wb)
    for dry_run in (True, False):
        with pytest.raises(ArchiveError) as info:
            wb.import_archive(bad, dry_run=dry_run, restore_to=restore)
        assert message in str(info.value), f"{label} (dry_run={dry_run}): {info.value}"
        assert len(str(info.value)) < 400
    assert _snapshot(wb) == before
    assert _files_under(restore) == before_files, "nothing restored, no staging folder left"
    assert main(["import", "--home", str(wb.home), str(bad), "--restore-to", str(restore)]) == 2


def test_dry_run_ok_means_the_import_goes_through_with_the_same_figures(good_archive, tmp_path):
    wb = workbench.open(tmp_path / "home")
    dry = wb.import_archive(good_archive, dry_run=True, restore_to=tmp_path / "r")
    assert not (tmp_path / "r").exists()
    real = wb.import_archive(good_archive, restore_to=tmp_path / "r")
    assert (dry.restored_files, dry.recipes) == (real.restored_files, real.recipes) == (3, 1)
    assert (
        real.matched == 2 and real.updated == 2 and not any(p.name.startswith(".") for p in (tmp_path / "r").iterdir())
    )
    assert wb.catalog.edit_log()["kind"].tolist() == ["import"], "one undoable edit"
    again = wb.import_archive(good_archive, dry_run=True, restore_to=tmp_path / "r")
    assert again.updated == 0 and again.matched == 2
    assert wb.catalog.undo(int(wb.catalog.edit_log()["id"][0]))
    assert wb.db.read_df("SELECT count(*) AS n FROM user_fields WHERE rating IS NOT NULL")["n"][0] == 0


def _catalog_only(wb: workbench.Workbench, n: int) -> list[int]:
    with wb.db.write() as con:
        con.execute(
            "INSERT INTO loras (path, origin, file_name, name, size_bytes) "
            "SELECT '', 'civitai', 'l' || i || '.safetensors', 'l' || i, 1000 + i FROM range(?) t(i)",
            [n],
        )
    return [int(i) for i in wb.db.read_df("SELECT id FROM loras ORDER BY id")["id"]]


@pytest.fixture(scope="module")
def big_archive(tmp_path_factory) -> Path:
    """5,000 entries with user fields (catalog-only entries: matched by file name + size)."""
    base = tmp_path_factory.mktemp("big")
    wb = workbench.open(base / "home")
    ids = _catalog_only(wb, 5000)
    wb.catalog.bulk_update(ids, rating=4, tags=["bulk", "import"], notes="from the archive")
    return wb.export(base / "big.zip")


def test_five_thousand_entries_import_in_one_short_transaction(big_archive, tmp_path, monkeypatch):
    wb = workbench.open(tmp_path / "home")
    _catalog_only(wb, 5000)
    writes = []
    real_write = Database.write
    monkeypatch.setattr(Database, "write", lambda self: writes.append(1) or real_write(self))
    report = wb.import_archive(big_archive)
    assert report.matched == 5000 and report.updated == 5000 and not report.unmatched
    assert len(writes) <= 2, f"{len(writes)} write transactions for 5,000 entries"
    rows = wb.db.read_df("SELECT rating, notes FROM user_fields")
    assert len(rows) == 5000 and rows["rating"].eq(4).all() and rows["notes"].eq("from the archive").all()


KILLED_IMPORT = r"""
import sys, workbench
wb = workbench.open(sys.argv[1])
print("start", flush=True)
for conflict in ("overwrite",) * 50:
    wb.import_archive(sys.argv[2], conflict=conflict)
"""


def test_sigkill_mid_import_leaves_all_or_nothing(big_archive, tmp_path):
    home = tmp_path / "home"
    wb = workbench.open(home)
    _catalog_only(wb, 5000)
    counts = []
    for delay in (0.3, 0.8, 1.5, 2.5, 4.0):
        with wb.db.write() as con:
            con.execute("DELETE FROM user_fields")
        proc = subprocess.Popen(
            [sys.executable, "-c", KILLED_IMPORT, str(home), str(big_archive)],
            stdout=subprocess.PIPE,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        try:
            assert proc.stdout.readline().strip() == b"start"
            time.sleep(delay)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        n = int(wb.db.read_df("SELECT count(*) AS n FROM user_fields")["n"][0])
        counts.append(n)
        assert n in (0, 5000), f"killed after {delay} s: {n} of 5,000 entries applied"
    print("entries applied when killed:", counts)
    assert wb.import_archive(big_archive).matched == 5000  # the catalog is consistent and usable afterwards
    assert int(wb.db.read_df("SELECT count(*) AS n FROM user_fields")["n"][0]) == 5000
