"""Gallery, detail and library views without a browser: message handlers called directly, traits checked."""

from __future__ import annotations

import io
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import pytest
from lora_factory import write_kohya_lora
from PIL import Image

import workbench
from workbench.views import GENERIC_ERROR, StatusView, guarded
from workbench.views.detail import DetailWidget
from workbench.views.gallery import GalleryWidget
from workbench.views.library import LibraryView, dashboard_tabs

REPO = Path(__file__).resolve().parents[1]

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lib = tmp_path_factory.mktemp("views") / "lib"
    for i in range(24):
        base = "SDXL" if i % 3 == 0 else "SD1"
        folder = "characters" if i % 2 else "styles"
        path = write_kohya_lora(
            lib / folder / f"lora_{i:02d}.safetensors", base=base, seed=i, metadata={"ss_output_name": f"Item {i:02d}"}
        )
        if i % 4 == 0:
            buffer = io.BytesIO()
            Image.new("RGB", (300, 200), (i * 10, 80, 120)).save(buffer, format="PNG")
            path.with_suffix(".png").write_bytes(buffer.getvalue())
    write_kohya_lora(
        lib / "hostile" / "evil.safetensors",
        seed=99,
        metadata={
            "ss_output_name": SCRIPT,
            "ss_tag_frequency": json.dumps({"img": {IMG: 4, "normal": 2}}),
        },
    )
    (lib / "hostile" / "broken.safetensors").write_bytes(b"\xff" * 12)
    return lib


class Recorder:
    """Stands in for the comm: keeps what the widget sends to the browser."""

    def __init__(self, widget: Any) -> None:
        self.messages: list[tuple[dict, list]] = []
        widget.send = lambda content, buffers=None: self.messages.append((content, list(buffers or [])))

    def last(self, kind: str) -> tuple[dict, list]:
        return [m for m in self.messages if m[0].get("kind") == kind][-1]


def test_gallery_first_page_and_facets_come_from_the_catalog(wb: workbench.Workbench) -> None:
    gallery = GalleryWidget(wb, page_size=10)
    assert gallery.total == wb.catalog.count() == 26
    assert [r["id"] for r in gallery.first_rows] == wb.catalog.query(sort="name", limit=10)["id"].tolist()
    row = gallery.first_rows[0]
    assert set(row) >= {
        "id",
        "name",
        "base_model",
        "rank",
        "trigger_words",
        "tags",
        "favorite",
        "rating",
        "missing",
        "error",
        "has_preview",
    }
    assert dict(gallery.facets["base_models"]) == {"SD1": 17, "SDXL": 8, "unknown": 1}, "the broken file: unknown"
    assert dict(gallery.facets["folders"])["characters"] == 12
    json.dumps(gallery.get_state())  # every synced value is JSON


def test_filter_sort_and_paging_messages(wb: workbench.Workbench) -> None:
    gallery = GalleryWidget(wb, page_size=10)
    sent = Recorder(gallery)
    gallery.handle_message(
        {"action": "filter", "filters": {"base_models": ["SDXL"], "sort": "name", "descending": True}}
    )
    assert gallery.total == wb.catalog.count(base_models=["SDXL"]) == 8
    assert [r["name"] for r in gallery.first_rows] == sorted((r["name"] for r in gallery.first_rows), reverse=True)
    gallery.handle_message({"action": "filter", "filters": {"folder": "characters", "tags": [], "text": "item 1"}})
    assert gallery.total == wb.catalog.count(folder="characters", text="item 1")
    gallery.handle_message({"action": "filter", "filters": {}})
    generation = gallery.generation
    gallery.handle_message({"action": "rows", "offset": 20, "generation": generation})
    message, _ = sent.last("rows")
    assert (
        message["offset"] == 20
        and [r["id"] for r in message["rows"]] == wb.catalog.query(sort="name", limit=10, offset=20)["id"].tolist()
    )
    count = len(sent.messages)
    gallery.handle_message({"action": "rows", "offset": 10, "generation": generation - 1})
    assert len(sent.messages) == count, "pages of an older generation are not sent"


