"""Generate, Queue, History and Compare views without a browser, on the real tiny pipeline and catalog."""

from __future__ import annotations

import pathlib
import time

import pytest

import workbench
from tests.fake_servers import shared_tiny
from workbench.generate import GenerationLimits, LoraSpec, RetryPolicy
from workbench.views import GENERIC_ERROR
from workbench.views.compare import CompareView, parse_numbers
from workbench.views.generate import GenerateView, generation_tabs
from workbench.views.queue import QueueView

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"


@pytest.fixture()
def wb(tmp_path, monkeypatch):
    monkeypatch.delenv("WORKBENCH_BACKEND", raising=False)
    backend, lora_dir = shared_tiny()
    bench = workbench.open(tmp_path / "home")
    bench.scan([lora_dir], progress=False, workers=1)
    bench.queue.set_backend("diffusers", backend)
    bench.queue.retry = RetryPolicy(max_attempts=1)
    yield bench
    bench.queue.close()


def _wait_until(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def _all_html(widget) -> str:
    """Every HTML/Label value under a widget tree (what a browser would render as markup)."""
    import ipywidgets as w

    out = []
    stack = [widget]
    while stack:
        node = stack.pop()
        if isinstance(node, w.HTML):
            out.append(node.value)
        stack.extend(getattr(node, "children", ()) or ())
    return "\n".join(out)


def test_form_submit_makes_a_job_and_a_history_entry_with_preferred_weight_and_triggers(wb):
    lora_id = int(wb.catalog.query(text="tiny_watercolor")["id"][0])
    wb.catalog.update(lora_id, preferred_weight=0.7, trigger_words=["wtrclr style"])
    form = GenerateView(wb)
    assert "Random weights" in form.backend_note.value and "random weights" in form.backend.label
    assert "tiny_watercolor" in form.lora_name.options
    form.prompt.value = "a lighthouse at dusk"
    form.seed.value = 5
    form.lora_name.value = "tiny_watercolor"
    form.add_button.click()
    assert [(s.name, s.unet) for s in form.stack()] == [("tiny_watercolor", 0.7)]
    form.generate_button.click()
    job_id = form.last_job_id
    assert job_id and wb.queue.wait(job_id, 120)["state"] == "succeeded"
    wb.queue.flush()
    rows = wb.history.list()
    assert list(rows["id"]) == [job_id]
    request = wb.history.reuse(job_id)
    assert request.prompt == "wtrclr style, a lighthouse at dusk" and request.seed == 5
    assert [(s.name, s.unet) for s in request.loras] == [("tiny_watercolor", 0.7)]


def test_lora_tags_typed_in_the_prompt_join_the_stack(wb):
    form = GenerateView(wb)
    form.prompt.value = "a fox <lora:tiny_pixelart:0.4:0.9>"
    form.triggers.value = "none"
    request = form.request()
    assert request.prompt == "a fox"
    assert [(s.name, s.unet, s.te) for s in request.loras] == [("tiny_pixelart", 0.9, 0.4)]


def test_recipe_save_and_load_from_the_form(wb):
    form = GenerateView(wb)
    form.prompt.value = "a heron"
    form.add_lora("tiny_neon_unet_only", 0.3, te=0.1)
    form.steps.value = 6
    form.recipe_name.value = "heron"
    form.save_recipe_button.click()
    assert "Saved recipe" in form.message.value and wb.recipes.names() == ["heron"]
    fresh = GenerateView(wb)
    fresh.recipe_pick.value = "heron"
    fresh.load_recipe_button.click()
    assert fresh.prompt.value == "a heron" and fresh.steps.value == 6
    assert [(s.name, s.unet, s.te) for s in fresh.stack()] == [("tiny_neon_unet_only", 0.3, 0.1)]


def test_queue_view_cancel_and_retry_buttons_act_on_the_queue(wb):
    from tests.fake_servers import tiny_request

    view = QueueView(wb, min_refresh_s=0.05)
    wb.queue.limits["diffusers"] = GenerationLimits(max_steps=1000)  # a long job on purpose
    try:
        long_job = wb.queue.submit(tiny_request(steps=400))
        short_job = wb.queue.submit(tiny_request(seed=8))
        _wait_until(lambda: wb.queue.get(long_job)["step"] >= 1)
        view.refresh()
        rows = {r.job_id: r for r in view.rows if r.job_id}
        assert rows[short_job].state == "queued" and not rows[short_job].cancel.disabled
        assert rows[short_job].retry.disabled
        rows[short_job].cancel.click()
        assert wb.queue.wait(short_job, 10)["state"] == "cancelled"
        rows = {r.job_id: r for r in view.rows if r.job_id}
        assert rows[short_job].state == "cancelled" and not rows[short_job].retry.disabled
        rows[short_job].retry.click()
        assert wb.queue.get(short_job)["state"] in ("queued", "running")
        rows = {r.job_id: r for r in view.rows if r.job_id}
        rows[long_job].cancel.click()
        assert wb.queue.wait(long_job, 60)["state"] == "cancelled"
        assert wb.queue.wait(short_job, 60)["state"] == "succeeded"
        # the listener refreshes the rows from the queue's thread
        _wait_until(lambda: {r.job_id: r.state for r in view.rows if r.job_id}.get(short_job) == "succeeded", 10)
        assert "succeeded: 1" in view.header.value and "cancelled: 1" in view.header.value
    finally:
        view.close()
    assert view._listener not in wb.queue.listeners


def test_history_reuse_fills_the_form_and_actions_are_checked(wb):
    from tests.fake_servers import tiny_request
    from workbench.generate import LoraSpec

    tabs = dict(generation_tabs(wb))
    assert list(tabs) == ["Generate", "Queue", "History", "Compare"]
    form, history = tabs["Generate"], tabs["History"].grid
    job = wb.queue.submit(tiny_request(prompt="a red fox", seed=21, steps=5, loras=[LoraSpec("tiny_pixelart", 0.45)]))
    wb.queue.wait(job, 120)
    _wait_until(lambda: history.items, 20)  # the Queue tab's listener refreshed the History tab
    assert [i["id"] for i in history.items] == [job] and history.items[0]["prompt"] == "a red fox"
    sent = []
    history.send = lambda content, buffers=None: sent.append((content, buffers))
    history.handle_message({"action": "thumbs", "ids": [job]})
    assert sent[-1][0] == {"kind": "thumbs", "ids": [job]} and sent[-1][1][0][:4] == b"RIFF"  # webp bytes
    history.handle_message({"action": "reuse", "id": job})
    assert form.prompt.value == "a red fox" and form.seed.value == 21 and form.steps.value == 5
    assert [(s.name, s.unet) for s in form.stack()] == [("tiny_pixelart", 0.45)]
    history.handle_message({"action": "rate", "id": job, "value": 4})
    history.handle_message({"action": "favorite", "id": job, "value": True})
    assert history.items[0]["rating"] == 4 and history.items[0]["favorite"] is True
    history.handle_message({"action": "filter", "filters": {"favorites": False}})
    assert history.items == []
    history.handle_message({"action": "filter", "filters": {"favorites": True, "min_rating": 4}})
    assert len(history.items) == 1
    # invalid messages are dropped, never reach the catalog
    for bad in (
        {"action": "rate", "id": job, "value": 9},
        {"action": "rate", "id": "../x", "value": 1},
        {"action": "exec", "sql": "DROP TABLE results"},
        {"action": "thumbs", "ids": "x"},
        "junk",
    ):
        history.handle_message(bad)
    assert wb.history.get(job)["rating"] == 4
    history.handle_message({"action": "delete", "id": job})
    assert history.items == [] and wb.history.list().empty


def test_hostile_strings_are_escaped_in_every_view(wb):
    from tests.fake_servers import tiny_request

    form = GenerateView(wb)
    form.add_lora(IMG, 1.0)
    assert IMG not in _all_html(form) and "&lt;img" in _all_html(form)
    view = QueueView(wb)
    try:
        job = wb.queue.submit(tiny_request(prompt=SCRIPT, steps=2))
        wb.queue.wait(job, 60)
        view.refresh()
        markup = _all_html(view)
        assert SCRIPT not in markup and "&lt;script&gt;" in markup
        failed = wb.queue.submit(tiny_request(prompt="x", loras=[LoraSpec(IMG)]))
        wb.queue.wait(failed, 60)
        view.refresh()
        assert IMG not in _all_html(view)  # the error names the LoRA: escaped too
    finally:
        view.close()

    js = (pathlib.Path(__file__).resolve().parents[1] / "widgets" / "history.js").read_text(encoding="utf-8")
    assert "innerHTML" not in js and "insertAdjacentHTML" not in js


def test_callback_errors_are_guarded(wb, monkeypatch):
    form = GenerateView(wb)
    monkeypatch.setattr(wb.queue, "submit", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("secret /path")))
    form.generate_button.click()
    assert GENERIC_ERROR in form.message.value and "secret" not in form.message.value


