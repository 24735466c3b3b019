"""The gallery: one anywidget for the whole grid of LoRA cards.

The browser keeps a virtual-scrolled grid and asks for pages of rows and for the
thumbnails of the cards it shows; filtering, sorting and paging run in the catalog.
Every message from the browser is an action from a fixed list, with arguments checked
for type, range and existence before anything reaches the catalog.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import traitlets as t

from workbench.catalog import LoraFilters
from workbench.files import DEFAULT_SIZE, ThumbnailCache, preview_source
from workbench.views._assets import asset_path
from workbench.views._feedback import READ_ONLY_MESSAGE, NoticeWidget, guarded
from workbench.views._live import catalog_watcher
from workbench.views._messages import (
    MAX_SELECTION,
    MAX_TEXT,
    InvalidMessage,
    clean_ids,
    clean_int,
    clean_strings,
    clean_text,
    clean_tristate,
    json_value,
)

log = logging.getLogger("workbench.views")

#: Sort keys offered in the browser -> the catalog's ``sort`` argument.
SORTS: dict[str, str] = {
    "name": "name",
    "added": "added",
    "modified": "modified",
    "size": "size",
    "rating": "rating",
    "usage": "usage",
    "random": "random",
}
TAG_MODES = ("all", "any")
#: Sorts that start from the largest value (best rated, most used, newest, biggest); the others ascend.
DESCENDING_FIRST = ("rating", "usage", "added", "modified", "size")
#: The base-model filter's entry for LoRAs whose base model is not known.
UNKNOWN_BASE = "unknown"
#: Removing more LoRAs than this at once needs ``confirmed: true`` in the message (the browser asks first).
CONFIRM_REMOVE_OVER = 1
MAX_PRESETS = 100
PAGE_SIZE = 100
MAX_PAGE_SIZE = 500
MAX_THUMBS_PER_REQUEST = 120
BULK_OPS = ("add_tags", "remove_tags", "favorite", "rating", "set_base_model", "remove")
#: browser actions that change the catalog: refused in a read-only gallery
EDIT_ACTIONS = ("favorite", "bulk", "undo")
_TRISTATE_KEYS = ("favorites", "has_preview", "missing", "errors")

DEFAULT_FILTERS: dict[str, Any] = {
    "text": "",
    "fuzzy": False,
    "tags": [],
    "tag_mode": "all",
    "exclude_tags": [],
    "base_models": [],
    "folder": "",
    "formats": [],
    "favorites": None,
    "has_preview": None,
    "missing": None,
    "errors": None,
    "updates": None,
    "sort": "name",
    "descending": False,
    "seed": 0,
}


# ----------------------------------------------------------------------------------------
# validation of browser input
# ----------------------------------------------------------------------------------------


def clean_filters(raw: Any) -> dict[str, Any]:
    """Normalise a filter dict from the browser (unknown keys dropped, values checked)."""
    if not isinstance(raw, dict):
        raise InvalidMessage("filters must be an object")
    filters = dict(DEFAULT_FILTERS)
    if "text" in raw:
        filters["text"] = clean_text(raw["text"])
    if "fuzzy" in raw:
        filters["fuzzy"] = bool(clean_tristate(raw["fuzzy"]))
    if "tags" in raw:
        filters["tags"] = clean_strings(raw["tags"], limit=20, item_limit=100)
    if "tag_mode" in raw:
        if raw["tag_mode"] not in TAG_MODES:
            raise InvalidMessage("tag_mode must be 'all' or 'any'")
        filters["tag_mode"] = raw["tag_mode"]
    if "exclude_tags" in raw:
        filters["exclude_tags"] = clean_strings(raw["exclude_tags"], limit=20, item_limit=100)
    if "base_models" in raw:
        filters["base_models"] = clean_strings(raw["base_models"], limit=50, item_limit=64)
    if "folder" in raw:
        filters["folder"] = clean_text(raw["folder"], 1000)
    if "formats" in raw:
        filters["formats"] = clean_strings(raw["formats"], limit=10, item_limit=20)
    for key in _TRISTATE_KEYS:
        if key in raw:
            filters[key] = clean_tristate(raw[key])
    if "updates" in raw:  # Civitai "update available" (not a catalog column: the widget turns it into ids)
        filters["updates"] = clean_tristate(raw["updates"])
    if "sort" in raw:
        if raw["sort"] not in SORTS:
            raise InvalidMessage(f"unknown sort {raw['sort']!r}")
        filters["sort"] = raw["sort"]
    if "descending" in raw:
        filters["descending"] = bool(clean_tristate(raw["descending"]))
    if "seed" in raw:
        filters["seed"] = clean_int(raw["seed"], 0, 2**31 - 1)
    return filters


def query_arguments(filters: dict[str, Any]) -> LoraFilters:
    """Catalog ``query``/``count`` keyword arguments for a cleaned filter dict."""
    tags = filters["tags"] or None
    args: LoraFilters = {
        "text": filters["text"] or None,
        "fuzzy": filters["fuzzy"],
        "tags_all": tags if filters["tag_mode"] == "all" else None,
        "tags_any": tags if filters["tag_mode"] == "any" else None,
        "tags_none": filters["exclude_tags"] or None,
        "base_models": [None if b == UNKNOWN_BASE else b for b in filters["base_models"]] or None,
        "folder": filters["folder"] or None,
        "formats": filters["formats"] or None,
    }
    args["favorites"], args["has_preview"] = filters["favorites"], filters["has_preview"]
    args["missing"], args["errors"] = filters["missing"], filters["errors"]
    return args


# ----------------------------------------------------------------------------------------
# catalog rows -> JSON for the browser
# ----------------------------------------------------------------------------------------


def _is_true(value: Any) -> bool:
    value = json_value(value)
    return bool(value) if value is not None else False


def _short_list(value: Any, count: int, item_limit: int = 60) -> list[str]:
    if value is None or isinstance(value, (str, float)):
        return []
    return [str(v)[:item_limit] for v in list(value)[:count] if v is not None]


#: (no ``file_name``: the catalog's ``name`` already falls back to it)
_CARD_COLUMNS = (
    "id",
    "name",
    "base_model",
    "rank",
    "network_type",
    "format",
    "trigger_words",
    "tags",
    "favorite",
    "rating",
    "missing",
    "error",
    "has_preview",
)
#: what finds a card's thumbnail (see ``workbench.files.preview_source``)
_PREVIEW_COLUMNS = ("preview_path", "preview_embedded", "path")


def _plain(value: Any) -> Any:
    """None for pandas' missing markers, else the value (cheap: this runs for every card cell)."""
    if value is None or (isinstance(value, float) and value != value) or type(value).__name__ in ("NAType", "NaTType"):
        return None
    return value


