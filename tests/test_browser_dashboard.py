"""The published dashboard in headless chromium: one Voilà server and one page load for the module.

The tests run in file order on the same page (a page load costs 20-40 s here): load,
filter, search, open a card, edit tags, bulk-tag and undo, hostile strings, and what the
server refuses to serve. Each edit made in the browser is read back from Python.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from types import SimpleNamespace
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

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def session(chromium: Any, dashboard: Any) -> Any:  # noqa: F811
    events = PageEvents()
    page = open_page(chromium, events)
    opened = time.monotonic()
    page.goto(dashboard.url)
    page.wait_for_selector(".wb-gallery .wb-card[data-id]")
    now = time.monotonic()
    state = SimpleNamespace(
        page=page, events=events, page_to_cards_s=now - opened, start_to_cards_s=now - dashboard.started_at
    )
    print(
        f"\ndashboard: listening after {dashboard.listening_after_s:.1f} s, page open -> first cards "
        f"{state.page_to_cards_s:.1f} s, process start -> first cards {state.start_to_cards_s:.1f} s"
    )
    yield state
    try:
        save_screenshot(page, "dashboard.png")
    finally:
        page.close()


def catalog(dashboard: Any) -> Any:  # noqa: F811
    return workbench.open(dashboard.home).catalog


def count_text(page: Any) -> str:
    return page.locator(".wb-gallery .wb-count").inner_text()


def wait_count(page: Any, expected: int) -> None:
    label = f"{expected:,} LoRA{'' if expected == 1 else 's'}"
    page.wait_for_function("label => document.querySelector('.wb-gallery .wb-count').textContent === label", arg=label)


def clear_filters(page: Any, total: int) -> None:
    page.locator(".wb-gallery .wb-clear").click()
    wait_count(page, total)


def test_dashboard_loads_with_library_tab_and_no_sources(session: Any, dashboard: Any) -> None:  # noqa: F811
    page = session.page
    total = catalog(dashboard).count()
    assert total >= 50, "the demo library was scanned when the dashboard started"
    assert catalog(dashboard).query()["path"].is_unique, "scanned once, not once per kernel"
    wait_count(page, total)
    assert page.get_by_role("tab", name="Library").count() == 1
    content = page.content()
    assert "dashboard_tabs(wb)" not in content and "library_roots_from_env" not in content, "sources are stripped"
    cards = page.locator(".wb-gallery .wb-card[data-id]")
    assert 0 < cards.count() < total, "only the visible window of cards is in the DOM"
    page.wait_for_selector(".wb-gallery .wb-thumb img")  # thumbnails arrive lazily over the widget channel


def test_base_model_filter_narrows_the_grid(session: Any, dashboard: Any) -> None:  # noqa: F811
    page = session.page
    cat = catalog(dashboard)
    total, sdxl = cat.count(), cat.count(base_models=["SDXL"])
    assert 0 < sdxl < total
    page.locator(".wb-gallery .wb-filters-toggle").click()
    page.locator(".wb-gallery .wb-filter-base input[value='SDXL']").check()  # checkboxes: no Ctrl-click
    wait_count(page, sdxl)
    page.wait_for_function(
        "() => { const b = [...document.querySelectorAll('.wb-gallery .wb-card[data-id] .wb-base')];"
        " return b.length > 0 && b.every(x => x.textContent.startsWith('SDXL')); }"
    )
    clear_filters(page, total)


def test_search_box_runs_the_catalog_search(session: Any, dashboard: Any) -> None:  # noqa: F811
    page = session.page
    cat = catalog(dashboard)
    expected = cat.count(text="kitsune")
    assert 0 < expected < cat.count()
    page.locator(".wb-gallery .wb-search").fill("kitsune")
    wait_count(page, expected)
    names = page.locator(".wb-gallery .wb-card[data-id] .wb-name").all_inner_texts()
    wanted = set(cat.query(text="kitsune")["name"])
    assert names and set(names) <= wanted
    page.locator(".wb-gallery .wb-search").fill("")
    wait_count(page, cat.count())


def test_card_opens_detail_and_tag_edit_reaches_the_catalog(session: Any, dashboard: Any) -> None:  # noqa: F811
    page = session.page
    card = page.locator(".wb-gallery .wb-card[data-id]").nth(1)
    lora_id = int(card.get_attribute("data-id"))
    name = card.locator(".wb-name").inner_text()
    card.click()
    page.wait_for_function(
        "name => { const h = document.querySelector('.wb-detail .wb-dname'); return h && h.textContent === name; }",
        arg=name,
    )
    sources = page.locator(".wb-detail .wb-fields tbody tr td:nth-child(3)").all_inner_texts()
    assert "header" in sources and "file" in sources, "each field says where it came from"
    tags = page.locator(".wb-detail .wb-edit-tags")
    tags.fill(f"{tags.input_value()}, edited-in-browser".strip(", "))
    page.locator(".wb-detail .wb-save").click()
    page.wait_for_function("() => document.querySelector('.wb-detail .wb-dnotice').textContent === 'Saved.'")
    assert "edited-in-browser" in catalog(dashboard).get(lora_id)["tags"]


def test_bulk_tag_and_undo(session: Any, dashboard: Any) -> None:  # noqa: F811
    page = session.page
    cards = page.locator(".wb-gallery .wb-card[data-id]")
    ids = [int(cards.nth(i).get_attribute("data-id")) for i in (2, 3)]
    for i in (2, 3):
        cards.nth(i).locator(".wb-check").click()
    page.wait_for_function("() => document.querySelector('.wb-gallery .wb-selcount').textContent === '2 selected'")
    page.locator(".wb-gallery .wb-bulk-tag").fill("bulk-from-browser")
    page.locator(".wb-gallery .wb-bulk-addtags").click()
    page.wait_for_function("() => document.querySelector('.wb-gallery .wb-notice').textContent.startsWith('Tagged 2')")
    cat = catalog(dashboard)
    assert all("bulk-from-browser" in cat.get(i)["tags"] for i in ids)
    page.locator(".wb-gallery .wb-undo").click()
    page.wait_for_function("() => document.querySelector('.wb-gallery .wb-notice').textContent === 'Undone.'")
    cat = catalog(dashboard)
    assert not any("bulk-from-browser" in cat.get(i)["tags"] for i in ids)
    page.locator(".wb-gallery .wb-select-none").click()


def test_hostile_entries_render_as_text(session: Any, dashboard: Any) -> None:  # noqa: F811
    page = session.page
    page.locator(".wb-gallery .wb-search").fill("alert")
    wait_count(page, catalog(dashboard).count(text="alert"))
    hostile = page.locator(".wb-gallery .wb-card[data-id]").filter(has=page.locator(".wb-name", has_text=SCRIPT))
    assert hostile.count() >= 1, "the <script> name is shown as text"
    hostile.first.click()
    page.wait_for_function(
        "name => { const h = document.querySelector('.wb-detail .wb-dname'); return h && h.textContent === name; }",
        arg=SCRIPT,
    )
    page.wait_for_timeout(1500)  # give any injected handler the chance to fire
    detail_text = page.locator(".wb-detail").inner_text()
    assert IMG in detail_text, "tags / trigger words with <img onerror> appear verbatim"
    injected = page.evaluate(
        """() => {
            const roots = [...document.querySelectorAll('.wb-gallery, .wb-detail')];
            return roots.map(r => r.querySelectorAll('script, iframe, svg, [onerror], [onload], img[src="x"]').length)
                        .reduce((a, b) => a + b, 0);
        }"""
    )
    assert injected == 0
    assert session.events.dialogs == []
    page.locator(".wb-gallery .wb-search").fill("")


def test_server_serves_nothing_but_the_dashboard(dashboard: Any) -> None:  # noqa: F811
    def status(path: str) -> int:
        try:
            with urllib.request.urlopen(dashboard.url + path, timeout=30) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    # (every other path renders the one dashboard, so it is not probed: each GET starts a kernel)
    assert status("voila/files/dashboard.ipynb") == 403
    assert status("voila/files/voila.log") == 403
    assert status("voila/files/" + "..%2F" * 6 + "etc/passwd") in (403, 404)


def test_no_dialogs_and_no_page_errors(session: Any) -> None:
    assert session.events.dialogs == []
    assert session.events.page_errors == []
    assert session.events.unexpected_console_errors() == []