def test_compare_view_runs_a_grid(wb):
    view = CompareView(wb)
    view.loras.value = ("tiny_watercolor",)
    view.weights.value = "0, 1"
    view.seeds.value = "3"
    view.steps.value = 3
    thread = view.run()
    thread.join(180)
    assert view.image.value[:4] == b"\x89PNG", view.status.value
    assert len(view.result.cells) == 2 and "saved as" in view.status.value
    view.weights.value = "0, heavy"
    assert view.run() is None and "not a number" in view.status.value
    assert parse_numbers("1; 2,3", int) == [1, 2, 3]


def test_backend_choice_comes_from_the_environment(wb, monkeypatch):
    monkeypatch.setenv("WORKBENCH_BACKEND", "a1111:http://127.0.0.1:7860,diffusers")
    form = GenerateView(wb)
    labels = [label for label, _ in form.backend.options]
    assert labels[0].startswith("a1111") and "random weights" in labels[1]
    assert "Random weights" not in form.backend_note.value
    form.backend.value = 1
    assert "Random weights" in form.backend_note.value


def test_history_thumbnails_only_come_from_the_workbench_home(wb, tmp_path):
    from tests.fake_servers import tiny_request
    from workbench.views.history import HistoryWidget

    job = wb.queue.submit(tiny_request(steps=2))
    wb.queue.wait(job, 60)
    outside = tmp_path / "outside.png"
    outside.write_bytes(wb.history.png(job))
    with wb.db.write() as con:  # a tampered row pointing outside the home
        con.execute("UPDATE results SET path = ? WHERE id = ?", [str(outside), job])
    grid = HistoryWidget(wb)
    sent = []
    grid.send = lambda content, buffers=None: sent.append((content, buffers))
    grid.handle_message({"action": "thumbs", "ids": [job]})
    assert sent == [({"kind": "thumbs", "ids": []}, [])]


