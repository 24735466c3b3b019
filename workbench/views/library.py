"""The Library view: status line, gallery and detail panel wired together."""

from __future__ import annotations

import logging
from typing import Any

import ipywidgets

from workbench.views._feedback import guarded
from workbench.views.analytics import analytics_tab
from workbench.views.detail import DetailWidget
from workbench.views.gallery import PAGE_SIZE, GalleryWidget
from workbench.views.maintenance import maintenance_tab
from workbench.views.status import StatusView
from workbench.views.system import status_tab

log = logging.getLogger("workbench.views")


class LibraryView(ipywidgets.VBox):
    """Browse, filter, select and edit the LoRAs of a workbench.

    Attributes:
        gallery: the :class:`GalleryWidget` (its ``filters``, ``selected``, ``active_id``).
        detail: the :class:`DetailWidget` of the opened card.
        status: the one-line :class:`StatusView`.
    """

    def __init__(self, wb: Any, page_size: int = PAGE_SIZE, **kwargs: Any) -> None:
        self.status = StatusView(wb)
        self.gallery = GalleryWidget(wb, page_size=page_size, layout=ipywidgets.Layout(flex="3 1 0", min_width="0"))
        self.detail = DetailWidget(
            wb,
            layout=ipywidgets.Layout(
                flex="2 1 0", min_width="280px", max_height="820px", overflow="auto", margin="0 0 0 12px"
            ),
        )
        body = ipywidgets.HBox([self.gallery, self.detail], layout=ipywidgets.Layout(width="100%"))
        super().__init__([self.status, body], **kwargs)
        self.add_class("wb-library")
        self.gallery.observe(self._opened, names=["active_id"])
        self.gallery.on_change(self._gallery_changed)
        self.detail.on_saved(self._detail_saved)
        self.detail.on_open(self._detail_opens)

    @guarded
    def _opened(self, change: Any) -> None:
        self.detail.load(change["new"])

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


def library_view(wb: Any, page_size: int = PAGE_SIZE) -> LibraryView:
    """The Library tab of the dashboard: gallery and detail panel over ``wb``'s catalog."""
    return LibraryView(wb, page_size=page_size)


def _as_tabs(built: Any, default_title: str) -> list[tuple[str, ipywidgets.Widget]]:
    """Accept what a tab builder returns: a widget, ``(title, widget)`` pairs or ``{title: widget}``."""
    if isinstance(built, ipywidgets.Widget):
        return [(default_title, built)]
    if isinstance(built, dict):
        built = list(built.items())
    pairs = []
    for item in built or ():
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], ipywidgets.Widget):
            pairs.append((str(item[0]), item[1]))
    return pairs


def dashboard_tabs(wb: Any) -> ipywidgets.Tab:
    """The dashboard: a Library tab, plus Recommend / Generate / History tabs when those views work.

    A later capability whose view is not installed or fails to build is left out (and
    logged on the server), never shown as a placeholder.
    """
    tabs: list[tuple[str, ipywidgets.Widget]] = [("Library", library_view(wb))]
    builders = (
        ("workbench.views.recommend", "recommend_tab", "Recommend"),
        ("workbench.views.generate", "generation_tabs", "Generate"),
    )
    for module_name, function_name, title in builders:
        try:
            module = __import__(module_name, fromlist=[function_name])
            builder = getattr(module, function_name)
        except (ImportError, AttributeError):
            log.info("dashboard: %s.%s is not available; no %s tab", module_name, function_name, title)
            continue
        try:
            tabs.extend(_as_tabs(builder(wb), title))
        except Exception:
            log.exception("dashboard: %s.%s failed; no %s tab", module_name, function_name, title)
    for title, build in (("Analytics", analytics_tab), ("Status", status_tab), ("Maintenance", maintenance_tab)):
        try:
            tabs.append((title, build(wb)))
        except Exception:
            log.exception("dashboard: the %s tab failed to build; left out", title)
    tab = ipywidgets.Tab(children=[widget for _, widget in tabs])
    for index, (title, _) in enumerate(tabs):
        tab.set_title(index, title)
    tab.add_class("wb-dashboard")
    return tab
