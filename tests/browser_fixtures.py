"""Fixtures that drive the real dashboard: a Voilà server and Debian's chromium through Playwright.

Import the fixtures into a test module (``from browser_fixtures import *``). There is one
Voilà server per test module (each page load costs 20-40 s on a small machine), started
exactly as ``workbench dashboard`` starts it, on a free port, and considered ready when
its port accepts a TCP connection (a GET / would start a kernel). A missing chromium
fails the tests; it is never skipped and never downloaded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from workbench.dashboard import DEFAULT_HOST, free_port, start_dashboard, stop_dashboard, wait_for_port

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"]
PAGE_TIMEOUT_MS = 180_000

#: console messages Voilà 0.5 prints on every page (see voila-testing.md, pitfall 7)
EXPECTED_CONSOLE_NOISE = (
    "Unsatisfied version",
    "setData is not a function",
    "Font Awesome",
    "fontawesome",
    "Failed to load resource",
    "favicon",
)


def build_demo_library(dest: Path) -> Path:
    """The demo library (with its hostile entries) built by the demo helper's script."""
    subprocess.run(
        [sys.executable, str(REPO / "data" / "make_demo_library.py"), str(dest), "--force"],
        check=True,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        timeout=600,
    )
    return dest


@dataclass
class Dashboard:
    """A running dashboard server and what it serves."""

    url: str
    home: Path
    library: Path
    process: subprocess.Popen
    started_at: float
    listening_after_s: float
    log_path: Path

    def server_log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]


@dataclass
class PageEvents:
    """What happened in the page: dialogs (alert/confirm/prompt) and console errors."""

    dialogs: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def unexpected_console_errors(self) -> list[str]:
        return [m for m in self.console_errors if not any(noise in m for noise in EXPECTED_CONSOLE_NOISE)]


@pytest.fixture(scope="module")
def demo_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_library(tmp_path_factory.mktemp("demo") / "demo-library")


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory, demo_library: Path) -> Iterator[Dashboard]:
    """``workbench dashboard --home <tmp> --library <demo> --port <free> --no-browser``, for one module."""
    home = tmp_path_factory.mktemp("dashboard-home")
    log_path = home / "voila.log"
    port = free_port()
    log = open(log_path, "wb")
    started = time.monotonic()
    process = start_dashboard(
        home, [demo_library], port=port, host=DEFAULT_HOST, open_browser=False, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        listening = wait_for_port(DEFAULT_HOST, port, timeout=120, process=process)
        yield Dashboard(f"http://{DEFAULT_HOST}:{port}/", home, demo_library, process, started, listening, log_path)
    finally:
        stop_dashboard(process)
        log.close()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Debian's chromium driven by Playwright (fails, never skips, when it is not installed)."""
    if not (Path(CHROMIUM).exists() and (shutil.which(CHROMIUM) or os.access(CHROMIUM, os.X_OK))):
        pytest.fail(
            f"chromium not found at {CHROMIUM}: apt-get install -y chromium (the browser comes from Debian, never from Playwright)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def open_page(browser: Any, events: PageEvents, width: int = 1500, height: int = 1000) -> Any:
    """A fresh page that records dialogs (and dismisses them) and console errors."""
    page = browser.new_page(viewport={"width": width, "height": height})
    page.set_default_timeout(PAGE_TIMEOUT_MS)

    def on_dialog(dialog: Any) -> None:
        events.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("console", lambda msg: events.console_errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: events.page_errors.append(str(exc)))
    return page


def save_screenshot(page: Any, name: str) -> Path:
    """Full screenshot under test-artifacts/ (Voilà's lab template scrolls inside #rendered_cells)."""
    ARTIFACTS.mkdir(exist_ok=True)
    height = page.evaluate(
        "() => Math.max(document.body.scrollHeight, (document.querySelector('#rendered_cells') || {}).scrollHeight || 0)"
    )
    page.set_viewport_size({"width": page.viewport_size["width"], "height": min(max(int(height), 800), 6000)})
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path
