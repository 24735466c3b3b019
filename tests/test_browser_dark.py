"""The dashboard follows JupyterLab's dark theme: served dark, and our widgets draw with the theme's colours."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_fixtures import (  # noqa: F401  (pytest fixtures)
    PAGE_TIMEOUT_MS,
    chromium,
    demo_library,
    save_screenshot,
)

from workbench.dashboard import DEFAULT_HOST, free_port, start_dashboard, stop_dashboard, wait_for_port

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def dark_dashboard(tmp_path_factory: pytest.TempPathFactory, demo_library: Path) -> Iterator[str]:  # noqa: F811
    """A dashboard started while JupyterLab's settings say "JupyterLab Dark" (theme ``auto``)."""
    settings = tmp_path_factory.mktemp("lab-settings")
    path = settings / "@jupyterlab" / "apputils-extension" / "themes.jupyterlab-settings"
    path.parent.mkdir(parents=True)
    path.write_text('{\n  // set in JupyterLab\n  "theme": "JupyterLab Dark"\n}\n')
    home = tmp_path_factory.mktemp("dark-home")
    port = free_port()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JUPYTERLAB_SETTINGS_DIR", str(settings))
        log = open(home / "voila.log", "wb")
        process = start_dashboard(home, [demo_library], port=port, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(DEFAULT_HOST, port, timeout=120, process=process)
        yield f"http://{DEFAULT_HOST}:{port}/"
    finally:
        stop_dashboard(process)
        log.close()


def _luminance(css_colour: str) -> float:
    parts = [float(x) for x in css_colour[css_colour.index("(") + 1 : css_colour.index(")")].split(",")[:3]]
    return (0.2126 * parts[0] + 0.7152 * parts[1] + 0.0722 * parts[2]) / 255


def test_dark_theme_reaches_our_widgets(chromium: Any, dark_dashboard: str) -> None:  # noqa: F811
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    try:
        page.goto(dark_dashboard)
        page.wait_for_selector(".wb-gallery .wb-card[data-id] .wb-name")
        assert page.evaluate("document.body.dataset.jpThemeLight") == "false"
        page.locator(".wb-gallery .wb-card[data-id]").first.click()
        page.wait_for_selector(".wb-detail .wb-dname")
        colours = page.evaluate(
            """() => ({
                text: getComputedStyle(document.querySelector('.wb-gallery .wb-name')).color,
                card: getComputedStyle(document.querySelector('.wb-gallery .wb-card')).backgroundColor,
                detail: getComputedStyle(document.querySelector('.wb-detail')).color,
            })"""
        )
        assert _luminance(colours["text"]) > 0.6 and _luminance(colours["detail"]) > 0.6, colours
        assert _luminance(colours["card"]) < 0.4, colours
        save_screenshot(page, "tab-library-dark.png")
    finally:
        page.close()
