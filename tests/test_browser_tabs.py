"""Every dashboard tab as a newcomer meets it, in headless chromium, with a screenshot of each.

One Voilà server and one page for the module (a page load costs 20-40 s here); the tests run in
file order: what the page asks of the network, its title, the Library's layout and controls, then
the Generate → Queue → History round trip on the tiny pipeline, and a screenshot per tab in
``test-artifacts/`` (``tab-*.png``).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from browser_fixtures import (  # noqa: F401  (pytest fixtures)
    PAGE_TIMEOUT_MS,
    PageEvents,
    chromium,
    dashboard,
    demo_library,
    save_screenshot,
)

import workbench

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def session(chromium: Any, dashboard: Any) -> Any:  # noqa: F811
    """The page, every URL it requested, and its dialogs (answered from ``answers``, else dismissed)."""
    events = PageEvents()
    state = SimpleNamespace(events=events, requests=[], answers=[])
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(PAGE_TIMEOUT_MS)

    def on_dialog(dialog: Any) -> None:
        events.dialogs.append(f"{dialog.type}: {dialog.message}")
        if state.answers:
            answer = state.answers.pop(0)
            if answer is False:
                dialog.dismiss()
            elif answer is True:
                dialog.accept()
            else:
                dialog.accept(answer)
        else:
            dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("request", lambda request: state.requests.append(request.url))
    page.on("console", lambda msg: events.console_errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: events.page_errors.append(str(exc)))
    page.goto(dashboard.url)
    page.wait_for_selector(".wb-gallery .wb-card[data-id] .wb-name")
    state.page = page
    yield state
    page.close()


def catalog(dashboard: Any) -> Any:  # noqa: F811
    return workbench.open(dashboard.home).catalog


def notice(page: Any) -> str:
    return page.locator(".wb-gallery .wb-notice").inner_text()


def wait_notice(page: Any, start: str) -> None:
    page.wait_for_function("s => document.querySelector('.wb-gallery .wb-notice').textContent.startsWith(s)", arg=start)


def wait_count(page: Any, expected: int) -> None:
    label = f"{expected:,} LoRA{'' if expected == 1 else 's'}"
    page.wait_for_function("l => document.querySelector('.wb-gallery .wb-count').textContent === l", arg=label)


def open_tab(page: Any, name: str) -> None:
    page.get_by_role("tab", name=name).click()
    # a tab's view is built in the kernel when it is first shown: wait until it replaced the placeholder
    page.wait_for_function(
        "() => ![...document.querySelectorAll('.wb-tab-pending')].some(e => e.getClientRects().length > 0)"
    )
    page.wait_for_timeout(800)


def test_title_and_no_request_leaves_the_server(session: Any, dashboard: Any) -> None:  # noqa: F811
    page = session.page
    assert page.title() == "LoRA Workbench"
    outside = [u for u in session.requests if not u.startswith((dashboard.url, "data:", "blob:"))]
    assert outside == [], "no CDN (Font Awesome included): the dashboard works offline"
    assert page.evaluate("document.body.dataset.jpThemeLight") in ("true", "false")


def test_library_uses_the_width_and_hides_idle_controls(session: Any) -> None:
    page = session.page
    width = page.evaluate("document.querySelector('.wb-gallery').getBoundingClientRect().width")
    assert width > 0.85 * 1400, "no blank detail column before a LoRA is opened"
    visible = page.evaluate(
        "() => [...document.querySelector('.wb-gallery .wb-bulkbar').children]"
        ".filter(e => e.offsetParent !== null).map(e => e.className)"
    )
    assert len(visible) <= 3 and any("wb-selcount" in c for c in visible), visible
    first = page.locator(".wb-gallery .wb-card[data-id] .wb-name").first.inner_text()
    assert first[:1].isalnum(), f"the demo's hostile entries are not the first card ({first!r})"


def test_base_model_checkboxes_with_unknown_and_rating_sort(session: Any, dashboard: Any) -> None:  # noqa: F811
    page = session.page
    cat = catalog(dashboard)
    page.locator(".wb-gallery .wb-filters-toggle").click()
    boxes = page.locator(".wb-gallery .wb-filter-base input[type=checkbox]")
    values = [boxes.nth(i).get_attribute("value") for i in range(boxes.count())]
    assert "unknown" in values and "SD1" in values
    page.locator(".wb-gallery .wb-filter-base input[value='SD1']").check()
    page.locator(".wb-gallery .wb-filter-base input[value='unknown']").check()
    wait_count(page, cat.count(base_models=["SD1", None]))
    page.locator(".wb-gallery .wb-clear").click()
    wait_count(page, cat.count())
    page.locator(".wb-gallery .wb-sort").select_option("rating")
    page.wait_for_function("() => document.querySelector('.wb-gallery .wb-direction').textContent.includes('desc')")
    page.locator(".wb-gallery .wb-sort").select_option("name")
    page.wait_for_function("() => document.querySelector('.wb-gallery .wb-direction').textContent.includes('asc')")


def test_exclude_tags_and_a_saved_preset(session: Any, dashboard: Any) -> None:  # noqa: F811
    page = session.page
    cat = catalog(dashboard)
    tag = cat.facets()["tags"][0][0]
    page.locator(".wb-gallery .wb-filter-exclude").fill(tag)
    page.locator(".wb-gallery .wb-filter-exclude").press("Enter")
    expected = cat.count(tags_none=[tag])
    wait_count(page, expected)
    session.answers.append("without " + tag)
    page.locator(".wb-gallery .wb-preset-save").click()
    wait_notice(page, "Saved the current filters")
    assert list(catalog(dashboard).presets()) == ["without " + tag]
    page.locator(".wb-gallery .wb-clear").click()
    wait_count(page, cat.count())
    page.locator(".wb-gallery .wb-presets").select_option("without " + tag)
    wait_count(page, expected)
    page.locator(".wb-gallery .wb-clear").click()
    wait_count(page, cat.count())
    page.locator(".wb-gallery .wb-filters-toggle").click()


def test_status_message_shows_where_the_eye_is(session: Any) -> None:
    page = session.page
    page.locator(".wb-gallery .wb-card[data-id] .wb-fav").nth(3).click()
    wait_notice(page, "Added to favorites")
    box = page.locator(".wb-gallery .wb-notice").bounding_box()
    grid = page.locator(".wb-gallery .wb-scroll").bounding_box()
    assert box["y"] < grid["y"], "the status line is above the grid, not below the fold"
    page.locator(".wb-gallery .wb-undo").click()
    wait_notice(page, "Undone")


def test_removing_many_asks_first(session: Any, dashboard: Any) -> None:  # noqa: F811
    page = session.page
    total = catalog(dashboard).count()
    page.wait_for_timeout(1000)  # the grid repaints after the previous test's Undo
    cards = page.locator(".wb-gallery .wb-card[data-id]")
    for n, i in enumerate((4, 5), start=1):
        cards.nth(i).locator(".wb-check").click()
        page.wait_for_function(
            "n => document.querySelector('.wb-gallery .wb-selcount').textContent === `${n} selected`", arg=n
        )
    asked = len(session.events.dialogs)
    session.answers.append(False)  # cancel
    page.locator(".wb-gallery .wb-bulk-remove").click()
    page.wait_for_timeout(1000)
    assert session.events.dialogs[asked].startswith("confirm: Remove 2 LoRAs")
    assert catalog(dashboard).count() == total
    session.answers.append(True)
    page.locator(".wb-gallery .wb-bulk-remove").click()
    wait_notice(page, "Removed 2 LoRAs")
    assert catalog(dashboard).count() == total - 2
    page.locator(".wb-gallery .wb-undo").click()
    wait_notice(page, "Undone")
    assert catalog(dashboard).count() == total


def test_library_tab_with_an_open_lora(session: Any) -> None:
    page = session.page
    page.locator(".wb-gallery .wb-card[data-id]").nth(0).click()
    page.wait_for_selector(".wb-detail .wb-dname")
    sources = page.locator(".wb-detail .wb-fields tbody tr td:nth-child(3)")
    lines = sources.evaluate_all(
        "cells => cells.map(c => { const r = document.createRange(); r.selectNodeContents(c);"
        " return new Set([...r.getClientRects()].map(x => Math.round(x.top))).size; })"
    )
    assert lines and max(lines) <= 1, "source labels stay on one line (no mid-word breaks)"
    added = page.locator(".wb-detail .wb-fields tr", has_text="Added").locator("td").nth(1).inner_text()
    assert added.endswith("UTC") and "." not in added
    save_screenshot(page, "tab-library.png")


def test_replace_preview_with_a_video_that_plays(session: Any, dashboard: Any, tmp_path: Any) -> None:  # noqa: F811
    from test_video_previews import write_video

    page = session.page
    lora_id = int(page.locator(".wb-detail").get_attribute("data-id"))
    page.locator(".wb-detail .wb-upload-preview").set_input_files(str(write_video(tmp_path / "clip.mp4")))
    page.wait_for_function("() => document.querySelector('.wb-detail .wb-dnotice').textContent === 'Preview replaced.'")
    page.wait_for_selector(".wb-detail video.wb-dvideo[src^='blob:']")
    assert page.evaluate("document.querySelector('.wb-detail video').muted") is True
    row = catalog(dashboard).query(ids=[lora_id]).iloc[0]
    assert str(row["preview_path"]).endswith(".mp4") and str(dashboard.home) in str(row["preview_path"])


def test_generate_queue_history_round_trip(session: Any) -> None:
    page = session.page
    open_tab(page, "Generate")
    combo = page.locator(".wb-generate input[list]").first
    combo.wait_for()
    options = page.evaluate(
        "() => [...document.querySelectorAll('datalist option')].map(o => o.value).filter(v => v.startsWith('tiny') || v.startsWith('✕'))"
    )
    runnable = [o for o in options if not o.startswith("✕")]
    assert runnable and options.index(runnable[-1]) < next(i for i, o in enumerate(options) if o.startswith("✕"))
    combo.fill("tiny_watercolor")
    page.get_by_role("button", name="Add LoRA").click()
    page.wait_for_selector(".wb-generate code:has-text('tiny_watercolor')")
    page.locator(".wb-generate textarea").first.fill("a lighthouse at dusk")
    save_screenshot(page, "tab-generate.png")
    page.get_by_role("button", name="Generate").click()
    page.wait_for_selector(".wb-generate :text('Queued job')")
    open_tab(page, "Queue")
    page.wait_for_function(  # the job just queued is listed (not "no jobs yet")
        "() => [...document.querySelectorAll('.wb-queue b')].some(b => b.textContent === 'Queue')"
        " && !document.querySelector('.wb-queue').textContent.includes('no jobs yet')",
        timeout=60_000,
    )
    save_screenshot(page, "tab-queue.png")
    open_tab(page, "History")
    page.wait_for_selector(".wb-history-card img[src^='blob:']", timeout=300_000)
    save_screenshot(page, "tab-history.png")
    page.locator(".wb-history-card img").first.click()
    page.wait_for_selector(".wb-history-overlay:not([hidden]) .wb-history-large-img[src^='blob:']")
    assert "Steps:" in page.locator(".wb-history-params").inner_text()
    save_screenshot(page, "tab-history-large.png")
    page.locator(".wb-history-large").get_by_role("button", name="Reuse").click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('[role=tab]')].some(t => t.textContent.trim() === 'Generate'"
        " && t.getAttribute('aria-selected') === 'true')"
    )
    assert page.locator(".wb-generate textarea").first.input_value().endswith("a lighthouse at dusk")


def test_recommend_and_compare_tabs(session: Any) -> None:
    page = session.page
    open_tab(page, "Recommend")
    save_screenshot(page, "tab-recommend.png")
    open_tab(page, "Compare")
    page.wait_for_selector(".wb-compare select[multiple] option", state="attached")
    labels = page.locator(".wb-compare select[multiple] option").all_inner_texts()
    first_marked = next(i for i, t in enumerate(labels) if t.startswith("✕"))
    assert first_marked > 0 and all(not t.startswith("✕") for t in labels[:first_marked])
    save_screenshot(page, "tab-compare.png")
    open_tab(page, "Library")


def test_no_page_errors(session: Any) -> None:
    assert session.events.page_errors == []
    assert session.events.unexpected_console_errors() == []
