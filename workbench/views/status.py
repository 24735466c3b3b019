"""A one-line summary of the library: how many LoRAs, how many missing or unreadable, which roots."""

from __future__ import annotations

import html
from typing import Any

import ipywidgets

from workbench.views._feedback import guarded
from workbench.views._live import catalog_watcher


class StatusView(ipywidgets.HTML):
    """One line about the library: how many LoRAs, how many missing or broken, which roots."""

    def __init__(self, wb: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._wb = wb
        self.add_class("wb-status")
        watcher = catalog_watcher(wb)
        self.refresh()
        self._live = watcher.subscribe(self.refresh)

    def close(self) -> None:
        """Stop following catalog changes, then close the widget."""
        if getattr(self, "_live", None) is not None:
            catalog_watcher(self._wb).unsubscribe(self._live)
        super().close()

    @guarded
    def refresh(self) -> None:
        """Re-read the counts from the catalog."""
        catalog = self._wb.catalog
        total = catalog.count()
        missing = catalog.count(missing=True)
        errors = catalog.count(errors=True)
        roots = ", ".join(str(r) for r in self._wb.roots) or "no library folder yet"
        parts = [f"<b>{total:,}</b> LoRAs"]
        if missing:
            parts.append(f"{missing:,} missing")
        if errors:
            parts.append(f"{errors:,} unreadable")
        self.value = (
            '<span class="wb-status-line">'
            + " · ".join(parts)
            + f' <span style="opacity:.7">— {html.escape(roots)}</span></span>'
        )

    def notify_error(self, message: str) -> None:
        self.value = f"<span>{html.escape(message)}</span>"