def test_history_large_view_preview_and_reuse_reveals_the_generate_tab(wb):
    from tests.fake_servers import tiny_request
    from workbench.views.library import dashboard_tabs

    tab = dashboard_tabs(wb)
    titles = [tab.get_title(i) for i in range(len(tab.children))]
    tab.selected_index = titles.index("History")  # built when first shown, with the Generate tab it fills
    assert titles == [tab.get_title(i) for i in range(len(tab.children))]
    form, history = tab.view("Generate"), tab.view("History").grid
    job = wb.queue.submit(tiny_request(prompt="a red fox", seed=21, steps=5, loras=[LoraSpec("tiny_pixelart", 0.45)]))
    wb.queue.wait(job, 120)
    history.refresh()
    assert "Steps: 5" in history.items[0]["infotext"]  # the large view shows every parameter
    sent = []
    history.send = lambda content, buffers=None: sent.append((content, buffers))
    history.handle_message({"action": "large", "id": job})
    assert sent[-1][0] == {"kind": "large", "id": job, "found": True} and sent[-1][1][0][:4] == b"RIFF"

    history.handle_message({"action": "set_preview", "id": job, "lora": "tiny_pixelart"})
    row = wb.catalog.query(text="tiny_pixelart").iloc[0]
    assert row["preview_path"].startswith(str(wb.home / "previews")) and bool(row["has_preview"])
    assert "now the preview of tiny_pixelart" in history.notice["text"]
    history.handle_message({"action": "set_preview", "id": job, "lora": "no_such_lora"})
    assert history.notice["level"] == "error"

    tab.selected_index = 0
    history.handle_message({"action": "reuse", "id": job})
    assert tab.selected_index == titles.index("Generate") and form.prompt.value == "a red fox"
    assert "Loaded the parameters" in form.message.value


def test_a_loras_negative_text_reaches_the_generate_form(wb):
    lora_id = int(wb.catalog.query(text="tiny_watercolor")["id"][0])
    wb.catalog.update(lora_id, negative_text="muddy colours")
    form = GenerateView(wb)
    form.negative.value = "blurry"
    form.add_lora("tiny_watercolor")
    assert form.negative.value == "blurry, muddy colours"
    form.add_lora("tiny_watercolor")  # not added twice
    assert form.negative.value == "blurry, muddy colours"
    assert form.request().negative_prompt == "blurry, muddy colours"


def test_generate_and_compare_offer_runnable_loras_first_and_say_why_not(wb, tmp_path):
    from lora_factory import write_kohya_lora

    other = tmp_path / "other"
    write_kohya_lora(other / "real_sdxl_style.safetensors", base="SDXL")
    wb.scan([other], progress=False, workers=1)
    form = GenerateView(wb)
    options = list(form.lora_name.options)
    runnable = [o for o in options if not o.startswith("✕")]
    assert runnable == ["tiny_neon_unet_only", "tiny_pixelart", "tiny_watercolor"]
    assert options[: len(runnable)] == runnable  # runnable ones first
    marked = {o.split(" — ")[0][2:]: o.split(" — ")[1] for o in options if o.startswith("✕")}
    assert marked["real_sdxl_style"].startswith("is for SDXL but the diffusers pipeline is tiny-sd1")
    assert "LyCORIS LoHa" in marked["tiny_loha_lycoris"]
    form.lora_name.value = next(o for o in options if "real_sdxl_style" in o)
    form._on_add(None)
    assert form.stack() == [] and "cannot run on this backend" in form.message.value

    view = CompareView(wb)
    labels = [label for label, _ in view.loras.options]
    assert labels[:3] == runnable and any(label.startswith("✕ real_sdxl_style") for label in labels)
    view.loras.value = ("real_sdxl_style",)
    assert view.run() is None and "Cannot run on this backend" in view.status.value
