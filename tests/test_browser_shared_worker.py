"""The dashboard with its shared worker in headless chromium: the Status, Analytics and Maintenance tabs, a
rescan/hash task run by the worker with its progress in the page, a recommendation whose prompt is
embedded by the worker, and visitor kernels that never loaded torch (checked in the kernel process's
memory maps). Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from browser_fixtures import (  # noqa: F401  (pytest fixtures)
    Dashboard,
    PageEvents,
    chromium,
    demo_library,
    open_page,
    save_screenshot,
)

import workbench
from workbench.dashboard import DEFAULT_HOST, SharedWorker, free_port, start_dashboard, stop_dashboard, wait_for_port

pytestmark = pytest.mark.browser
TINY_CACHE = Path(tempfile.gettempdir()) / "workbench-test-tiny-cache"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, demo_library: Path) -> Iterator[tuple[Dashboard, SharedWorker]]:  # noqa: F811
    home = tmp_path_factory.mktemp("shared-dashboard-home")
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # the worker inherits it: no thread oversubscription on CI
    worker = SharedWorker(home, [demo_library], cache_dir=TINY_CACHE).start()
    log_path = home / "voila.log"
    log = open(log_path, "wb")
    port = free_port()
    started = time.monotonic()
    process = start_dashboard(
        home, [demo_library], port=port, redis_url=worker.redis_url, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        listening = wait_for_port(DEFAULT_HOST, port, timeout=120, process=process)
        url = f"http://{DEFAULT_HOST}:{port}/"
        yield Dashboard(url, home, demo_library, process, started, listening, log_path), worker
    finally:
        stop_dashboard(process)
        log.close()
        worker.stop()


def _kernels(voila: subprocess.Popen) -> list[psutil.Process]:
    return [p for p in psutil.Process(voila.pid).children(recursive=True) if "ipykernel" in " ".join(p.cmdline())]


def test_new_tabs_worker_tasks_and_torch_free_kernels(chromium: Any, served: Any) -> None:  # noqa: F811
    dashboard, worker = served
    events = PageEvents()
    page = open_page(chromium, events)
    try:
        page.goto(dashboard.url)
        page.wait_for_selector(".wb-gallery .wb-card[data-id]")

        page.get_by_role("tab", name="Status").click()
        status = page.locator(".wb-status-tab")
        status.get_by_text("pipelines loaded: 1").wait_for()  # the worker answered, its pipeline is in memory
        assert "Disk" in status.inner_text() and str(dashboard.library) in status.inner_text()
        save_screenshot(page, "shared-worker-status.png")

        page.get_by_role("tab", name="Analytics").click()
        page.wait_for_selector(".wb-analytics .js-plotly-plot")
        assert page.locator(".wb-analytics .js-plotly-plot").count() == 5
        save_screenshot(page, "shared-worker-analytics.png")

        page.get_by_role("tab", name="Maintenance").click()
        maintenance = page.locator(".wb-maintenance")
        maintenance.get_by_role("button", name="Hash files").click()
        maintenance.get_by_text("file(s) hashed").wait_for()  # the worker's summary, shown by the polling tab
        assert "finished" in maintenance.inner_text()
        with page.expect_download() as download_info:
            maintenance.get_by_role("button", name="Export catalog (zip)").click()
        saved = Path(download_info.value.path())
        with zipfile.ZipFile(saved) as archive:  # the archive made by wb.export, delivered to the browser
            assert archive.testzip() is None and "manifest.json" in archive.namelist()
        maintenance.get_by_role("button", name="Back up now").click()
        maintenance.get_by_text("Backup written").wait_for()
        save_screenshot(page, "shared-worker-maintenance.png")
        wb = workbench.open(dashboard.home)
        assert (
            wb.db.read_df(
                "SELECT count(*) AS n FROM lora_view WHERE sha256 IS NULL AND path <> '' AND NOT missing AND error IS NULL"
            )["n"][0]
            == 0
        )

        page.get_by_role("tab", name="Recommend").click()
        recommend = page.locator(".wb-recommend")
        recommend.locator("textarea").first.fill("watercolor landscape painting")
        recommend.get_by_role("button", name="Recommend").click()
        page.wait_for_selector(".wb-recommend .wb-rec-row")
        save_screenshot(page, "shared-worker-recommend.png")
        assert wb.db.read_df("SELECT count(*) AS n FROM embeddings")["n"][0] > 0  # vectors made by the worker

        kernels = _kernels(dashboard.process)
        assert kernels, "no visitor kernel found under the Voilà server"
        for kernel in kernels:
            mapped = Path(f"/proc/{kernel.pid}/maps").read_text()
            assert "libtorch" not in mapped, f"kernel {kernel.pid} loaded torch"
        assert events.page_errors == []
    finally:
        page.close()