def card_rows(frame: Any) -> list[dict[str, Any]]:
    """The few fields a card shows, from a catalog query DataFrame."""
    columns = [c for c in _CARD_COLUMNS if c in frame.columns]
    values = [frame[c].tolist() for c in columns]  # column-wise: much faster than to_dict("records")
    rows = []
    for record in (dict(zip(columns, cells)) for cells in zip(*values)):
        error = _plain(record.get("error"))
        rank = _plain(record.get("rank"))
        name = _plain(record.get("name")) or _plain(record.get("file_name")) or ""
        rows.append(
            {
                "id": int(record["id"]),
                "name": str(name)[:MAX_TEXT],
                "base_model": _plain(record.get("base_model")),
                "rank": int(rank) if rank is not None else None,
                "network_type": _plain(record.get("network_type")),
                "format": _plain(record.get("format")),
                "trigger_words": _short_list(record.get("trigger_words"), 4),
                "tags": _short_list(record.get("tags"), 6, 40),
                "favorite": bool(_plain(record.get("favorite"))),
                "rating": int(_plain(record.get("rating")) or 0),
                "missing": bool(_plain(record.get("missing"))),
                "error": str(error)[:MAX_TEXT] if error else None,
                "has_preview": bool(_plain(record.get("has_preview"))),
            }
        )
    return rows


#: catalog facet names -> the names the browser uses
_FACET_NAMES = {
    "base_model": "base_models",
    "format": "formats",
    "network_type": "network_types",
    "folder": "folders",
    "tags": "tags",
}


