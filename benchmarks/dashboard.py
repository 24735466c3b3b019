"""The dashboard as a service on a 50,000-LoRA catalog, measured in Debian's chromium.

    python benchmarks/dashboard.py [--n 50000] [--home /tmp/wb-bench-dashboard] [--visits 3]

The catalog is built as in ``benchmarks/gallery.py`` (rows inserted directly, 500 real previews).
Then ``workbench dashboard`` is started exactly as the CLI starts it (token, preheated pool of one),
and, as a raw baseline in the same run, a server of the same kind whose notebook shows a single
ipywidgets Label: the floor Voilà + chromium + a kernel cost on this machine. Printed:

  * server start -> first cards (first visitor right after start)           target <= 8 s
    and the same for the Label-only baseline server
  * visitor to a running server: page open -> first cards (median)           target <= 3 s
    and the same for the Label-only baseline (ratio = what the dashboard adds)
  * memory per idle visitor kernel: RSS and USS of the visitor's kernel      goal <= 120 MB
    (and of the baseline kernel)
  * a change made from Python -> visible on an open page                     target <= 2 s
  * a departed visitor (page gone without unload) -> kernel shut down        target <= 60 s
and, in this process (the views as a visitor's kernel runs them):
  * an idle watcher tick (one stat of the change stamp) against the cheapest catalog query
    (``count()`` on the in-memory snapshot), the query a tick avoids
  * one change elsewhere -> gallery, open detail and status refreshed, against a full reload of the
    catalog's snapshot (what every refresh paid before snapshots were updated row by row), and the
    row-by-row snapshot update alone
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import psutil  # noqa: E402

import workbench  # noqa: E402
from workbench.dashboard import free_port, start_dashboard, wait_for_port  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"]
TOKEN = "bench-token"
CARDS = ".wb-gallery .wb-card[data-id]"
BASELINE_NOTEBOOK = {
    "cells": [
        {
            "cell_type": "code",
            "execution_count": None,
            "metadata": {},
            "outputs": [],
            "source": "import ipywidgets\nipywidgets.Label('baseline', _dom_classes=['wb-baseline'])",
        }
    ],
    "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
    "nbformat": 4,
    "nbformat_minor": 5,
}


class Server:
    def __init__(self, home: Path, notebook: Path | None = None) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = home / f"bench-voila-{self.port}.log"
        self._log = open(self.log_path, "wb")
        self.started = time.monotonic()
        self.process = start_dashboard(
            home, [], port=self.port, token=TOKEN, notebook=notebook, stdout=self._log, stderr=subprocess.STDOUT
        )
        self.listening_s = wait_for_port("127.0.0.1", self.port, timeout=120, process=self.process)

    def cpu_s(self) -> float:
        """CPU seconds (user + system) of the server and every process it started, so far."""
        total = 0.0
        root = psutil.Process(self.process.pid)
        for process in [root, *root.children(recursive=True)]:
            try:
                total += sum(process.cpu_times()[:2])
            except psutil.Error:
                pass
        return total

    def kernels(self) -> list[psutil.Process]:
        return [c for c in psutil.Process(self.process.pid).children(recursive=True) if is_kernel(c)]

    def wait_pool_ready(self, timeout: float = 300) -> None:
        """Until the only kernel left is the preheated one and it has finished running the notebook (idle CPU)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            kernels = self.kernels()
            if len(kernels) == 1:
                try:
                    before = sum(kernels[0].cpu_times()[:2])
                    time.sleep(1.0)
                    if sum(kernels[0].cpu_times()[:2]) - before < 0.05:
                        return
                except psutil.NoSuchProcess:
                    pass
            else:
                time.sleep(0.5)
        raise TimeoutError("the preheated kernel never became idle")

    def kernel_process(self, kernel_id: str) -> psutil.Process:
        for child in self.kernels():
            if kernel_id in " ".join(child.cmdline()):
                return child
        raise LookupError(kernel_id)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()