def test_random_sort_is_stable_per_seed(wb: workbench.Workbench) -> None:
    gallery = GalleryWidget(wb, page_size=30)
    gallery.handle_message({"action": "filter", "filters": {"sort": "random", "seed": 7}})
    first = [r["id"] for r in gallery.first_rows]
    gallery.refresh()
    assert [r["id"] for r in gallery.first_rows] == first
    gallery.handle_message({"action": "filter", "filters": {"sort": "random", "seed": 8}})
    assert [r["id"] for r in gallery.first_rows] != first


@pytest.mark.parametrize(
    "message",
    [
        "not a dict",
        {"action": "execute", "code": "import os"},
        {"action": "sql", "query": "DROP TABLE loras"},
        {"action": "filter", "filters": {"sort": "name; DROP TABLE loras"}},
        {"action": "filter", "filters": {"text": {"$ne": 1}}},
        {"action": "filter", "filters": {"favorites": "yes"}},
        {"action": "filter", "filters": "text"},
        {"action": "rows", "offset": -5, "generation": 1},
        {"action": "rows", "offset": 10**9, "generation": 1},
        {"action": "rows", "offset": "0", "generation": 1},
        {"action": "thumbs", "ids": list(range(500))},
        {"action": "thumbs", "ids": ["../../etc/passwd"]},
        {"action": "open", "id": 99999},
        {"action": "open", "id": True},
        {"action": "bulk", "op": "delete_files"},
        {"action": "bulk", "op": "rating", "value": 9},
        {"action": "favorite", "id": 1, "value": "true"},
        {"action": "__init__"},
    ],
)
def test_messages_outside_the_whitelist_change_nothing(wb: workbench.Workbench, message: Any) -> None:
    gallery = GalleryWidget(wb, page_size=10)
    gallery.selected = gallery.first_rows[0:1] and [gallery.first_rows[0]["id"]]
    sent = Recorder(gallery)
    before = (dict(gallery.filters), gallery.total, gallery.active_id, gallery.generation)
    edits = len(wb.catalog.edit_log())
    gallery.handle_message(message)
    assert (dict(gallery.filters), gallery.total, gallery.active_id, gallery.generation) == before
    assert len(wb.catalog.edit_log()) == edits
    assert sent.messages == []
    assert gallery.notice["level"] != "error", "bad input is dropped, not reported as a server error"


def test_thumbnails_only_for_requested_existing_ids(wb: workbench.Workbench) -> None:
    gallery = GalleryWidget(wb, page_size=50, thumbnail_size=64)
    sent = Recorder(gallery)
    with_preview = [r["id"] for r in gallery.first_rows if r["has_preview"]]
    without = [r["id"] for r in gallery.first_rows if not r["has_preview"]][:2]
    assert len(with_preview) == 6
    gallery.handle_message({"action": "thumbs", "ids": with_preview + without + [424242]})
    message, buffers = sent.last("thumbs")
    assert message["ids"] == with_preview and set(message["none"]) == set(without) | {424242}
    assert len(buffers) == 6 and all(b[8:12] == b"WEBP" for b in buffers)
    assert len(list((wb.home / "thumbnails").rglob("*.webp"))) == 6


def test_bulk_actions_and_undo(wb: workbench.Workbench) -> None:
    gallery = GalleryWidget(wb, page_size=10)
    ids = [r["id"] for r in gallery.first_rows[:3]]
    gallery.handle_message({"action": "select", "ids": ids + [777777]})
    gallery.handle_message({"action": "bulk", "op": "add_tags", "value": ["keep", "wip"]})
    assert all({"keep", "wip"} <= set(wb.catalog.get(i)["tags"]) for i in ids)
    assert gallery.can_undo and gallery.notice["text"].startswith("Tagged 3")
    gallery.handle_message({"action": "bulk", "op": "set_base_model", "value": "Pony"})
    assert {wb.catalog.get(i)["base_model"] for i in ids} == {"Pony"}
    gallery.handle_message({"action": "undo"})
    assert {wb.catalog.get(i)["base_model"] for i in ids} != {"Pony"}
    gallery.handle_message({"action": "bulk", "op": "favorite", "value": True})
    assert wb.catalog.count(favorites=True) == 3
    gallery.handle_message({"action": "bulk", "op": "remove", "confirmed": True})
    assert gallery.total == 23 and gallery.selected == []
    gallery.handle_message({"action": "undo"})
    assert gallery.total == 26


