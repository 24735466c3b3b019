"""Lock discipline: big edits are a constant number of statements in one short transaction, an edit planned
outside the lock never overwrites a concurrent change, a waiting writer goes before later readers, and a
caller that gives up waiting never leaves the lock taken."""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from pathlib import Path

import pytest

import workbench
from workbench.catalog import Catalog, CatalogBusyError, Database


def _catalog_with(wb: workbench.Workbench, n: int) -> list[int]:
    with wb.db.write() as con:
        con.execute(
            "INSERT INTO loras (path, origin, file_name, name, size_bytes, file_tags) "
            "SELECT '', 'civitai', 'l' || i || '.safetensors', 'l' || i, i, ['file'] FROM range(?) t(i)",
            [n],
        )
    return [int(i) for i in wb.db.read_df("SELECT id FROM loras ORDER BY id")["id"]]


class _Counting:
    """Wraps a connection: counts the statements run inside one write transaction."""

    def __init__(self, con, counts: list[int]) -> None:
        self._con, self._counts = con, counts

    def execute(self, *args, **kwargs):
        self._counts[-1] += 1
        return self._con.execute(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._con, name)


@pytest.fixture
def statements(monkeypatch) -> list[int]:
    counts: list[int] = []
    real_write = Database.write

    @contextlib.contextmanager
    def write(self):
        counts.append(0)
        with real_write(self) as con:
            yield _Counting(con, counts)

    monkeypatch.setattr(Database, "write", write)
    return counts


def test_edits_of_5000_ids_are_a_few_statements_in_one_transaction(tmp_path, statements):
    wb = workbench.open(tmp_path / "home")
    ids = _catalog_with(wb, 5000)
    for edit in (
        lambda: wb.catalog.bulk_update(ids, rating=4, notes="n"),
        lambda: wb.catalog.add_tags(ids, ["x", "y"]),
        lambda: wb.catalog.remove_tags(ids, ["file"]),
        lambda: wb.catalog.undo(),
        lambda: wb.catalog.undo(),
        lambda: wb.catalog.remove(ids[:2500]),
    ):
        statements.clear()
        edit()
        assert len(statements) == 1 and statements[0] <= 6, f"{statements} statements for 5,000 ids"
    rows = wb.db.read_df("SELECT rating, tags, removed FROM user_fields ORDER BY lora_id")
    assert len(rows) == 5000 and rows["rating"].eq(4).all() and rows["removed"].sum() == 2500
    effective = wb.db.read_df("SELECT tags FROM lora_view WHERE id = ?", [ids[-1]])["tags"][0]
    assert list(effective) == ["file"], "the add_tags and remove_tags were undone, in that order"


def test_an_edit_planned_outside_the_lock_never_overwrites_a_concurrent_change(tmp_path, monkeypatch):
    wb = workbench.open(tmp_path / "home")
    ids = _catalog_with(wb, 500)
    other = workbench.open(tmp_path / "home")  # another kernel
    real_plan, real_write = Catalog._plan_edit, wb.db.write
    calls = []

    def counted_plan(self, *args, **kwargs):
        calls.append(1)
        return real_plan(self, *args, **kwargs)

    def race_then_write():
        if len(calls) == 1:  # planned once; before its write, someone tags one of the ids
            other.catalog.add_tags([ids[7]], ["theirs"])
        return real_write()

    monkeypatch.setattr(Catalog, "_plan_edit", counted_plan)
    monkeypatch.setattr(wb.db, "write", race_then_write)
    wb.catalog.add_tags(ids, ["mine"])
    assert len(calls) >= 2, "the stale plan was computed again"
    tags = wb.db.read_df("SELECT tags FROM user_fields WHERE lora_id = ?", [ids[7]])["tags"][0]
    assert set(tags) == {"file", "theirs", "mine"}


def _turnstile_taken(db: Database) -> bool:
    fd = os.open(db.turnstile_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def test_a_waiting_writer_goes_before_readers_that_come_later(tmp_path: Path):
    path = tmp_path / "catalog.duckdb"
    first_reader, writer, late_reader = Database(path, 30), Database(path, 30), Database(path, 30)
    order: list[str] = []

    def take(db: Database, exclusive: bool, name: str) -> None:
        with db._catalog_lock(exclusive):
            order.append(name)

    with first_reader._catalog_lock(False):
        w = threading.Thread(target=take, args=(writer, True, "writer"))
        w.start()
        deadline = time.monotonic() + 20
        while not _turnstile_taken(first_reader) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _turnstile_taken(first_reader), "the writer queued at the turnstile"
        r = threading.Thread(target=take, args=(late_reader, False, "late reader"))
        r.start()
        r.join(0.5)
        assert order == [], "neither the writer nor the late reader got in while the first read lasted"
    w.join(20)
    r.join(20)
    assert order == ["writer", "late reader"]


def test_a_caller_that_gives_up_waiting_leaves_no_lock_behind(tmp_path: Path):
    path = tmp_path / "catalog.duckdb"
    holder, impatient, later = Database(path, 30), Database(path, 0.3), Database(path, 5)
    with holder._catalog_lock(True):
        with pytest.raises(CatalogBusyError, match="stayed locked"):
            with impatient._catalog_lock(True):
                pass
    with later.write() as con:  # the abandoned waiter released what it got after giving up
        con.execute("CREATE TABLE t AS SELECT 1 AS x")
    assert later.read_df("SELECT x FROM t")["x"][0] == 1
