"""The History tab: one anywidget grid of generated images (never one widget per image).

The browser shows a page of result cards and asks for their thumbnails as binary buffers;
filters, rating, favorite, reuse and delete are browser messages from a fixed list, checked
before anything reaches ``wb.history``. Every string (prompts, LoRA names) goes into the DOM as
text in ``widgets/history.js``; Python sends plain data, never HTML.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import ipywidgets as w
import traitlets as t

from workbench.files import ThumbnailCache
from workbench.views._assets import asset_path
from workbench.views._feedback import READ_ONLY_MESSAGE, NoticeWidget, guarded
from workbench.views._live import catalog_watcher
from workbench.views._messages import InvalidMessage, clean_int, clean_text, clean_tristate, json_value

log = logging.getLogger("workbench.views")

PAGE = 48
THUMB_SIZE = 192
LARGE_SIZE = 1024
MAX_THUMBS = 60
DEFAULT_FILTERS: dict[str, Any] = {"text": "", "lora": "", "favorites": None, "min_rating": 0}
#: browser actions that change results (or fill the Generate form): refused in a read-only grid
EDIT_ACTIONS = ("rate", "favorite", "reuse", "delete")


def _clean_filters(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise InvalidMessage("filters must be an object")
    out = dict(DEFAULT_FILTERS)
    if "text" in raw:
        out["text"] = clean_text(raw["text"])
    if "lora" in raw:
        out["lora"] = clean_text(raw["lora"])
    if "favorites" in raw:
        out["favorites"] = clean_tristate(raw["favorites"])
    if "min_rating" in raw:
        out["min_rating"] = clean_int(raw["min_rating"], 0, 5)
    return out


def _clean_id(value: Any) -> str:
    if not isinstance(value, str) or not (1 <= len(value) <= 64) or not all(c in "0123456789abcdef" for c in value):
        raise InvalidMessage("expected a result id")
    return value


class HistoryWidget(NoticeWidget):
    """Grid of result cards; the browser half is ``widgets/history.js``."""

    _esm = asset_path("history.js")
    _css = asset_path("history.css")

    items: t.List[Any] = t.List().tag(sync=True)
    """Cards of the current page: id, prompt, seed, size, loras, rating, favorite, created, backend."""
    total = t.Int(0).tag(sync=True)
    filters = t.Dict(DEFAULT_FILTERS).tag(sync=True)
    offset = t.Int(0).tag(sync=True)
    page_size = t.Int(PAGE).tag(sync=True)
    read_only = t.Bool(False).tag(sync=True)
    """A viewer's grid: no rating, reuse or delete. Shown from this trait, enforced from ``_read_only``."""

    def __init__(self, wb: Any, read_only: bool = False, **kwargs: Any) -> None:
        self._read_only = bool(read_only)  # the browser can set synced traits, never this
        watcher = catalog_watcher(wb)
        super().__init__(read_only=self._read_only, **kwargs)
        self._wb = wb
        self._thumbs = ThumbnailCache(wb.home, [])  # results live under the workbench home only
        self._reuse_callbacks: list[Callable[[Any], None]] = []
        self._preview_callbacks: list[Callable[[int], None]] = []
        self.on_msg(lambda _w, content, _b: self.handle_message(content))
        self.refresh()
        self._live = watcher.subscribe(guarded(self.refresh))

    @t.validate("read_only")
    def _validate_read_only(self, proposal: Any) -> bool:
        return self._read_only

    def close(self) -> None:
        """Stop following catalog changes, then close the widget."""
        if getattr(self, "_live", None) is not None:
            catalog_watcher(self._wb).unsubscribe(self._live)
        super().close()

    # -- public ---------------------------------------------------------------------------
    def refresh(self) -> None:
        """Re-read the current page of results from the catalog."""
        f = self.filters
        args = dict(
            text=f["text"] or None, lora=f["lora"] or None, favorites=f["favorites"], min_rating=f["min_rating"] or None
        )
        frame = self._wb.history.list(limit=self.page_size + 1, offset=self.offset, **args)
        more = len(frame) > self.page_size
        frame = frame.iloc[: self.page_size]
        items = []
        for row in frame.to_dict("records"):
            items.append(
                {
                    "id": str(row["id"]),
                    "prompt": str(row["prompt"] or "")[:500],
                    "seed": json_value(row["seed"]),
                    "size": f"{json_value(row['width'])}x{json_value(row['height'])}",
                    "loras": [str(x)[:120] for x in row["loras"][:8]],
                    "rating": int(row["rating"] or 0),
                    "favorite": bool(row["favorite"]),
                    "created": json_value(row["created_at"]),
                    "backend": str(row["backend"] or ""),
                    "infotext": str(row["infotext"] or "")[:4000],
                }
            )
        with self.hold_sync():
            self.items = items
            self.total = self.offset + len(items) + (1 if more else 0)

    def on_reuse(self, callback: Callable[[Any], None]) -> None:
        """Call ``callback(GenerationRequest)`` when the visitor clicks Reuse on a result."""
        self._reuse_callbacks.append(callback)

    @t.observe("filters", "offset")
    @guarded
    def _changed(self, _change: Any) -> None:
        self.refresh()

    # -- browser messages -------------------------------------------------------------------
    @guarded
    def handle_message(self, content: Any) -> None:
        """Dispatch one browser message; anything not on the whitelist is dropped."""
        if not isinstance(content, dict) or not isinstance(content.get("action"), str):
            log.warning("history: dropped a malformed message")
            return
        handler = self._ACTIONS.get(content["action"])
        if handler is None:
            log.warning("history: dropped unknown action %r", content["action"][:40])
            return
        if self._read_only and content["action"] in EDIT_ACTIONS:
            log.warning("history: refused %s from a read-only page", content["action"])
            self.notify(READ_ONLY_MESSAGE, "error")
            return
        try:
            handler(self, content)
        except InvalidMessage as exc:
            log.warning("history: dropped invalid %s message: %s", content["action"], exc)
        except KeyError:
            self.notify("That image is gone.", "error")
            self.refresh()

    def _act_filter(self, content: dict) -> None:
        filters = _clean_filters(content.get("filters"))
        with self.hold_trait_notifications():
            self.offset = 0
            self.filters = filters

    def _act_page(self, content: dict) -> None:
        self.offset = clean_int(content.get("offset"), 0, 10**9)

    def _act_thumbs(self, content: dict) -> None:
        ids = content.get("ids")
        if not isinstance(ids, list) or len(ids) > MAX_THUMBS:
            raise InvalidMessage("ids must be a short list")
        ids = [_clean_id(i) for i in ids]
        found, buffers = [], []
        paths = self._wb.history.paths(ids)  # one catalog read for the whole page
        for rid in ids:
            path = paths.get(rid)
            # the cache reads only files under the workbench home (its one allowed root)
            data = self._thumbs.get(path, THUMB_SIZE) if path else None
            if data is not None:
                found.append(rid)
                buffers.append(data)
        self.send({"kind": "thumbs", "ids": found}, buffers=buffers)

    def _act_large(self, content: dict) -> None:
        rid = _clean_id(content.get("id"))
        path = self._wb.history.paths([rid]).get(rid)
        data = self._thumbs.get(path, LARGE_SIZE) if path else None
        self.send({"kind": "large", "id": rid, "found": data is not None}, buffers=[data] if data else [])

    def _act_set_preview(self, content: dict) -> None:
        from workbench.catalog import CatalogError

        rid, name = _clean_id(content.get("id")), clean_text(content.get("lora"), 300)
        frame = self._wb.catalog.query(text=None)
        matches = frame[(frame["name"] == name) | (frame["file_name"].str.rsplit(".", n=1).str[0] == name)]
        if matches.empty:
            self.notify(f"{name} is not in the catalog.", "error")
            return
        try:
            self._wb.set_preview(int(matches.iloc[0]["id"]), result_id=rid)
        except CatalogError as exc:  # our own message, safe to show
            self.notify(str(exc), "error")
            return
        self.notify(f"This image is now the preview of {name}.")
        for callback in list(self._preview_callbacks):
            callback(int(matches.iloc[0]["id"]))

    def on_preview_set(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(lora_id)`` after a history image became a LoRA's preview."""
        self._preview_callbacks.append(callback)

    def _act_rate(self, content: dict) -> None:
        rid, rating = _clean_id(content.get("id")), clean_int(content.get("value"), 0, 5)
        self._wb.history.rate(rid, rating)
        self.refresh()

    def _act_favorite(self, content: dict) -> None:
        rid, value = _clean_id(content.get("id")), clean_tristate(content.get("value"))
        if value is None:
            raise InvalidMessage("favorite needs true or false")
        self._wb.history.favorite(rid, value)
        self.refresh()

    def _act_reuse(self, content: dict) -> None:
        request = self._wb.history.reuse(_clean_id(content.get("id")))
        for callback in list(self._reuse_callbacks):
            callback(request)

    def _act_delete(self, content: dict) -> None:
        self._wb.history.delete(_clean_id(content.get("id")))
        self.notify("Deleted.")
        self.refresh()

    _ACTIONS: dict[str, Callable[[HistoryWidget, dict], None]] = {
        "filter": _act_filter,
        "page": _act_page,
        "thumbs": _act_thumbs,
        "rate": _act_rate,
        "favorite": _act_favorite,
        "reuse": _act_reuse,
        "delete": _act_delete,
        "large": _act_large,
        "set_preview": _act_set_preview,
    }


class HistoryView(w.VBox):
    """The History tab (the grid; kept as a box so more controls can join it)."""

    def __init__(self, wb: Any, read_only: bool = False, **kwargs: Any) -> None:
        self._wb = wb
        self.grid = HistoryWidget(wb, read_only=read_only)
        super().__init__([self.grid], **kwargs)
        self.add_class("wb-history")

    def on_reuse(self, callback: Callable[[Any], None]) -> None:
        self.grid.on_reuse(callback)

    def notify(self, text: str) -> None:
        self.grid.notify(text)

    def notify_error(self, text: str) -> None:
        self.grid.notify_error(text)

    @guarded
    def refresh(self) -> None:
        self.grid.refresh()