def test_open_sets_active_id_and_library_loads_the_detail(wb: workbench.Workbench) -> None:
    view = LibraryView(wb, page_size=10)
    target = view.gallery.first_rows[2]["id"]
    view.gallery.handle_message({"action": "open", "id": target})
    assert view.gallery.active_id == target
    assert view.detail.lora_id == target and view.detail.record["id"] == target
    assert view.detail.record["name"] == wb.catalog.get(target)["name"]


def test_detail_record_has_fields_sources_metadata_and_prompt_syntax(wb: workbench.Workbench) -> None:
    lora_id = int(wb.catalog.query(text="item 04")["id"].iloc[0])
    wb.catalog.update(lora_id, preferred_weight=0.7, trigger_words=["t0k"])
    detail = DetailWidget(wb, lora_id=lora_id)
    record = detail.record
    fields = {label: (value, source) for label, value, source in record["fields"]}
    assert fields["Rank"][1] == "header" and fields["Path"][1] == "file"
    assert fields["Trigger words"] == ("t0k", "user")
    assert ["ss_output_name", "Item 04"] in record["ss"]
    assert record["syntax"]["a1111"] == "<lora:lora_04:0.7>"
    assert record["syntax"]["comfyui"] == "<lora:lora_04:0.7>"
    assert record["syntax"]["a1111_triggers"].startswith("t0k")
    assert detail.preview[8:12] == b"WEBP", "lora_04 has a preview image beside it"
    json.dumps(record)


def test_detail_edits_persist_and_survive_a_rescan(wb: workbench.Workbench, library: Path) -> None:
    lora_id = int(wb.catalog.query(text="item 05")["id"].iloc[0])
    detail = DetailWidget(wb, lora_id=lora_id)
    saved: list[int] = []
    detail.on_saved(saved.append)
    detail.handle_message(
        {
            "action": "save",
            "id": lora_id,
            "fields": {
                "tags": ["castle", "night"],
                "notes": "good at 0.6",
                "rating": 4,
                "favorite": True,
                "preferred_weight": 0.6,
                "trigger_words": ["k4stle"],
                "base_model_override": "Pony",
            },
        }
    )
    assert saved == [lora_id] and detail.notice["text"] == "Saved."
    path = Path(wb.catalog.get(lora_id)["path"])
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 3_000_000_000))
    wb.scan([library], progress=False)
    record = workbench.open(wb.home).catalog.get(lora_id)
    assert record["tags"] == ["castle", "night"] and record["notes"] == "good at 0.6"
    assert record["rating"] == 4 and record["favorite"] is True and record["preferred_weight"] == 0.6
    assert record["trigger_words"] == ["k4stle"] and record["base_model"] == "Pony"


@pytest.mark.parametrize(
    "fields",
    [
        {"rating": 9},
        {"path": "/etc/passwd"},
        {"favorite": "yes"},
        {"preferred_weight": float("nan")},
        {"preferred_weight": 1e9},
        {"tags": [{"x": 1}]},
    ],
)
def test_detail_rejects_bad_edits(wb: workbench.Workbench, fields: dict) -> None:
    lora_id = int(wb.catalog.query(limit=1)["id"].iloc[0])
    detail = DetailWidget(wb, lora_id=lora_id)
    edits = len(wb.catalog.edit_log())
    detail.handle_message({"action": "save", "id": lora_id, "fields": fields})
    assert len(wb.catalog.edit_log()) == edits
    assert detail.notice["level"] == "error"


