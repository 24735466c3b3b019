"""The Library view: status line, gallery and detail panel wired together."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import ipywidgets

from workbench.views._feedback import guarded
from workbench.views.detail import DetailWidget
from workbench.views.examples import ExamplesView
from workbench.views.gallery import PAGE_SIZE, GalleryWidget
from workbench.views.status import StatusView
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


#: builds one or more tabs (title, view) from a workbench
TabBuilder = Callable[[Any], list[tuple[str, ipywidgets.Widget]]]


def _queue_tab(wb: Any, read_only: bool = False) -> list[tuple[str, ipywidgets.Widget]]:
    from workbench.views.queue import QueueView

    return [("Queue", QueueView(wb, read_only=read_only))]


def _history_tab(wb: Any, read_only: bool = False) -> list[tuple[str, ipywidgets.Widget]]:
    from workbench.views.history import HistoryView

    return [("History", HistoryView(wb, read_only=read_only))]


def _viewer_builders() -> list[tuple[tuple[str, ...], TabBuilder]]:
    return [
        (("Queue",), lambda wb: _queue_tab(wb, read_only=True)),
        (("History",), lambda wb: _history_tab(wb, read_only=True)),
    ]


def _editor_builders() -> list[tuple[tuple[str, ...], TabBuilder]]:
    """The tabs after the Library, in order: (their titles, what builds them). Imports happen on first use."""

    def recommend(wb: Any) -> list[tuple[str, ipywidgets.Widget]]:
        from workbench.views.recommend import recommend_tab

        return [("Recommend", recommend_tab(wb))]

    def generation(wb: Any) -> list[tuple[str, ipywidgets.Widget]]:
        from workbench.views.generate import generation_tabs

        return generation_tabs(wb)

    def weights(wb: Any) -> list[tuple[str, ipywidgets.Widget]]:
        from workbench.views.weights import weights_tab

        return [("Weights", weights_tab(wb))]

    def analytics(wb: Any) -> list[tuple[str, ipywidgets.Widget]]:
        from workbench.views.analytics import analytics_tab

        return [("Analytics", analytics_tab(wb))]

    def status(wb: Any) -> list[tuple[str, ipywidgets.Widget]]:
        from workbench.views.system import status_tab

        return [("Status", status_tab(wb))]

    def maintenance(wb: Any) -> list[tuple[str, ipywidgets.Widget]]:
        from workbench.views.maintenance import maintenance_tab

        return [("Maintenance", maintenance_tab(wb))]

    return [
        (("Recommend",), recommend),
        (("Generate", "Queue", "History", "Compare"), generation),
        (("Weights",), weights),
        (("Analytics",), analytics),
        (("Status",), status),
        (("Maintenance",), maintenance),
    ]


def viewer_tabs(wb: Any) -> list[tuple[str, ipywidgets.Widget]]:
    """A viewer's tabs: Library, Queue and History, with no editing or generating control."""
    tabs: list[tuple[str, ipywidgets.Widget]] = [("Library", library_view(wb, read_only=True))]
    for _, build in _viewer_builders():
        tabs.extend(build(wb))
    return tabs


