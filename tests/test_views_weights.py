"""Weight views without a browser: panel (summary, heatmap, similar), duplicates with keep-one, escaping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from weights_factory import random_lora, refactorised, write_kohya, write_peft

import workbench
from workbench.views.weights import WeightDuplicatesView, WeightsPanel, block_norms_grid

HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.fixture()
def wb(tmp_path: Path) -> workbench.Workbench:
    lib = tmp_path / "lib"
    a = random_lora(1)
    write_kohya(lib / f"{HOSTILE}.safetensors", a)
    write_peft(lib / "a_peft.safetensors", refactorised(a))
    write_kohya(lib / "a_fp16.safetensors", a, dtype=np.float16)
    write_kohya(lib / "other.safetensors", random_lora(2))
    bench = workbench.open(tmp_path / "home")
    bench.scan([lib], workers=1, progress=False)
    return bench


def _id(wb: workbench.Workbench, stem: str) -> int:
    frame = wb.catalog.query(limit=None)
    return int(next(i for i, p in zip(frame["id"], frame["path"]) if Path(p).stem == stem))


def test_panel_analyses_on_demand_and_shows_heatmap_and_similar(wb: workbench.Workbench) -> None:
    panel = WeightsPanel(wb, _id(wb, "a_peft"))
    assert "Not analysed" in panel.summary.value
    assert panel.heatmap is None
    panel.analyse().join(60)
    assert "nominal rank <b>4</b>" in panel.summary.value
    assert panel.heatmap.data[0].type == "heatmap"
    assert "IN01" in list(panel.heatmap.data[0].x) and "TE" in list(panel.heatmap.data[0].x)
    # similar shows only analysed LoRAs: the others were not read yet
    assert "No other analysed LoRA" in panel.similar.value
    wb.weights.analyze(progress=False)
    panel.show(_id(wb, "a_peft"))
    assert "1.0000" in panel.similar.value
    assert HOSTILE not in panel.similar.value and "&lt;img src=x" in panel.similar.value


def test_duplicates_view_keeps_one_and_undoes(wb: workbench.Workbench) -> None:
    wb.weights.analyze(progress=False)
    view = WeightDuplicatesView(wb)
    view.find()
    assert len(view.groups) == 1 and len(view.groups[0]["ids"]) == 3
    html_text = " ".join(
        c.value
        for box in view.groups_box.children
        for c in box.children
        if hasattr(c, "value") and isinstance(c.value, str)
    )
    assert HOSTILE not in html_text
    keep = _id(wb, "a_fp16")
    view.keep_one(0, keep)
    remaining = set(wb.catalog.query(limit=None)["id"])
    assert keep in remaining and _id(wb, "other") in remaining and len(remaining) == 2
    assert view.groups == []
    view.undo()
    assert len(wb.catalog.query(limit=None)) == 4
    assert len(view.groups) == 1


def test_block_norm_grid_for_comparison(wb: workbench.Workbench) -> None:
    wb.weights.analyze(progress=False)
    ids = [_id(wb, "a_peft"), _id(wb, "other")]
    figure = block_norms_grid([wb.weights.get(i) for i in ids], ["a_peft", "other"])
    heat = figure.data[0]
    assert list(heat.y) == ["a_peft", "other"]
    assert list(heat.x)[0] == "TE"
    for row in heat.z:
        assert abs(sum(v for v in row if v is not None) - 1) < 1e-6


def test_weights_tab_analyses_the_library_and_follows_the_picker(wb: workbench.Workbench) -> None:
    from workbench.views.library import dashboard_tabs
    from workbench.views.weights import WeightsTab

    tab = WeightsTab(wb)
    assert len(tab.picker.options) == 4
    tab.analyse().join(120)
    assert "4 file(s) analysed" in tab.status.value and tab.run.where == "kernel" and tab.run.bar.value == 1.0
    tab.picker.value = _id(wb, "a_fp16")
    assert "nominal rank <b>4</b>" in tab.panel.summary.value
    tab.compare_pick.value = (_id(wb, "a_fp16"), _id(wb, "other"))
    figure = tab.compare()
    assert len(figure.data[0].y) == 2 and "a_fp16" in figure.data[0].y[0]
    tab.compare_pick.value = (_id(wb, HOSTILE),)
    assert tab.compare().data[0].y[0].startswith("&lt;img src=x")
    tabs = dashboard_tabs(wb)
    titles = [tabs.get_title(i) for i in range(len(tabs.children))]
    assert "Weights" in titles


def test_recommend_similar_by_weights(wb: workbench.Workbench) -> None:
    from workbench.views.recommend import RecommendPanel

    panel = RecommendPanel(wb)
    panel.mode.value = "similar"
    assert panel.similar_by.layout.display == "" and panel.lora.layout.display == ""
    me = _id(wb, "a_peft")
    label = next(n for n, i in panel._names.items() if i == me)
    panel.lora.value, panel.similar_by.value = label, "weights"
    panel._safe(panel.run)  # what the button does: nothing analysed yet, a clear message
    assert "has not been analysed yet" in panel.status.value and "Analyse weights" in panel.status.value
    wb.weights.analyze([me], progress=False)
    panel._safe(panel.run)  # analysed, but no other LoRA of its family is
    assert panel.results.empty and "no other LoRA of its base-model family" in panel.status.value
    wb.weights.analyze(progress=False)
    results = panel.run()
    assert set(results["id"][:2]) == {_id(wb, "a_fp16"), _id(wb, HOSTILE)} and me not in set(results["id"])
    assert (results["cosine"][:2] > 0.999).all() and abs(results["cosine"].iloc[-1]) < 0.2  # "other" comes last
    assert results.attrs["by"] == "weights" and "by weights" in panel.status.value
    cards = " ".join(c.children[0].value for c in panel.cards.children)
    assert "cosine of the weight deltas" in cards and HOSTILE not in cards and "&lt;img src=x" in cards
    assert "semantic" not in cards  # no description scores behind a weights result
    # the API: Recommender.similar(by="weights") is wb.weights.similar with catalog rows; exclude works
    direct = wb.recommend.similar(me, k=5, by="weights", exclude=[_id(wb, "a_fp16")])
    assert _id(wb, "a_fp16") not in set(direct["id"]) and {"name", "base_model", "score", "reason"} <= set(direct)
    with pytest.raises(ValueError, match="similar by"):
        wb.recommend.similar(me, by="vibes")
    # back to descriptions: the panel passes the choice through
    wb.recommend.embed(progress=False)
    panel.similar_by.value = "description"
    panel._safe(panel.run)
    assert panel.results.attrs.get("by") != "weights", panel.status.value


def test_a_failed_worker_task_is_reported_without_its_exception_text() -> None:
    from types import SimpleNamespace

    from workbench.views.weights import WeightsRun

    class FailingTasks:  # a shared worker whose weights task failed (the real path is in test_shared_worker.py)
        available = True

        def submit(self, kind: str, ids: list[int] | None = None) -> str:
            assert kind == "weights" and ids == [7]
            return "task-weights-x"

        def get(self, task_id: str) -> dict:
            return {"id": task_id, "state": "failed", "done": 0, "total": 0, "error": "OSError: /secret/path"}

    finished: list[str] = []
    run = WeightsRun(SimpleNamespace(tasks=FailingTasks()), finished.append, poll=0.01)
    run.start([7]).join(30)
    assert run.where == "worker" and run.task_id == "task-weights-x" and finished == []
    assert "failed on the shared worker" in run.status.value and "secret" not in run.status.value
    assert run.bar.bar_style == "danger"


def test_a_worker_task_nobody_takes_is_reported_and_can_be_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from workbench.views.weights import WeightsRun

    class IdleQueue:  # the shared worker is down: the task stays queued
        available = True
        polls = 0

        def submit(self, kind: str, ids: list[int] | None = None) -> str:
            return "task-weights-q"

        def get(self, task_id: str) -> dict:
            IdleQueue.polls += 1
            return {"id": task_id, "state": "queued", "done": 0, "total": 0}

    monkeypatch.setattr("workbench.views.weights.QUEUED_LIMIT_S", 0.2)
    run = WeightsRun(SimpleNamespace(tasks=IdleQueue()), lambda _s: None, poll=0.01)
    thread = run.start([7])
    assert thread is not None
    thread.join(30)
    assert not thread.is_alive() and IdleQueue.polls > 1
    assert "no shared worker started the analysis" in run.status.value and run.bar.bar_style == "danger"
    assert run.start([7]) is not None  # not stuck as "already running"