def test_detail_refuses_saving_another_lora_than_the_open_one(wb: workbench.Workbench) -> None:
    first, second = wb.catalog.query(limit=2)["id"].tolist()
    detail = DetailWidget(wb, lora_id=int(first))
    detail.handle_message({"action": "save", "id": int(second), "fields": {"rating": 5}})
    assert wb.catalog.get(int(second))["rating"] == 0


def test_hostile_strings_reach_the_browser_as_plain_data(wb: workbench.Workbench) -> None:
    gallery = GalleryWidget(wb)
    gallery.handle_message({"action": "filter", "filters": {"text": "alert"}})
    assert [r["name"] for r in gallery.first_rows] == [SCRIPT]
    detail = DetailWidget(wb, lora_id=gallery.first_rows[0]["id"])
    assert [IMG, 4] in detail.record["training_tags"]
    assert detail.record["syntax"]["a1111"] == "<lora:evil:1.0>", "prompt tags use the file name"
    for name in ("gallery.js", "detail.js"):
        source = (REPO / "widgets" / name).read_text(encoding="utf-8")
        assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(", source), name


def test_status_line_escapes_library_paths(tmp_path: Path) -> None:
    lib = tmp_path / "<script>alert(1)<"
    write_kohya_lora(lib / "a.safetensors")
    bench = workbench.open(tmp_path / "home")
    bench.scan([lib], progress=False)
    status = StatusView(bench)
    assert "<script>" not in status.value and "&lt;script&gt;" in status.value
    assert "<b>1</b> LoRAs" in status.value


def test_guarded_callbacks_log_and_show_only_a_generic_message(
    wb: workbench.Workbench, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    gallery = GalleryWidget(wb)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("secret path /home/me/private")

    monkeypatch.setattr(wb.catalog, "page_columns", broken)
    with caplog.at_level(logging.ERROR, logger="workbench.views"):
        gallery.handle_message({"action": "filter", "filters": {"text": "x"}})
    assert gallery.notice == {"seq": gallery.notice["seq"], "text": GENERIC_ERROR, "level": "error"}
    assert "secret path" in caplog.text, "the details go to the server log"

    shown: list[str] = []

    @guarded(notify=shown.append)
    def callback() -> None:
        raise KeyError("boom")

    assert callback() is None and shown == [GENERIC_ERROR]


def test_a_tab_that_fails_to_build_is_left_out(wb: workbench.Workbench, monkeypatch: pytest.MonkeyPatch) -> None:
    import ipywidgets

    def broken(wb: workbench.Workbench) -> None:
        raise RuntimeError("no index")

    monkeypatch.setattr("workbench.views.recommend.recommend_tab", broken)
    monkeypatch.setattr(
        "workbench.views.generate.generation_tabs",
        lambda wb: [("Generate", ipywidgets.Label("g")), ("History", ipywidgets.Label("h"))],
    )
    tabs = dashboard_tabs(wb)
    assert tabs.pending == ["Recommend", "Generate", "Queue", "History", "Compare", "Weights"] + [
        "Analytics",
        "Status",
        "Maintenance",
    ]  # built when first shown
    tabs.selected_index = 1  # Recommend fails to build: its tab goes, the Library shows
    assert tabs.selected_index == 0 and "Recommend" not in tabs.titles
    tabs.selected_index = tabs.titles.index("History")  # builds the generation group, History stays shown
    assert tabs.get_title(tabs.selected_index) == "History"
    assert tabs.view("History").value == "h" and "Generate" not in tabs.pending
    tabs.build_all()
    titles = [tabs.get_title(i) for i in range(len(tabs.children))]
    assert titles == ["Library", "Generate", "History", "Weights", "Analytics", "Status", "Maintenance"]
    assert tabs.pending == []
    assert isinstance(tabs.children[0], LibraryView)


def test_widgets_load_their_browser_half_from_the_checkout() -> None:
    for widget, name in ((GalleryWidget, "gallery"), (DetailWidget, "detail")):
        source = str(widget._esm)  # anywidget's FileContents: the module text
        assert source == (REPO / "widgets" / f"{name}.js").read_text(encoding="utf-8")
        assert "export default" in source


def test_unknown_base_model_exclude_tags_and_hostile_names_not_first(wb: workbench.Workbench) -> None:
    gallery = GalleryWidget(wb, page_size=50)
    bases = dict(gallery.facets["base_models"])
    assert bases["unknown"] == 1 and bases["SDXL"] == 8  # the broken file's base model is not known
    gallery.handle_message({"action": "filter", "filters": {"base_models": ["unknown", "SDXL"]}})
    assert gallery.total == 9
    assert {r["base_model"] for r in gallery.first_rows} == {None, "SDXL"}
    wb.catalog.add_tags([r["id"] for r in gallery.first_rows[:3]], ["wip"])
    gallery.handle_message(
        {"action": "filter", "filters": {"base_models": ["unknown", "SDXL"], "exclude_tags": ["WIP"]}}
    )
    assert gallery.total == 6
    gallery.handle_message({"action": "filter", "filters": {}})
    names = [r["name"] for r in gallery.first_rows]
    assert names[0] == "broken" and names.index(SCRIPT) > names.index("Item 23")  # "<script>" sorts under s


def test_rating_sort_starts_with_the_best(wb: workbench.Workbench) -> None:
    gallery = GalleryWidget(wb, page_size=50)
    target = gallery.first_rows[5]["id"]
    wb.catalog.update(target, rating=5)
    gallery.handle_message({"action": "filter", "filters": {**gallery.filters, "sort": "rating"}})
    assert gallery.filters["descending"] is True and gallery.first_rows[0]["id"] == target
    gallery.handle_message({"action": "filter", "filters": {**gallery.filters, "descending": False}})
    assert gallery.filters["descending"] is False  # the direction button still flips it
    gallery.handle_message({"action": "filter", "filters": {**gallery.filters, "sort": "name"}})
    assert gallery.filters["descending"] is False


def test_filter_presets_are_saved_applied_and_deleted(wb: workbench.Workbench) -> None:
    gallery = GalleryWidget(wb, page_size=50)
    gallery.handle_message({"action": "filter", "filters": {"base_models": ["SDXL"], "text": "item"}})
    gallery.handle_message({"action": "save_preset", "name": "SDXL items"})
    assert gallery.presets == ["SDXL items"] and "Saved the current filters" in gallery.notice["text"]
    gallery.handle_message({"action": "filter", "filters": {}})
    assert gallery.total == 26
    other = GalleryWidget(wb, page_size=50)  # another visitor sees it
    assert other.presets == ["SDXL items"]
    other.handle_message({"action": "apply_preset", "name": "SDXL items"})
    assert other.filters["base_models"] == ["SDXL"] and other.total == 8
    other.handle_message({"action": "apply_preset", "name": "nope"})  # dropped
    other.handle_message({"action": "save_preset", "name": ""})  # dropped
    other.handle_message({"action": "delete_preset", "name": "SDXL items"})
    assert other.presets == [] and wb.catalog.presets() == {}


def test_removing_many_needs_confirmation(wb: workbench.Workbench) -> None:
    gallery = GalleryWidget(wb, page_size=50)
    ids = [r["id"] for r in gallery.first_rows[:3]]
    gallery.selected = ids
    gallery.handle_message({"action": "bulk", "op": "remove", "value": None})
    assert gallery.total == 26 and "needs a confirmation" in gallery.notice["text"]
    gallery.handle_message({"action": "bulk", "op": "remove", "value": None, "confirmed": True})
    assert gallery.total == 23 and "Removed 3 LoRAs" in gallery.notice["text"]


def test_detail_column_appears_only_when_a_lora_is_open(wb: workbench.Workbench) -> None:
    view = LibraryView(wb, page_size=10)
    assert view.detail.layout.display == "none"
    view.gallery.handle_message({"action": "open", "id": view.gallery.first_rows[0]["id"]})
    assert view.detail.layout.display is None


def test_detail_shows_imported_values_and_keeps_them_imported(wb: workbench.Workbench, library: Path) -> None:
    lora_id = int(wb.catalog.query(text="item 04")["id"].iloc[0])
    path = Path(wb.catalog.get(lora_id)["path"])
    path.with_suffix(".json").write_text(json.dumps({"preferred weight": 0.6, "negative text": "lowres"}))
    try:
        wb.scan([library], progress=False)
        detail = DetailWidget(wb, lora_id)
        assert detail.record["edit"]["preferred_weight"] == 0.6 and detail.record["edit"]["negative_text"] == "lowres"
        fields = {label: (value, source) for label, value, source in detail.record["fields"]}
        assert fields["Preferred weight"] == ("0.6", "a1111.json")
        assert fields["Negative prompt"] == ("lowres", "a1111.json")
        assert "." not in fields["Added"][0].split(":")[-1]  # minutes, no microseconds
        unchanged = dict(detail.record["edit"])
        unchanged.pop("base_model_override")
        detail.handle_message({"action": "save", "id": lora_id, "fields": {**unchanged, "rating": 3}})
        user = wb.catalog.get(lora_id)["user_fields"]
        assert user["rating"] == 3 and user["preferred_weight"] is None and user["negative_text"] is None
    finally:
        path.with_suffix(".json").unlink()


def test_opening_a_card_shows_its_weights_and_viewers_cannot_analyse(wb: workbench.Workbench) -> None:
    from workbench.views import READ_ONLY_MESSAGE

    view = LibraryView(wb, page_size=10)
    assert view.weights.lora_id is None and view.weights.figure.outputs == ()  # nothing built before a card opens
    ids = {
        Path(p).stem: int(i) for i, p in zip(wb.catalog.query(limit=None)["id"], wb.catalog.query(limit=None)["path"])
    }
    target, twin = ids["lora_01"], ids["lora_02"]  # both SD1 (one base-model family)
    view.gallery.handle_message({"action": "open", "id": target})
    assert view.weights.lora_id == target and "Not analysed yet" in view.weights.summary.value
    assert view.weights.analyse_button.layout.display != "none" and not view.weights.analyse_button.disabled
    wb.weights.analyze([twin], progress=False)
    view.weights.analyse().join(120)  # no shared worker here: a kernel thread reads the tensors
    assert view.weights.run.where == "kernel" and view.weights.run.bar.value == 1.0
    assert "nominal rank" in view.weights.summary.value and view.weights.heatmap.data[0].type == "heatmap"
    (output,) = view.weights.figure.outputs
    assert output["data"]["application/vnd.plotly.v1+json"]["data"][0]["type"] == "heatmap"
    view.weights.similar_thread.join(120)  # similar by weights is found off the kernel's thread
    assert "Similar by weights" in view.weights.similar.value and f"<td>{twin}</td>" in view.weights.similar.value
    # a broken file cannot be analysed: said plainly, no button to press
    view.gallery.handle_message({"action": "open", "id": ids["broken"]})
    assert view.weights.heatmap is None and view.weights.figure.outputs == () and view.weights.similar.value == ""
    # a viewer's page: the analysis is shown, no Analyse button, and the kernel refuses one
    viewer = LibraryView(wb, page_size=10, read_only=True)
    viewer.gallery.handle_message({"action": "open", "id": ids["lora_05"]})
    assert "Not analysed yet" in viewer.weights.summary.value
    assert viewer.weights.analyse_button.layout.display == "none"
    assert viewer.weights.analyse() is None and READ_ONLY_MESSAGE in viewer.weights.status.value
    assert wb.weights.get(ids["lora_05"]) is None
    viewer.gallery.handle_message({"action": "open", "id": target})
    assert viewer.weights.heatmap is not None  # viewers see analyses made by editors
    viewer.weights.similar_thread.join(120)
    assert f"<td>{twin}</td>" in viewer.weights.similar.value