def facet_lists(facets: dict[str, list[tuple[str, int]]]) -> dict[str, list[list[Any]]]:
    """The catalog's facets as the filter controls name them; a LoRA without a base model counts as
    "unknown" (a filter value of its own), other empty values are left out."""
    out: dict[str, list[list[Any]]] = {}
    for column, pairs in facets.items():
        name = _FACET_NAMES.get(column)
        if name is None:
            continue
        if name == "base_models":
            pairs = [(value or UNKNOWN_BASE, count) for value, count in pairs]
        out[name] = [[str(value)[:MAX_TEXT], int(count)] for value, count in pairs if value]
    return out


# ----------------------------------------------------------------------------------------
# the widget
# ----------------------------------------------------------------------------------------


class GalleryWidget(NoticeWidget):
    """Virtual-scrolled grid of every LoRA in the catalog that matches the filters.

    Args:
        wb: an open ``workbench.Workbench``.
        page_size: rows per page the browser fetches.
    """

    _esm = asset_path("gallery.js")
    _css = asset_path("gallery.css")

    filters = t.Dict(DEFAULT_FILTERS).tag(sync=True)
    """Current search, filters and sort (see ``DEFAULT_FILTERS``)."""
    total = t.Int(0).tag(sync=True)
    """How many LoRAs match the filters."""
    first_rows: t.List[Any] = t.List().tag(sync=True)
    """Cards of the first page, so a fresh view can paint without a round trip."""
    generation = t.Int(0).tag(sync=True)
    """Bumped whenever the rows change; the browser drops pages of older generations."""
    scroll_token = t.Int(0).tag(sync=True)
    """Bumped when the filters change, telling the browser to scroll back to the top."""
    page_size = t.Int(PAGE_SIZE).tag(sync=True)
    facets = t.Dict().tag(sync=True)
    """``{"base_models"|"formats"|"folders"|"tags": [[value, count], ...]}`` for the filter controls."""
    sorts = t.List(list(SORTS)).tag(sync=True)
    descending_first = t.List(list(DESCENDING_FIRST)).tag(sync=True)
    """Sorts whose first click orders from the largest value (rating: best first)."""
    selected = t.List(t.Int()).tag(sync=True)
    """Ids of the selected cards (bulk actions apply to them)."""
    active_id = t.Int(None, allow_none=True).tag(sync=True)
    """Id of the card opened in the detail panel."""
    can_undo = t.Bool(False).tag(sync=True)
    presets = t.List(t.Unicode()).tag(sync=True)
    """Names of the saved filter presets (shared by everyone using this catalog)."""
    """Last message for the visitor (``seq`` makes repeats visible)."""
    read_only = t.Bool(False).tag(sync=True)
    """A viewer's gallery: no editing controls. Shown from this trait, enforced from ``_read_only``."""

    def __init__(
        self,
        wb: Any,
        page_size: int = PAGE_SIZE,
        thumbnail_size: int = DEFAULT_SIZE,
        read_only: bool = False,
        **kwargs: Any,
    ) -> None:
        self._read_only = bool(read_only)  # the browser can set synced traits, never this
        watcher = catalog_watcher(wb)  # before the first read, so no change slips between the two
        super().__init__(page_size=max(10, min(int(page_size), MAX_PAGE_SIZE)), read_only=self._read_only, **kwargs)
        self._wb = wb
        self._thumbnail_size = thumbnail_size
        self._thumbnails = ThumbnailCache(wb.home, wb.roots)
        self._change_callbacks: list[Callable[[list[int] | None], None]] = []
        self.on_msg(self._on_custom_msg)
        self.refresh_facets()
        self.refresh(reset_scroll=True)
        self._refresh_presets()
        self._live = watcher.subscribe(self._catalog_changed)

    # -- public API ---------------------------------------------------------------------

    @property
    def catalog(self) -> Any:
        return self._wb.catalog

    def on_change(self, callback: Callable[[list[int] | None], None]) -> None:
        """Call ``callback(ids)`` after the gallery changed LoRAs (ids None: unknown/all)."""
        self._change_callbacks.append(callback)

    def _query_arguments(self) -> dict[str, Any]:
        """The catalog query the grid shows: its filters, its update marks' window and its sort."""
        filters = self.filters
        return {**query_arguments(filters), **self._update_arguments(filters), **self._sort_arguments(filters)}

    def query_frame(self, limit: int | None = None, offset: int = 0) -> Any:
        """The catalog rows behind the grid, as a pandas DataFrame."""
        return self.catalog.query(**self._query_arguments(), limit=limit, offset=offset)

    def _card_page(self, offset: int) -> tuple[list[dict[str, Any]], int]:
        """One page of cards from ``offset`` (only the columns a card shows) and the grid's total."""
        frame, total = self.catalog.page_columns(
            _CARD_COLUMNS, limit=self.page_size, offset=offset, **self._query_arguments()
        )
        return self._mark_updates(card_rows(frame)), total

    def refresh(self, reset_scroll: bool = False) -> None:
        """Re-run the current query (after filters or data changed) and repaint the grid."""
        first, total = self._card_page(0)
        with self.hold_sync():
            self.total = total
            self.first_rows = first
            self.generation += 1
            if reset_scroll:
                self.scroll_token += 1

    def refresh_facets(self) -> None:
        """Re-read the values the filter controls offer."""
        self.facets = facet_lists(self.catalog.facets())

    def set_filters(self, **changes: Any) -> None:
        """Change some filters from Python, e.g. ``gallery.set_filters(text="castle")``."""
        self.filters = clean_filters({**self.filters, **changes})

    # -- traits -------------------------------------------------------------------------

    @t.validate("filters")
    def _validate_filters(self, proposal: Any) -> dict[str, Any]:
        try:
            return clean_filters(proposal["value"])
        except InvalidMessage as exc:
            raise t.TraitError(str(exc)) from exc

    @t.validate("read_only")
    def _validate_read_only(self, proposal: Any) -> bool:
        return self._read_only

    @t.validate("page_size")
    def _validate_page_size(self, proposal: Any) -> int:
        return max(10, min(int(proposal["value"]), MAX_PAGE_SIZE))

    @t.validate("selected")
    def _validate_selected(self, proposal: Any) -> list[int]:
        return clean_ids(proposal["value"])

    @t.observe("filters")
    @guarded
    def _filters_changed(self, change: Any) -> None:
        self.refresh(reset_scroll=True)

    @guarded
    def _catalog_changed(self) -> None:
        """Another visitor, a notebook, a scan or a worker changed the catalog: repaint."""
        self.refresh_facets()
        self.refresh()

    def close(self) -> None:
        """Stop following catalog changes, then close the widget."""
        if getattr(self, "_live", None) is not None:
            catalog_watcher(self._wb).unsubscribe(self._live)
        super().close()

    # -- browser messages -----------------------------------------------------------------

    def _on_custom_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        self.handle_message(content)

    @guarded
    def handle_message(self, content: Any) -> None:
        """Dispatch one browser message; anything not on the whitelist is dropped."""
        if not isinstance(content, dict):
            log.warning("gallery: dropped a message that is not an object")
            return
        action = content.get("action")
        handler = self._ACTIONS.get(action) if isinstance(action, str) else None
        if handler is None:
            log.warning("gallery: dropped unknown action %r", str(action)[:40])
            return
        if self._read_only and action in EDIT_ACTIONS:
            log.warning("gallery: refused %s from a read-only page", action)
            self.notify(READ_ONLY_MESSAGE, "error")
            return
        try:
            handler(self, content)
        except InvalidMessage as exc:
            log.warning("gallery: dropped invalid %s message: %s", action, exc)

    def _act_filter(self, content: dict[str, Any]) -> None:
        filters = clean_filters(content.get("filters"))
        if filters["sort"] != self.filters["sort"]:  # a new sort starts where people expect (rating: best first)
            filters["descending"] = filters["sort"] in DESCENDING_FIRST
        self.filters = filters

    def _act_rows(self, content: dict[str, Any]) -> None:
        generation = clean_int(content.get("generation"), 0, 2**62)
        offset = clean_int(content.get("offset"), 0, max(self.total, 0))
        if generation != self.generation:
            return  # the browser will ask again for the current generation
        rows, _ = self._card_page(offset)
        self.send({"kind": "rows", "generation": generation, "offset": offset, "rows": rows})

    def _act_thumbs(self, content: dict[str, Any]) -> None:
        ids = clean_ids(content.get("ids"), limit=MAX_THUMBS_PER_REQUEST)
        if not ids:
            return
        frame, _ = self.catalog.page_columns(_PREVIEW_COLUMNS, limit=len(ids), ids=ids)
        previews = {int(r["id"]): preview_source(r) for r in frame.to_dict("records")}
        images = self._thumbnails.get_many(previews, self._thumbnail_size)
        found = [i for i in ids if i in images]
        self.send(
            {"kind": "thumbs", "ids": found, "none": [i for i in ids if i not in images]},
            buffers=[images[i] for i in found],
        )

    def _act_open(self, content: dict[str, Any]) -> None:
        lora_id = clean_int(content.get("id"), 0, 2**62)
        if not self._existing([lora_id]):
            raise InvalidMessage(f"no LoRA with id {lora_id}")
        self.active_id = lora_id

    def _act_select(self, content: dict[str, Any]) -> None:
        self.selected = clean_ids(content.get("ids"))

    def _act_select_all(self, content: dict[str, Any]) -> None:
        frame, _ = self.catalog.page_columns(["id"], limit=MAX_SELECTION, **query_arguments(self.filters))
        self.selected = [int(i) for i in frame["id"].tolist()]

    def _act_favorite(self, content: dict[str, Any]) -> None:
        lora_id = clean_int(content.get("id"), 0, 2**62)
        value = clean_tristate(content.get("value"))
        if value is None or not self._existing([lora_id]):
            raise InvalidMessage("favorite needs an existing id and true/false")
        self.catalog.update(lora_id, favorite=value)
        self._changed([lora_id], "Added to favorites." if value else "Removed from favorites.")

    def _act_bulk(self, content: dict[str, Any]) -> None:
        op = content.get("op")
        if op not in BULK_OPS:
            raise InvalidMessage(f"unknown bulk operation {str(op)[:40]!r}")
        ids = self._existing(self.selected)
        if not ids:
            self.notify("Select some LoRAs first.")
            return
        value = content.get("value")
        count = f"{len(ids):,} LoRA{'s' if len(ids) != 1 else ''}"
        if op == "remove" and len(ids) > CONFIRM_REMOVE_OVER and content.get("confirmed") is not True:
            self.notify(f"Removing {count} needs a confirmation; nothing was removed.", "error")
            return
        if op in ("add_tags", "remove_tags"):
            tags = clean_strings(value, limit=20, item_limit=100)
            if not tags:
                raise InvalidMessage("no tags given")
            if op == "add_tags":
                self.catalog.add_tags(ids, tags)
                message = f"Tagged {count} with {', '.join(tags)}."
            else:
                self.catalog.remove_tags(ids, tags)
                message = f"Removed {', '.join(tags)} from {count}."
        elif op == "favorite":
            flag = clean_tristate(value)
            if flag is None:
                raise InvalidMessage("favorite needs true or false")
            self.catalog.bulk_update(ids, favorite=flag)
            message = f"{'Added' if flag else 'Removed'} {count} {'to' if flag else 'from'} favorites."
        elif op == "rating":
            rating = clean_int(value, 0, 5)
            self.catalog.bulk_update(ids, rating=rating)
            message = f"Rated {count} {rating}/5."
        elif op == "set_base_model":
            base = clean_text(value, 64)
            self.catalog.bulk_update(ids, base_model_override=base or None)
            message = f"Set the base model of {count} to {base}." if base else f"Cleared the base model of {count}."
        else:  # remove
            self.catalog.remove(ids)
            self.selected = []
            if self.active_id in ids:
                self.active_id = None
            message = f"Removed {count} from the catalog (the files stay on disk)."
        self.refresh_facets()
        self._changed(ids, message)

    def _act_undo(self, content: dict[str, Any]) -> None:
        result = self.catalog.undo()
        if result is None or result is False:
            self.notify("Nothing to undo.")
            self.can_undo = False
            return
        self.refresh_facets()
        self._changed(None, "Undone.", undoable=False)

    def _act_refresh(self, content: dict[str, Any]) -> None:
        self.refresh_facets()
        self.refresh()

    def _act_save_preset(self, content: dict[str, Any]) -> None:
        name = clean_text(content.get("name"), 100).strip()
        if not name:
            raise InvalidMessage("a preset needs a name")
        if name not in self.presets and len(self.presets) >= MAX_PRESETS:
            self.notify(f"At most {MAX_PRESETS} presets; delete one first.", "error")
            return
        saved = {k: v for k, v in self.filters.items() if k != "seed"}
        self.catalog.save_preset(name, saved)
        self._refresh_presets()
        self.notify(f"Saved the current filters as “{name}”.")

    def _act_apply_preset(self, content: dict[str, Any]) -> None:
        name = clean_text(content.get("name"), 100)
        stored = self.catalog.presets().get(name)
        if stored is None:
            raise InvalidMessage(f"no preset {name[:40]!r}")
        try:
            self.filters = clean_filters(stored)
        except InvalidMessage:
            self.notify(f"The preset “{name}” no longer fits this version; save it again.", "error")
            return
        self.notify(f"Applied the preset “{name}”.")

    def _act_delete_preset(self, content: dict[str, Any]) -> None:
        name = clean_text(content.get("name"), 100)
        if self.catalog.delete_preset(name):
            self.notify(f"Deleted the preset “{name}”.")
        self._refresh_presets()

    _ACTIONS: dict[str, Callable[[GalleryWidget, dict[str, Any]], None]] = {
        "filter": _act_filter,
        "rows": _act_rows,
        "thumbs": _act_thumbs,
        "open": _act_open,
        "select": _act_select,
        "select_all": _act_select_all,
        "favorite": _act_favorite,
        "bulk": _act_bulk,
        "undo": _act_undo,
        "refresh": _act_refresh,
        "save_preset": _act_save_preset,
        "apply_preset": _act_apply_preset,
        "delete_preset": _act_delete_preset,
    }

    # -- helpers ------------------------------------------------------------------------

    # -- Civitai "update available" (badge + filter), from the last fetch's cached answers --------
    def _updates(self) -> dict[int, str]:
        stamp = self._wb.db.stamp()
        if getattr(self, "_updates_stamp", None) != stamp:
            frame = self._wb.civitai.updates(progress=False)
            self._updates_cache = {
                int(r["id"]): f"newer on Civitai: {r['latest_version'] or r['latest_version_id']}"[:MAX_TEXT]
                for r in frame.to_dict("records")
            }
            self._updates_stamp = stamp
        return self._updates_cache

    def _update_arguments(self, filters: dict[str, Any]) -> dict[str, Any]:
        wanted = filters.get("updates")
        if wanted is None:
            return {}
        ids = set(self._updates())
        if not wanted:
            ids = {int(i) for i in self._wb.db.read_df("SELECT id FROM lora_view")["id"]} - ids
        return {"ids": sorted(ids)}

    def _mark_updates(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        updates = self._updates()
        for row in rows:
            row["update"] = updates.get(row["id"])
        return rows

    def _refresh_presets(self) -> None:
        self.presets = list(self.catalog.presets())

    def _sort_arguments(self, filters: dict[str, Any]) -> dict[str, Any]:
        sort = SORTS[filters["sort"]]
        args: dict[str, Any] = {"sort": sort, "descending": filters["descending"]}
        if sort == "random":
            args["seed"] = filters["seed"]
        return args

    def _existing(self, ids: Iterable[int]) -> list[int]:
        wanted = list(ids)
        if not wanted:
            return []
        frame, _ = self.catalog.page_columns(["id"], limit=len(wanted), ids=wanted)
        present = {int(i) for i in frame["id"].tolist()}
        return [i for i in wanted if i in present]

    def _changed(self, ids: list[int] | None, message: str, undoable: bool = True) -> None:
        self.refresh()
        self.can_undo = undoable or self.can_undo
        self.notify(message)
        for callback in list(self._change_callbacks):
            callback(ids)
