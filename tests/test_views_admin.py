"""Analytics, Status and Maintenance tabs built and driven in Python, their core functions, and backups.

No shared worker here (tests/test_shared_worker.py runs the worker's tasks); the catalog is real,
jobs and usage events are the rows a queue writes.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import uuid
import zipfile
from pathlib import Path

import pytest

import workbench
from workbench import analytics
from workbench.catalog import BackupError, restore_backup
from workbench.generate import write_tiny_loras
from workbench.system import system_status
from workbench.views.analytics import AnalyticsView
from workbench.views.library import dashboard_tabs
from workbench.views.maintenance import MaintenanceView
from workbench.views.system import SystemView, render_status

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"


@pytest.fixture()
def wb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> workbench.Workbench:
    monkeypatch.delenv("WORKBENCH_REDIS", raising=False)
    monkeypatch.delenv("WORKBENCH_BACKEND", raising=False)
    library = tmp_path / "lib <b>x</b>"
    write_tiny_loras(library)
    shutil.copy(library / "tiny_watercolor.safetensors", library / "watercolor_copy.safetensors")
    bench = workbench.open(tmp_path / "home")
    bench.scan([library], progress=False, workers=1)
    return bench


def _add_job(
    wb: workbench.Workbench, state: str, error: str | None = None, seconds: float = 2.0, lora: int | None = None
) -> str:
    job_id = uuid.uuid4().hex
    now = dt.datetime.now()
    params = json.dumps({"request": {"prompt": "p"}, "backend_options": {}})
    with wb.db.write() as con:
        con.execute(
            "INSERT INTO jobs (id, backend, params, state, error, created_at, started_at, finished_at) "
            "VALUES (?, 'diffusers', ?, ?, ?, ?, ?, ?)",
            [job_id, params, state, error, now, now - dt.timedelta(seconds=seconds), now],
        )
        if lora is not None:
            con.execute(
                "INSERT INTO usage_events (lora_id, kind, job_id, weight) VALUES (?, 'generate', ?, 1.0)",
                [lora, job_id],
            )
    return job_id


def _ids(wb: workbench.Workbench) -> dict[str, int]:
    frame = wb.catalog.query()
    return {str(n): int(i) for n, i in zip(frame["file_name"], frame["id"])}


def test_job_analytics_rates_durations_errors_and_unused(wb: workbench.Workbench) -> None:
    ids = _ids(wb)
    used = ids["tiny_watercolor.safetensors"]
    for seconds in (1.0, 3.0):
        _add_job(wb, "succeeded", seconds=seconds, lora=used)
    _add_job(wb, "failed", "worker: the worker process 123 was killed by SIGKILL mid-job; a new worker was started")
    _add_job(wb, "failed", "worker: the worker process 456 was killed by SIGKILL mid-job; a new worker was started")
    _add_job(wb, "failed", "LoRA 'x' not found")
    _add_job(wb, "cancelled", "cancelled before it started")

    outcomes = analytics.job_outcomes(wb, days=7)
    assert dict(zip(outcomes["state"], outcomes["jobs"])) == {"succeeded": 2, "failed": 3, "cancelled": 1}
    assert outcomes["success_rate"].iloc[0] == pytest.approx(2 / 5)
    summary = analytics.job_stats(wb, days=7)
    assert (
        summary["total"] == 6
        and summary["by_state"] == {"succeeded": 2, "failed": 3, "cancelled": 1}
        and summary["success_rate"] == pytest.approx(0.4)  # cancelled is neither success nor failure
        and summary["median_seconds"] == pytest.approx(2.0)
        and summary["p90_seconds"] == pytest.approx(2.8)
    )
    errors = analytics.error_breakdown(wb, days=7)
    assert list(errors["jobs"]) == [2, 1]  # two kills differing only by pid are one kind of error
    assert "killed by SIGKILL" in errors["error"][0] and "123" not in errors["error"][0]
    durations = analytics.job_durations(wb, days=7)
    assert sorted(durations.loc[durations["state"] == "succeeded", "seconds"]) == pytest.approx([1.0, 3.0])
    unused = analytics.unused_loras(wb)
    assert used not in set(unused["id"]) and len(unused) == len(ids) - 1
    usage = analytics.usage_over_time(wb, days=7)
    assert int(usage["uses"].sum()) == 2 and int(usage["loras"].iloc[0]) == 1
    with pytest.raises(ValueError):
        analytics.usage_over_time(wb, freq="hourly")


def test_analytics_view_builds_figures_and_escapes_names(wb: workbench.Workbench) -> None:
    root = wb.roots[0]
    shutil.copy(root / "tiny_pixelart.safetensors", root / f"{IMG}.safetensors")
    wb.scan(progress=False, workers=1)
    _add_job(wb, "succeeded", lora=_ids(wb)["tiny_watercolor.safetensors"])
    _add_job(wb, "failed", "Redis at redis://x unavailable: refused")
    view = AnalyticsView(wb)
    assert set(view.figures) == {"composition", "usage", "outcomes", "durations", "errors"}
    states = {trace.name for trace in view.figures["outcomes"].data}
    assert states == {"succeeded", "failed"}
    assert "unavailable" in view.figures["errors"].data[0].y[0]
    (shown,) = view.charts.children[1].children[0].outputs  # what the page renders: plotly's JSON, no script of ours
    assert {t["name"] for t in shown["data"]["application/vnd.plotly.v1+json"]["data"]} == states
    assert IMG not in view.unused.value and "&lt;img src=x" in view.unused.value
    view.period.value = 7  # changing the period recomputes
    assert "in 7 days" in view.headline.value and view.message.value == ""
    empty = AnalyticsView(workbench.open(Path(wb.home).parent / "empty-home"))
    assert empty.figures["outcomes"].layout.annotations[0].text == "no jobs in this period"


def test_status_without_worker_reports_disk_coverage_and_unreachable_backend(
    wb: workbench.Workbench, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKBENCH_BACKEND", "diffusers,a1111:http://127.0.0.1:9")
    wb.hash(progress=False)
    status = system_status(wb)
    assert [d["path"] for d in status["disk"]] == [str(wb.home), *[str(r) for r in wb.roots]]
    assert all(d["free"] and d["total"] for d in status["disk"])
    cat = status["catalog"]
    assert cat["hashed"] == cat["local_files"] > 0 and cat["hashed_fraction"] == 1.0 and cat["embedded"] == 0
    assert cat["catalog_bytes"] > 0
    assert status["worker"]["available"] is False and status["gpus"] == []
    assert system_status(wb)["catalog"] == cat  # nothing written: the cached facts are served
    wb.catalog.remove([int(wb.catalog.query()["id"][0])])
    assert system_status(wb)["catalog"]["loras"] == cat["loras"] - 1  # a write moves the stamp: re-read
    diffusers, a1111 = status["backends"]
    assert diffusers["ok"] and "own process" in diffusers["detail"]
    assert a1111["ok"] is False and a1111["detail"]
    view = SystemView(wb, interval=0)
    text = view.body.value
    assert "no shared worker" in text and "hashed: " in text and "(100%)" in text
    assert "<b>x</b>" not in text and "lib &lt;b&gt;x&lt;/b&gt;" in text  # a root's name is escaped
    hostile = render_status({"gpus": [{"name": SCRIPT, "memory_total": 8, "memory_free": 4, "host": SCRIPT}]})
    assert SCRIPT not in hostile


def test_maintenance_duplicates_remove_and_undo(wb: workbench.Workbench) -> None:
    view = MaintenanceView(wb, interval=0)
    assert all(b.disabled for b in view.task_buttons.values())  # no shared worker: no task buttons
    assert set(view.task_buttons) == {"scan", "hash", "embed", "weights"}
    # tensor_hash groups are identical tensor bytes, not "similar weights" (those are the Weights tab's)
    assert dict(view.dup_by.options) == {"same file (SHA256)": "sha256", "same tensor bytes": "tensor_hash"}
    wb.hash(progress=False)
    view.find_duplicates()
    assert len(view.dup_list.options) == 2
    before = wb.catalog.count()
    view.dup_list.value = (view.dup_list.options[1][1],)
    assert not view.dup_remove.disabled
    view.remove_selected()
    assert wb.catalog.count() == before - 1 and view.dup_list.options == ()
    view.undo_remove()
    assert wb.catalog.count() == before and len(view.dup_list.options) == 2


def test_maintenance_export_download_and_import_with_dry_run(wb: workbench.Workbench, tmp_path: Path) -> None:
    lora = _ids(wb)["tiny_watercolor.safetensors"]
    wb.catalog.update(lora, rating=5, notes="keeper")
    view = MaintenanceView(wb, interval=0)
    sent: list[tuple[dict, list]] = []
    view.download.send = lambda content, buffers=None: sent.append((content, buffers))  # type: ignore[method-assign]
    view.export_archive()
    ((message, buffers),) = sent
    assert message["kind"] == "file" and message["name"].endswith(".zip")
    archive = bytes(buffers[0])
    assert zipfile.ZipFile(__import__("io").BytesIO(archive)).testzip() is None

    other = workbench.open(tmp_path / "other-home")
    other.scan(wb.roots, progress=False, workers=1)
    target = MaintenanceView(other, interval=0)
    target.upload.value = (
        {
            "name": "x.zip",
            "type": "application/zip",
            "size": 3,
            "content": memoryview(b"not a zip"),
            "last_modified": dt.datetime.now(),
        },
    )
    assert "Refused" in target.import_preview.value and target.import_button.disabled
    target.upload.value = (
        {
            "name": SCRIPT,
            "type": "application/zip",
            "size": len(archive),
            "content": memoryview(archive),
            "last_modified": dt.datetime.now(),
        },
    )
    assert "Dry run" in target.import_preview.value and "would update" in target.import_preview.value
    assert SCRIPT not in target.import_preview.value
    other_id = _ids(other)["tiny_watercolor.safetensors"]
    assert other.catalog.get(other_id)["rating"] in (None, 0)  # the dry run changed nothing
    target.apply_import()
    assert other.catalog.get(other_id)["rating"] == 5 and "Imported" in target.import_preview.value
    assert list((other.home / "run" / "uploads").iterdir()) == []


def test_backup_rotation_contents_and_restore(wb: workbench.Workbench, tmp_path: Path) -> None:
    lora = _ids(wb)["tiny_watercolor.safetensors"]
    _add_job(wb, "succeeded", lora=lora)
    with wb.db.write() as con:
        con.execute(
            "INSERT INTO feedback (query, query_kind, lora_id, value) VALUES ('watercolor', 'prompt', ?, 1)", [lora]
        )
    image = wb.home / "outputs" / "2026-01-01" / "a.png"
    image.parent.mkdir(parents=True)
    image.write_bytes(b"\x89PNG fake image bytes")
    view = MaintenanceView(wb, interval=0)
    view.keep.value = 2
    first = view.backup()
    view.backup()
    third = view.backup()
    backups = wb.backups()
    assert [b.path for b in backups] == sorted((wb.home / "backups").glob("backup-*.zip"), reverse=True)
    assert len(backups) == 2 and first.path not in [b.path for b in backups] and backups[0].path == third.path
    assert third.counts["jobs"] == 1 and third.counts["feedback"] == 1 and third.counts["usage_events"] == 1
    assert third.path.name in view.backup_list.value
    with zipfile.ZipFile(third.path) as zf:
        assert "outputs/2026-01-01/a.png" in zf.namelist()

    restored = workbench.open(restore_backup(third.path, tmp_path / "restored"))
    assert restored.db.read_df("SELECT count(*) AS n FROM feedback")["n"][0] == 1
    assert (restored.home / "outputs" / "2026-01-01" / "a.png").read_bytes() == image.read_bytes()
    assert restored.catalog.count() == wb.catalog.count()

    with pytest.raises(BackupError, match="keep"):
        wb.backup(keep=0)
    with pytest.raises(BackupError, match="already has a catalog"):
        restore_backup(third.path, wb.home)
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("manifest.json", "{}")
        zf.writestr("catalog.duckdb", "x")
        zf.writestr("outputs/../../escape.txt", "x")
    with pytest.raises(BackupError, match="unexpected member"):
        restore_backup(evil, tmp_path / "evil-home")
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "evil-home" / "catalog.duckdb").exists()
    with pytest.raises(BackupError, match="not a readable backup"):
        restore_backup(image, tmp_path / "png-home")


def test_dashboard_has_the_new_tabs(wb: workbench.Workbench) -> None:
    tabs = dashboard_tabs(wb)
    titles = [tabs.get_title(i) for i in range(len(tabs.children))]
    assert titles[-3:] == ["Analytics", "Status", "Maintenance"]


def test_backup_command_rotates_and_refuses_bad_keep(
    wb: workbench.Workbench, capsys: pytest.CaptureFixture[str]
) -> None:
    from workbench import cli

    for _ in range(3):
        assert cli.main(["backup", "--home", str(wb.home), "--keep", "2"]) == 0
    assert "backup written to" in capsys.readouterr().out
    assert len(list((wb.home / "backups").glob("backup-*.zip"))) == 2
    assert cli.main(["backup", "--home", str(wb.home), "--keep", "0"]) == 2
    assert "at least 1" in capsys.readouterr().err
