"""The Library view: status line, gallery and detail panel wired together."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import ipywidgets

from workbench.views._feedback import guarded
from workbench.views.analytics import analytics_tab
from workbench.views.detail import DetailWidget
from workbench.views.examples import ExamplesView
from workbench.views.gallery import PAGE_SIZE, GalleryWidget
from workbench.views.maintenance import maintenance_tab
from workbench.views.status import StatusView
from workbench.views.system import status_tab
from workbench.views.weights import WeightsPanel

log = logging.getLogger("workbench.views")


class LibraryView(ipywidgets.VBox):
    """Browse, filter, select and edit the LoRAs of a workbench.

    Attributes:
        gallery: the :class:`GalleryWidget` (its ``filters``, ``selected``, ``active_id``).
        detail: the :class:`DetailWidget` of the opened card.
        weights: the :class:`WeightsPanel` of the opened card (block heatmap, rank, similar by weights).
        status: the one-line :class:`StatusView`.
    """

    def __init__(self, wb: Any, page_size: int = PAGE_SIZE, read_only: bool = False, **kwargs: Any) -> None:
        self.status = StatusView(wb)
        self.gallery = GalleryWidget(
            wb, page_size=page_size, read_only=read_only, layout=ipywidgets.Layout(flex="3 1 0", min_width="0")
        )
        self.detail = DetailWidget(
            wb,
            read_only=read_only,
            layout=ipywidgets.Layout(
                flex="2 1 0",
                min_width="280px",
                max_height="820px",
                overflow="auto",
                margin="0 0 0 12px",
                display="none",  # shown when a card is opened: until then the gallery uses the whole width
            ),
        )
        self.examples = ExamplesView(wb, layout=ipywidgets.Layout(margin="0 0 0 12px"))  # Civitai examples
        # weight-space analysis of the open card: filled (figure built) only when a card opens
        self.weights = WeightsPanel(
            wb,
            read_only=read_only,
            background_similar=True,
            title="Weights",
            layout=ipywidgets.Layout(margin="0 0 0 12px"),
        )
        # the detail column (detail + weights + Civitai examples) is shown when a card is opened: until then the
        # gallery uses the whole width
        self.side = ipywidgets.VBox(
            [self.detail, self.weights, self.examples],
            layout=ipywidgets.Layout(flex="2 1 0", min_width="280px", display="none"),
        )
        self.detail.layout.flex = "none"
        body = ipywidgets.HBox([self.gallery, self.side], layout=ipywidgets.Layout(width="100%"))
        super().__init__([self.status, body], **kwargs)
        self.add_class("wb-library")
        self.gallery.observe(self._opened, names=["active_id"])
        self.gallery.on_change(self._gallery_changed)
        self.detail.on_saved(self._detail_saved)
        self.detail.on_open(self._detail_opens)

    @guarded
    def _opened(self, change: Any) -> None:
        self.detail.load(change["new"])
        self.weights.show(change["new"])
        self.examples.load(change["new"])
        shown = None if change["new"] is not None else "none"
        self.detail.layout.display = self.side.layout.display = shown

    @guarded
    def _gallery_changed(self, ids: list[int] | None) -> None:
        self.status.refresh()
        current = self.detail.lora_id
        if current is not None and (ids is None or current in ids):
            self.detail.load(self.gallery.active_id)

    @guarded
    def _detail_saved(self, lora_id: int) -> None:
        self.gallery.refresh_facets()
        self.gallery.refresh()
        self.status.refresh()

    @guarded
    def _detail_opens(self, lora_id: int) -> None:
        self.gallery.active_id = lora_id

    def notify_error(self, message: str) -> None:
        self.gallery.notify_error(message)


def library_view(wb: Any, page_size: int = PAGE_SIZE, read_only: bool = False) -> LibraryView:
    """The Library tab of the dashboard: gallery and detail panel over ``wb``'s catalog."""
    return LibraryView(wb, page_size=page_size, read_only=read_only)


def viewer_tabs(wb: Any) -> list[tuple[str, ipywidgets.Widget]]:
    """A viewer's tabs: Library, Queue and History, with no editing or generating control."""
    from workbench.views.history import HistoryView
    from workbench.views.queue import QueueView

    return [
        ("Library", library_view(wb, read_only=True)),
        ("Queue", QueueView(wb, read_only=True)),
        ("History", HistoryView(wb, read_only=True)),
    ]


def dashboard_tabs(wb: Any, read_only: bool | None = None) -> ipywidgets.Tab:
    """The dashboard: Library, Recommend, the generation tabs (Generate, Queue, History, Compare) and Weights.

    A tab whose view fails to build (say, a backend misconfigured) is left out and logged on the
    server, never shown as a placeholder; the Library always comes first. ``read_only`` (default: the
    role ``workbench dashboard --read-only`` gave this kernel) builds :func:`viewer_tabs` instead.
    """
    from workbench.views.generate import generation_tabs
    from workbench.views.recommend import recommend_tab
    from workbench.views.weights import weights_tab

    if read_only is None:
        from workbench.dashboard import dashboard_read_only

        read_only = dashboard_read_only()
    if read_only:
        tab = _tab_widget(viewer_tabs(wb))
        tab.add_class("wb-read-only")
        return tab
    tabs: list[tuple[str, ipywidgets.Widget]] = [("Library", library_view(wb))]
    builders: list[tuple[str, Callable[[Any], list[tuple[str, ipywidgets.Widget]]]]] = [
        ("Recommend", lambda wb: [("Recommend", recommend_tab(wb))]),
        ("Generate", generation_tabs),
        ("Weights", lambda wb: [("Weights", weights_tab(wb))]),
    ]
    for title, builder in builders:
        try:
            tabs.extend(builder(wb))
        except Exception:
            log.exception("dashboard: the %s tab failed to build; left out", title)
    for title, build in (("Analytics", analytics_tab), ("Status", status_tab), ("Maintenance", maintenance_tab)):
        try:
            tabs.append((title, build(wb)))
        except Exception:
            log.exception("dashboard: the %s tab failed to build; left out", title)
    return _tab_widget(tabs)


def _tab_widget(tabs: list[tuple[str, ipywidgets.Widget]]) -> ipywidgets.Tab:
    tab = ipywidgets.Tab(children=[widget for _, widget in tabs])
    for index, (title, _) in enumerate(tabs):
        tab.set_title(index, title)
    tab.add_class("wb-dashboard")
    for index, (_, widget) in enumerate(tabs):  # e.g. History's Reuse shows the Generate tab
        if hasattr(widget, "on_reveal"):
            widget.on_reveal(lambda index=index: setattr(tab, "selected_index", index))
    return tab
