"""Live pages without a browser: the change-stamp watcher and the views that follow it.

A second ``workbench.open`` on the same home stands in for another process (another visitor's
kernel, a notebook, a worker): it has its own catalog snapshot and writes through the file.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from lora_factory import write_kohya_lora

import workbench
from workbench.views import CatalogWatcher, catalog_watcher, stamp_signature
from workbench.views.detail import DetailWidget
from workbench.views.gallery import GalleryWidget
from workbench.views.history import HistoryWidget
from workbench.views.queue import QueueView
from workbench.views.status import StatusView


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lib = tmp_path_factory.mktemp("live") / "lib"
    for i in range(12):
        write_kohya_lora(lib / f"live_{i:02d}.safetensors", seed=i, metadata={"ss_output_name": f"Live {i:02d}"})
    return lib


def test_unchanged_stamp_calls_nobody_and_each_write_calls_everyone_once(wb: workbench.Workbench) -> None:
    watcher = CatalogWatcher(wb.db.stamp_path)
    calls: list[str] = []
    watcher.subscribe(lambda: calls.append("a"))
    watcher.subscribe(lambda: (_ for _ in ()).throw(RuntimeError("a broken view")))
    watcher.subscribe(lambda: calls.append("c"))
    assert watcher.check() is False and calls == []
    other = workbench.open(wb.home)
    lora_id = int(other.catalog.query(limit=1)["id"].iloc[0])
    other.catalog.update(lora_id, rating=3)
    assert watcher.check() is True
    assert calls == ["a", "c"], "a broken subscriber does not stop the others"
    assert watcher.check() is False and calls == ["a", "c"]


def test_signature_of_a_missing_stamp_is_none(tmp_path: Path) -> None:
    assert stamp_signature(tmp_path / "catalog.version") is None
    (tmp_path / "catalog.version").write_text("1")
    assert stamp_signature(tmp_path / "catalog.version") is not None


def test_views_show_changes_made_elsewhere(wb: workbench.Workbench) -> None:
    gallery = GalleryWidget(wb, page_size=10)
    target = gallery.first_rows[0]["id"]
    detail = DetailWidget(wb, lora_id=target)
    status = StatusView(wb)
    watcher = catalog_watcher(wb)
    assert not watcher.running, "outside a kernel's event loop nothing ticks unless asked"
    watcher.calm_factor = 0.0  # pacing is tested on its own below
    generation = gallery.generation

    other = workbench.open(wb.home)
    other.catalog.update(target, rating=4, favorite=True, tags=["from-elsewhere"])
    other.catalog.remove([gallery.first_rows[5]["id"]])
    assert watcher.check()

    card = next(r for r in gallery.first_rows if r["id"] == target)
    assert card["rating"] == 4 and card["favorite"] and "from-elsewhere" in card["tags"]
    assert gallery.generation > generation and gallery.total == 11
    assert detail.record["edit"]["rating"] == 4 and "from-elsewhere" in detail.record["edit"]["tags"]
    assert "<b>11</b> LoRAs" in status.value

    other.catalog.remove([target])
    assert watcher.check()
    assert detail.lora_id is None and detail.record == {}, "a LoRA removed elsewhere empties the open panel"


def test_closed_views_stop_following(wb: workbench.Workbench) -> None:
    gallery = GalleryWidget(wb, page_size=10)
    gallery.close()
    generation = gallery.generation
    other = workbench.open(wb.home)
    other.catalog.update(int(other.catalog.query(limit=1)["id"].iloc[0]), rating=2)
    catalog_watcher(wb).check()
    assert gallery.generation == generation


def test_queue_and_history_follow_the_catalog(wb: workbench.Workbench, monkeypatch: pytest.MonkeyPatch) -> None:
    queue = QueueView(wb)
    history = HistoryWidget(wb)
    reads: list[str] = []
    jobs, listing = wb.queue.jobs, wb.history.list
    monkeypatch.setattr(wb.queue, "jobs", lambda *a, **k: (reads.append("queue"), jobs(*a, **k))[1])
    monkeypatch.setattr(wb.history, "list", lambda *a, **k: (reads.append("history"), listing(*a, **k))[1])
    assert not catalog_watcher(wb).check() and reads == []
    workbench.open(wb.home).catalog.update(int(wb.catalog.query(limit=1)["id"].iloc[0]), rating=1)
    assert catalog_watcher(wb).check()
    assert sorted(reads) == ["history", "queue"]
    assert queue.header.value.startswith("<b>Queue</b>") and history.items == []


def test_on_a_running_event_loop_the_watcher_ticks_by_itself(wb: workbench.Workbench) -> None:
    """As in a kernel: created inside a running loop, it ticks on that loop (no thread)."""
    seen: list[str] = []

    async def scenario() -> None:
        watcher = CatalogWatcher(wb.db.stamp_path, interval=0.05)
        watcher.subscribe(lambda: seen.append(threading.current_thread().name))
        watcher.start()
        try:
            other = workbench.open(wb.home)
            lora_id = int(other.catalog.query(limit=1)["id"].iloc[0])
            await asyncio.get_running_loop().run_in_executor(None, lambda: other.catalog.update(lora_id, rating=5))
            for _ in range(200):  # up to 10 s on a loaded machine; normally one tick
                if seen:
                    break
                await asyncio.sleep(0.05)
        finally:
            watcher.stop()

    asyncio.run(scenario())
    assert seen == [threading.main_thread().name]


def test_explicit_start_without_a_loop_ticks_on_a_thread(wb: workbench.Workbench) -> None:
    watcher = CatalogWatcher(wb.db.stamp_path, interval=0.05)
    changed = threading.Event()
    watcher.subscribe(changed.set)
    watcher.start()
    try:
        workbench.open(wb.home).catalog.update(int(wb.catalog.query(limit=1)["id"].iloc[0]), rating=2)
        assert changed.wait(10)
    finally:
        watcher.stop()


def test_the_open_detail_rereads_its_record_only_when_its_row_changed(
    wb: workbench.Workbench, monkeypatch: pytest.MonkeyPatch
) -> None:
    gallery = GalleryWidget(wb, page_size=10)
    open_id, other_id = gallery.first_rows[0]["id"], gallery.first_rows[1]["id"]
    detail = DetailWidget(wb, lora_id=open_id)
    watcher = catalog_watcher(wb)
    watcher.calm_factor = 0.0
    elsewhere = workbench.open(wb.home)
    elsewhere.catalog.update(open_id, rating=1)
    watcher.check()
    reads: list[int] = []
    get = wb.catalog.get
    monkeypatch.setattr(wb.catalog, "get", lambda lora_id: (reads.append(lora_id), get(lora_id))[1])
    elsewhere.catalog.update(other_id, rating=5)
    assert watcher.check()
    assert reads == [], "another LoRA changed: the open record is not read again"
    elsewhere.catalog.update(open_id, notes="changed elsewhere")
    assert watcher.check()
    assert reads == [open_id] and detail.record["edit"]["notes"] == "changed elsewhere"


def test_after_a_slow_refresh_the_next_change_waits_as_long(wb: workbench.Workbench) -> None:
    """A worker committing progress every 2 s must not keep a kernel refreshing all the time."""
    now = [100.0]
    watcher = CatalogWatcher(wb.db.stamp_path)
    watcher.clock = lambda: now[0]
    calls: list[float] = []

    def slow_view() -> None:
        calls.append(now[0])
        now[0] += 3.0  # this refresh took 3 s

    watcher.subscribe(slow_view)
    elsewhere = workbench.open(wb.home)
    lora_id = int(elsewhere.catalog.query(limit=1)["id"].iloc[0])
    elsewhere.catalog.update(lora_id, rating=1)
    assert watcher.check() and calls == [100.0]
    elsewhere.catalog.update(lora_id, rating=2)
    now[0] += 2.9
    assert not watcher.check(), "still calm: 3 s of refreshing buys 3 s of rest"
    now[0] += 0.2
    assert watcher.check() and len(calls) == 2, "the change waited, it was not lost"
