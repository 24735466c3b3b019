"""The weights of an open card in the real dashboard (Voilà + Debian chromium): "Analyse weights" in the Library's
detail column reads the tensors (a kernel thread: this dashboard has no shared worker), then the block heatmap
(plotly), the effective rank and "similar by weights" with cosines appear. Screenshot:
``test-artifacts/library-weights.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from browser_fixtures import (  # noqa: F401  (pytest fixtures)
    PageEvents,
    chromium,
    dashboard,
    demo_library,
    open_page,
    save_screenshot,
)

import workbench

pytestmark = pytest.mark.browser


def test_open_card_analyse_weights_and_see_heatmap_rank_and_similar(chromium: Any, dashboard: Any) -> None:  # noqa: F811
    events = PageEvents()
    page = open_page(chromium, events, width=1500, height=1100)
    page.goto(dashboard.url)
    page.wait_for_selector(".wb-gallery .wb-card[data-id] .wb-name")
    # a card of the first page whose family has other LoRAs; those are analysed beforehand (by the core), the
    # opened one from the page
    wb = workbench.open(dashboard.home)
    frame = wb.catalog.query(limit=None)
    frame = frame[frame["path"].str.endswith(".safetensors") & frame["error"].isna() & ~frame["missing"]]
    shown = [
        int(i) for i in page.locator(".wb-gallery .wb-card[data-id]").evaluate_all("cs => cs.map(c => c.dataset.id)")
    ]
    peers = frame[frame["base_model"] == "SD1"]
    target = next(i for i in shown if i in set(peers["id"]))
    wb.weights.analyze([int(i) for i in peers["id"] if int(i) != target], progress=False)
    assert wb.weights.get(target) is None

    page.locator(f'.wb-gallery .wb-card[data-id="{target}"]').click()
    panel = page.locator(".wb-library .wb-weights")
    panel.get_by_text("Not analysed yet").wait_for()
    panel.get_by_role("button", name="Analyse weights").click()
    panel.locator(".js-plotly-plot").wait_for()
    panel.get_by_text("nominal rank").wait_for()
    panel.get_by_text("Similar by weights").wait_for()
    panel.locator("table td").first.wait_for()
    text = panel.inner_text()
    assert "median" in text and "cosine of ΔW" in text and "file(s) analysed" in text
    assert panel.get_by_role("button", name="Analyse again").is_visible()
    assert wb.weights.get(target)["ok"]
    panel.scroll_into_view_if_needed()
    path = save_screenshot(page, "library-weights.png")
    assert Path(path).stat().st_size > 10_000
    assert not events.dialogs and not events.page_errors, (events.dialogs, events.page_errors)  # names are text
    assert not events.unexpected_console_errors(), events.unexpected_console_errors()
    page.close()