def is_kernel(process: psutil.Process) -> bool:
    """A live ipykernel process (an exiting one, a zombie, is not)."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE and "ipykernel" in " ".join(process.cmdline())
    except psutil.Error:
        return False


def kernel_id(page: Any) -> str:
    return page.evaluate("() => JSON.parse(document.getElementById('jupyter-config-data').textContent).kernelId")


def visit(browser: Any, url: str, selector: str) -> tuple[Any, Any, float]:
    context = browser.new_context(viewport={"width": 1500, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(300_000)
    opened = time.monotonic()
    page.goto(url)
    page.wait_for_selector(selector)
    return context, page, time.monotonic() - opened


def memory_mb(process: psutil.Process) -> tuple[float, float]:
    info = process.memory_full_info()
    return info.rss / 2**20, info.uss / 2**20


def warm_visits(
    browser: Any, server: Server, selector: str, visits: int
) -> tuple[list[float], list[tuple[float, float]], list[float]]:
    times, memories, cpus = [], [], []
    for _ in range(visits):
        server.wait_pool_ready()
        context, page, seconds = visit(browser, f"{server.url}?token={TOKEN}", selector)
        times.append(seconds)
        kernel = server.kernel_process(kernel_id(page))
        cpus.append(sum(kernel.cpu_times()[:2]))  # the kernel's CPU from its start (preheating) to first cards
        page.wait_for_timeout(5000)  # idle: thumbnails delivered, nothing pending
        memories.append(memory_mb(kernel))
        page.close(run_before_unload=True)
        context.close()
    return times, memories, cpus


def kernel_side(home: Path, repeat: int = 5) -> dict[str, float]:
    """Watcher tick and live refresh costs, with their baselines, measured in this process."""
    from workbench.views import catalog_watcher
    from workbench.views.detail import DetailWidget
    from workbench.views.gallery import GalleryWidget
    from workbench.views.status import StatusView

    wb = workbench.open(home)
    gallery = GalleryWidget(wb)
    DetailWidget(wb, lora_id=gallery.first_rows[0]["id"])
    StatusView(wb)
    watcher = catalog_watcher(wb)
    watcher.calm_factor = 0.0  # measure the refresh itself, not the pause a kernel takes after a slow one
    started = time.perf_counter()
    for _ in range(2000):
        watcher.check()
    tick = (time.perf_counter() - started) / 2000
    started = time.perf_counter()
    for _ in range(20):
        wb.catalog.count()
    count = (time.perf_counter() - started) / 20
    elsewhere = workbench.open(home)
    refreshes, updates, reloads = [], [], []
    for i in range(repeat):
        elsewhere.catalog.update(gallery.first_rows[0]["id"], rating=(i + 1) % 5)
        started = time.perf_counter()
        watcher.check()
        refreshes.append(time.perf_counter() - started)
        elsewhere.catalog.update(gallery.first_rows[1]["id"], rating=(i + 1) % 5)
        started = time.perf_counter()
        wb.catalog.refresh()
        updates.append(time.perf_counter() - started)
        started = time.perf_counter()
        wb.catalog.refresh(force=True)
        reloads.append(time.perf_counter() - started)
        watcher.check()  # the views catch up outside the measurement
    return {
        "tick": tick,
        "count": count,
        "refresh": statistics.median(refreshes),
        "update": statistics.median(updates),
        "reload": statistics.median(reloads),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--home", type=Path, default=Path(tempfile.gettempdir()) / "wb-bench-dashboard")
    parser.add_argument("--visits", type=int, default=3)
    args = parser.parse_args(argv)

    from gallery import build_catalog
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise SystemExit(f"chromium not found at {CHROMIUM} (apt-get install -y chromium)")
    built = time.monotonic()
    wb = build_catalog(args.home, args.n)
    print(f"catalog: {wb.catalog.count():,} LoRAs in {args.home} (built in {time.monotonic() - built:.1f} s)")
    kernel = kernel_side(args.home)
    baseline_dir = args.home.parent / f"{args.home.name}-baseline"
    baseline_dir.mkdir(exist_ok=True)
    baseline_notebook = baseline_dir / "baseline.ipynb"
    baseline_notebook.write_text(json.dumps(BASELINE_NOTEBOOK))

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            # -- the dashboard -------------------------------------------------------------
            server = Server(args.home)
            try:
                context, page, _ = visit(browser, f"{server.url}?token={TOKEN}", CARDS)
                cold, listening = time.monotonic() - server.started, server.listening_s
                cold_cpu, cold_load = server.cpu_s(), psutil.getloadavg()[0]
                lora_id = int(page.locator(CARDS).nth(0).get_attribute("data-id"))
                changed = time.monotonic()
                workbench.open(args.home).catalog.update(lora_id, rating=5, favorite=True)
                page.locator(f"{CARDS}[data-id='{lora_id}'] .wb-fav.wb-on").wait_for(timeout=60_000)
                live = time.monotonic() - changed
                departed_kernel = kernel_id(page)
                process = server.kernel_process(departed_kernel)
                left = time.monotonic()
                page.close()  # no unload beacon: the culler has to notice
                context.close()
                process.wait(timeout=180)
                gone = time.monotonic() - left
                times, memories, cpus = warm_visits(browser, server, CARDS, args.visits)
            finally:
                server.stop()
            # -- the raw baseline: the same server with a one-Label notebook --------------------
            base = Server(baseline_dir, notebook=baseline_notebook)
            try:
                context, page, _ = visit(browser, f"{base.url}?token={TOKEN}", ".wb-baseline")
                base_cold, base_listening = time.monotonic() - base.started, base.listening_s
                base_cold_cpu = base.cpu_s()
                page.close(run_before_unload=True)
                context.close()
                base_times, base_memories, base_cpus = warm_visits(browser, base, ".wb-baseline", args.visits)
            finally:
                base.stop()
        finally:
            browser.close()

    warm, base_warm = statistics.median(times), statistics.median(base_times)
    rss, uss = statistics.median(m[0] for m in memories), statistics.median(m[1] for m in memories)
    base_rss, base_uss = statistics.median(m[0] for m in base_memories), statistics.median(m[1] for m in base_memories)
    print(f"\nDashboard on {args.n:,} LoRAs ({psutil.cpu_count()} CPUs, load {psutil.getloadavg()[0]:.1f})")
    print(
        f"  server start -> first cards (first visitor)    {cold:6.1f} s   target <= 8 s   (listening after {listening:.1f} s; "
        f"server + kernels used {cold_cpu:.1f} s CPU; load {cold_load:.1f})"
    )
    print(
        f"    baseline, one-Label notebook, same server      {base_cold:6.1f} s   ratio {cold / base_cold:.2f}   "
        f"(listening after {base_listening:.1f} s; {base_cold_cpu:.1f} s CPU)"
    )
    print(
        f"  visitor to a running server -> first cards     {warm:6.1f} s   target <= 3 s   "
        f"(runs: {', '.join(f'{t:.1f}' for t in times)})"
    )
    print(f"    baseline, one-Label notebook, same server      {base_warm:6.1f} s   ratio {warm / base_warm:.2f}")
    print(
        f"    visitor kernel CPU, start to first cards      {statistics.median(cpus):6.1f} s   "
        f"(baseline kernel {statistics.median(base_cpus):.1f} s)"
    )
    print(f"  idle visitor kernel memory RSS / USS        {rss:6.0f} / {uss:.0f} MB   goal <= 120 MB")
    print(f"    baseline kernel RSS / USS                 {base_rss:6.0f} / {base_uss:.0f} MB")
    print(f"  change from Python -> visible on a page        {live:6.2f} s   target <= 2 s")
    print(f"  visitor gone (no unload) -> kernel ended       {gone:6.1f} s   target <= 60 s")
    print("In a visitor's kernel")
    print(
        f"  idle watcher tick (one stat)                {kernel['tick'] * 1e6:7.1f} us   baseline catalog.count() "
        f"{kernel['count'] * 1e3:.2f} ms   ratio {kernel['tick'] / kernel['count']:.4f}"
    )
    print(
        f"  one change -> gallery, detail, status fresh  {kernel['refresh'] * 1e3:7.0f} ms   baseline full snapshot "
        f"reload {kernel['reload'] * 1e3:.0f} ms   ratio {kernel['refresh'] / kernel['reload']:.2f}"
    )
    print(f"    of which the row-by-row snapshot update     {kernel['update'] * 1e3:7.0f} ms")


if __name__ == "__main__":
    main()