class DashboardTabs(ipywidgets.Tab):
    """The dashboard's tabs; each view but the Library is built the first time its tab is shown.

    A visitor's page opens on the Library, so only its widgets exist then: the kernel runs the
    notebook in a fraction of the time, holds less memory, and the page has ~50 widget models to
    create before the first cards instead of ~400. Until built, a tab holds an empty placeholder.
    A view that fails to build is logged on the server and its tab removed, never left as a
    placeholder. :meth:`build_all` builds every tab now (scripts and tests).
    """

    children: Any  # the Tab's trait (a bare annotation: no class attribute shadows it)

    def __init__(self, wb: Any, first: list[tuple[str, ipywidgets.Widget]], later: list[Any]) -> None:
        self._wb = wb
        self._pending: dict[int, tuple[tuple[str, ...], TabBuilder]] = {}  # placeholder model id -> group
        self._views: dict[int, ipywidgets.Widget] = {}  # placeholder model id -> the view built into it
        entries = list(first)
        for titles, build in later:
            for title in titles:
                holder = ipywidgets.Box(layout=ipywidgets.Layout(min_height="200px"))
                holder.add_class("wb-tab-pending")
                self._pending[id(holder)] = (titles, build)
                entries.append((title, holder))
        super().__init__(children=[widget for _, widget in entries], titles=[title for title, _ in entries])
        self.add_class("wb-dashboard")
        for _, widget in first:
            self._wire(widget)
        self.observe(self._selected, names=["selected_index"])

    def _wire(self, widget: ipywidgets.Widget, tab: ipywidgets.Widget | None = None) -> None:
        """``tab``: the child of the tab bar that shows ``widget`` (itself, or its placeholder)."""
        shown = widget if tab is None else tab
        if hasattr(widget, "on_reveal"):  # e.g. History's Reuse shows the Generate tab
            widget.on_reveal(lambda: setattr(self, "selected_index", self.children.index(shown)))

    @property
    def pending(self) -> list[str]:
        """Titles of the tabs not built yet."""
        return [self.get_title(i) for i, child in enumerate(self.children) if id(child) in self._pending]

    def build_all(self) -> DashboardTabs:
        """Build every tab not built yet (in order); returns the tabs."""
        while True:
            waiting = [i for i, child in enumerate(self.children) if id(child) in self._pending]
            if not waiting:
                return self
            self._build(waiting[0])

    def _selected(self, change: Any) -> None:
        index = change["new"]
        try:  # a widget callback: an error here would vanish in the comm layer
            if index is not None and 0 <= index < len(self.children) and id(self.children[index]) in self._pending:
                self._build(index)
        except Exception:
            log.exception("dashboard: opening tab %s failed", index)

    def _build(self, index: int) -> None:
        """Build the group of views the tab at ``index`` belongs to, each into its placeholder.

        The tab list itself is left alone (the browser's tab bar moves its selection when its children
        are replaced); only a view that failed to build takes its tab out.
        """
        titles, build = self._pending[id(self.children[index])]
        group = {key for key, (_, other) in self._pending.items() if other is build}
        try:
            built = dict(build(self._wb))
        except Exception:
            log.exception("dashboard: the %s tab failed to build; left out", "/".join(titles))
            built = {}
        for key in group:
            del self._pending[key]
        failed = []
        for i, holder in enumerate(self.children):
            if id(holder) not in group:
                continue
            view = built.get(self.get_title(i))
            if view is None:
                failed.append(i)
                continue
            holder.children = (view,)
            holder.layout.min_height = None
            holder.remove_class("wb-tab-pending")
            self._views[id(holder)] = view
            self._wire(view, holder)
        if failed:
            keep = [i for i in range(len(self.children)) if i not in failed]
            clicked = self.children[index]
            with self.hold_sync():
                titles_now = [self.get_title(i) for i in keep]
                self.children = [self.children[i] for i in keep]
                self.titles = titles_now
                self.selected_index = self.children.index(clicked) if clicked in self.children else 0

    def view(self, title: str) -> ipywidgets.Widget:
        """The view shown under tab ``title`` (built first if it was not yet)."""
        index = list(self.titles).index(title)
        if id(self.children[index]) in self._pending:
            self._build(index)
            index = list(self.titles).index(title)
        holder = self.children[index]
        return self._views.get(id(holder), holder)


def dashboard_tabs(wb: Any, read_only: bool | None = None) -> DashboardTabs:
    """The dashboard: Library, Recommend, the generation tabs (Generate, Queue, History, Compare), Weights,
    Analytics, Status and Maintenance; each but the Library built when first shown (see :class:`DashboardTabs`).

    A tab whose view fails to build (say, a backend misconfigured) is left out and logged on the
    server, never shown as a placeholder; the Library always comes first. ``read_only`` (default: the
    role ``workbench dashboard --read-only`` gave this kernel) gives a viewer's tabs: Library, Queue, History.
    """
    if read_only is None:
        from workbench.dashboard import dashboard_read_only

        read_only = dashboard_read_only()
    if read_only:
        tab = DashboardTabs(wb, [("Library", library_view(wb, read_only=True))], _viewer_builders())
        tab.add_class("wb-read-only")
        return tab
    return DashboardTabs(wb, [("Library", library_view(wb))], _editor_builders())
