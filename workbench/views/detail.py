"""The detail panel: everything known about one LoRA, where each value came from, and edits.

The record the browser gets is plain strings and numbers prepared here (the ES module
only places them with textContent). Edits come back as one ``save`` action whose fields
are checked before ``wb.catalog.update`` (which checks them again) stores them.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import PurePath
from typing import Any

import traitlets as t

from workbench.files import ThumbnailCache
from workbench.views._assets import asset_path
from workbench.views._feedback import READ_ONLY_MESSAGE, NoticeWidget, guarded
from workbench.views._live import catalog_watcher
from workbench.views._messages import InvalidMessage, clean_int, clean_strings, clean_text, clean_tristate, json_value

log = logging.getLogger("workbench.views")

PREVIEW_SIZE = 512
MAX_VALUE = 2000
EDITABLE = ("tags", "notes", "rating", "favorite", "preferred_weight", "trigger_words", "base_model_override")
KNOWN_BASE_MODELS = ("SD1", "SD2", "SDXL", "Pony", "Illustrious", "NoobAI", "SD3", "FLUX", "Chroma", "Lumina2")

_FIELD_LABELS = (
    ("name", "Name"),
    ("base_model", "Base model"),
    ("base_model_detected", "Base model (detected)"),
    ("base_model_evidence", "Detected from"),
    ("network_type", "Network"),
    ("rank", "Rank"),
    ("alpha", "Alpha"),
    ("scale", "Scale (alpha/rank)"),
    ("key_layout", "Key layout"),
    ("format", "Format"),
    ("trigger_words", "Trigger words"),
    ("tags", "Tags"),
    ("description", "Description"),
    ("creator", "Creator"),
    ("civitai_model_id", "Civitai model"),
    ("civitai_version_id", "Civitai version"),
    ("size_bytes", "Size"),
    ("mtime", "Modified"),
    ("added_at", "Added"),
    ("usage_count", "Used"),
    ("module_count", "Modules"),
    ("tensor_count", "Tensors"),
    ("has_text_encoder", "Trains text encoder"),
    ("header_len", "Header bytes"),
    ("folder", "Folder"),
    ("path", "Path"),
)


def text_value(value: Any, limit: int = MAX_VALUE) -> str:
    """A display string for any catalog value (lists joined, dicts as JSON), bounded in length."""
    value = json_value(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, list):
        text = ", ".join(text_value(v, limit) for v in value)
    elif isinstance(value, dict):
        text = json.dumps(value, ensure_ascii=False, default=str)
    elif isinstance(value, float):
        text = f"{value:.6g}"
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _size(value: Any) -> str:
    number = json_value(value)
    if not isinstance(number, (int, float)):
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(number) < 1024 or unit == "GiB":
            return f"{number:.0f} {unit}" if unit == "B" else f"{number:.1f} {unit}"
        number /= 1024
    return ""


def _timestamp(value: Any) -> str:
    value = json_value(value)
    if isinstance(value, (int, float)) and value > 0:
        return datetime.fromtimestamp(value, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return text_value(value)


def prompt_tags(name: str, weight: float, trigger_words: list[str]) -> dict[str, str]:
    """``<lora:…>`` text in both dialects, with and without trigger words."""
    from workbench.generate import A1111, COMFYUI, LoraSpec, PromptSyntaxError, compose_prompt, format_tag

    spec = LoraSpec(name=name, unet=weight)
    out: dict[str, str] = {}
    try:
        for dialect in (A1111, COMFYUI):
            out[dialect] = format_tag(spec, dialect)
            out[f"{dialect}_triggers"] = compose_prompt("", [spec], dialect, trigger_words={name: trigger_words})
    except PromptSyntaxError as exc:
        return {"error": str(exc)}
    return out


def detail_record(wb: Any, lora_id: int) -> dict[str, Any]:
    """What the detail panel shows for one LoRA, as display strings (see module docstring)."""
    full = wb.catalog.get(lora_id)
    sources = full.get("sources") or {}
    user = full.get("user_fields") or {}
    fields = []
    for key, label in _FIELD_LABELS:
        value = full.get(key)
        if key == "size_bytes":
            shown = _size(value)
        elif key == "mtime":
            shown = _timestamp(value)
        else:
            shown = text_value(value)
        if shown == "":
            continue
        source = sources.get(key)
        if source is None and key in (
            "rank",
            "alpha",
            "network_type",
            "key_layout",
            "base_model_detected",
            "scale",
            "module_count",
            "tensor_count",
            "has_text_encoder",
            "header_len",
        ):
            source = "header"
        elif source is None and key in ("size_bytes", "mtime", "path", "folder", "format"):
            source = "file"
        elif source is None and key in ("added_at", "usage_count"):
            source = "catalog"
        fields.append([label, shown, text_value(source) if source else ""])

    metadata = full.get("metadata") or {}
    if not isinstance(metadata, dict):
        metadata = {}
    ss_rows = [[str(k), text_value(v)] for k, v in sorted(metadata.items()) if str(k).startswith(("ss_", "sshs_"))]
    other_rows = [
        [str(k), text_value(v, 400)]
        for k, v in sorted(metadata.items())
        if not str(k).startswith(("ss_", "sshs_")) and k not in ("ssmd_cover_images", "modelspec.thumbnail")
    ]
    training = []
    for item in full.get("training_tags") or []:
        if isinstance(item, (list, tuple)) and len(item) >= 2:
            training.append([text_value(item[0], 200), int(json_value(item[1]) or 0)])
        elif isinstance(item, dict):
            training.append([text_value(item.get("tag"), 200), int(json_value(item.get("count")) or 0)])
    hashes = [
        [label, text_value(full.get(key))]
        for key, label in (
            ("sha256", "SHA256"),
            ("autov2", "AutoV2"),
            ("autov1", "AutoV1"),
            ("tensor_hash", "Tensor hash (addnet)"),
            ("sha256_claimed", "SHA256 claimed by sidecar"),
        )
        if full.get(key)
    ]
    sidecars = []
    for kind, parsed in (full.get("sidecars") or {}).items():
        items = parsed.items() if isinstance(parsed, dict) else [("value", parsed)]
        sidecars.append(
            {"kind": text_value(kind, 100), "items": [[text_value(k, 100), text_value(v, 600)] for k, v in items]}
        )
    previews = []
    if full.get("preview_path"):
        previews.append(["file", text_value(full["preview_path"])])
    if json_value(full.get("preview_embedded")):
        previews.append(["embedded in header", text_value(full.get("path"))])
    duplicates = [
        {
            "id": int(d["id"]),
            "name": text_value(d.get("name"), 200),
            "path": text_value(d.get("path")),
            "by": text_value(d.get("by")),
        }
        for d in full.get("duplicates") or []
    ]
    name_for_prompt = PurePath(str(full.get("file_name") or full.get("name") or "")).stem or str(full.get("name") or "")
    weight = json_value(user.get("preferred_weight"))
    weight = float(weight) if isinstance(weight, (int, float)) and math.isfinite(weight) else 1.0
    effective_triggers = [text_value(w, 200) for w in json_value(full.get("trigger_words")) or []]
    effective_tags = [text_value(w, 200) for w in json_value(full.get("tags")) or []]
    return {
        "id": int(full["id"]),
        "name": text_value(full.get("name"), 300),
        "path": text_value(full.get("path")),
        "base_model": text_value(full.get("base_model"), 100),
        "missing": bool(json_value(full.get("missing"))),
        "error": text_value(full.get("error")) or None,
        "fields": fields,
        "ss": ss_rows,
        "metadata": other_rows,
        "training_tags": training,
        "hashes": hashes,
        "sidecars": sidecars,
        "sidecar_errors": [text_value(e, 400) for e in json_value(full.get("sidecar_errors")) or []],
        "previews": previews,
        "duplicates": duplicates,
        "edit": {
            "tags": effective_tags,
            "trigger_words": effective_triggers,
            "notes": text_value(user.get("notes"), 20_000),
            "rating": int(json_value(full.get("rating")) or 0),
            "favorite": bool(json_value(full.get("favorite"))),
            "preferred_weight": weight,
            "base_model_override": text_value(user.get("base_model_override"), 64),
        },
        "syntax": prompt_tags(name_for_prompt, weight, effective_triggers),
    }


def clean_edit(raw: Any) -> dict[str, Any]:
    """The user fields of a ``save`` message, checked for type and range."""
    if not isinstance(raw, dict):
        raise InvalidMessage("fields must be an object")
    unknown = set(raw) - set(EDITABLE)
    if unknown:
        raise InvalidMessage(f"not editable: {sorted(unknown)[:5]}")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key in ("tags", "trigger_words"):
            out[key] = clean_strings(value, limit=500, item_limit=100)
        elif key == "notes":
            out[key] = clean_text(value, 20_000)
        elif key == "rating":
            out[key] = clean_int(value, 0, 5)
        elif key == "favorite":
            flag = clean_tristate(value)
            if flag is None:
                raise InvalidMessage("favorite must be true or false")
            out[key] = flag
        elif key == "preferred_weight":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InvalidMessage("preferred_weight must be a number")
            if not -10 <= value <= 10:
                raise InvalidMessage("preferred_weight must be between -10 and 10")
            out[key] = float(value)
        elif key == "base_model_override":
            out[key] = clean_text(value, 64)
    return out


class DetailWidget(NoticeWidget):
    """Detail panel for one LoRA (set ``lora_id``; ``None`` shows an empty panel)."""

    _esm = asset_path("detail.js")
    _css = asset_path("detail.css")

    lora_id = t.Int(None, allow_none=True).tag(sync=True)
    record = t.Dict().tag(sync=True)
    """Display-ready record (see :func:`detail_record`); empty when nothing is open."""
    preview = t.Bytes(b"").tag(sync=True)
    """WEBP preview of the open LoRA (empty when it has none)."""
    base_models = t.List(list(KNOWN_BASE_MODELS)).tag(sync=True)
    read_only = t.Bool(False).tag(sync=True)
    """A viewer's panel: no edit form. Shown from this trait, enforced from ``_read_only``."""

    def __init__(self, wb: Any, lora_id: int | None = None, read_only: bool = False, **kwargs: Any) -> None:
        self._wb = wb
        self._read_only = bool(read_only)  # the browser can set synced traits, never this
        self._thumbnails = ThumbnailCache(wb.home, wb.roots)
        self._saved_callbacks: list[Callable[[int], None]] = []
        self._open_callbacks: list[Callable[[int], None]] = []
        self._live_row: tuple[int, str] | None = None  # (id, snapshot row) last re-read for a change
        watcher = catalog_watcher(wb)
        super().__init__(read_only=self._read_only, **kwargs)
        self.on_msg(self._on_custom_msg)
        self._known_base_models()
        if lora_id is not None:
            self.load(lora_id)
        self._live = watcher.subscribe(self._catalog_changed)

    @t.validate("read_only")
    def _validate_read_only(self, proposal: Any) -> bool:
        return self._read_only

    @guarded
    def _catalog_changed(self) -> None:
        """The catalog changed somewhere: re-read the open LoRA if its row changed (else nothing is sent).

        The row comes from the catalog's in-memory snapshot; the full record (``catalog.get``: metadata,
        sidecars, duplicates) is read from the file only when that row differs from the one last shown.
        """
        lora_id = self.lora_id
        if lora_id is None:
            return
        frame = self._wb.catalog.query(ids=[lora_id])
        if not len(frame):
            self.lora_id = None  # removed elsewhere: the panel empties
            return
        row = (lora_id, json.dumps(frame.to_dict("records")[0], default=str, sort_keys=True))
        if row != self._live_row:
            self._live_row = row
            self.load(lora_id)

    def close(self) -> None:
        """Stop following catalog changes, then close the widget."""
        if getattr(self, "_live", None) is not None:
            catalog_watcher(self._wb).unsubscribe(self._live)
        super().close()

    def on_saved(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(lora_id)`` after an edit was stored."""
        self._saved_callbacks.append(callback)

    def on_open(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(lora_id)`` when the visitor opens another LoRA (e.g. a duplicate)."""
        self._open_callbacks.append(callback)

    @guarded
    def load(self, lora_id: int | None) -> None:
        """Show ``lora_id`` (re-read from the catalog), or nothing for None."""
        from workbench.catalog import CatalogError

        if lora_id is None:
            with self.hold_sync():
                self.record, self.preview = {}, b""
            return
        try:
            record = detail_record(self._wb, int(lora_id))
        except CatalogError as exc:
            with self.hold_sync():
                self.record, self.preview = {}, b""
            self.notify(str(exc), "error")
            return
        preview = b""
        frame = self._wb.catalog.query(ids=[int(lora_id)])
        if len(frame):
            row = frame.to_dict("records")[0]
            source = json_value(row.get("preview_path"))
            if not source and json_value(row.get("preview_embedded")):
                source = json_value(row.get("path"))
            if isinstance(source, str) and source:
                preview = self._thumbnails.get(source, PREVIEW_SIZE) or b""
        with self.hold_sync():
            self.record = record  # before lora_id, so the observer sees it is loaded
            self.preview = preview
            if self.lora_id != lora_id:
                self.lora_id = int(lora_id)

    @t.observe("lora_id")
    def _lora_id_changed(self, change: Any) -> None:
        if not self.record or self.record.get("id") != change["new"]:
            self.load(change["new"])

    def _known_base_models(self) -> None:
        try:
            seen = [v for v, _ in self._wb.catalog.facets().get("base_model", []) if v]
        except Exception:
            log.debug("no facets for the base model list", exc_info=True)
            seen = []
        self.base_models = sorted(set(KNOWN_BASE_MODELS) | {str(v)[:64] for v in seen})

    # -- browser messages -------------------------------------------------------------------

    def _on_custom_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        self.handle_message(content)

    @guarded
    def handle_message(self, content: Any) -> None:
        """Dispatch one browser message: ``save`` or ``open``; anything else is dropped."""
        if not isinstance(content, dict):
            return
        action = content.get("action")
        try:
            if action == "save" and self._read_only:
                log.warning("detail: refused save from a read-only page")
                self.notify(READ_ONLY_MESSAGE, "error")
            elif action == "save":
                self._save(content)
            elif action == "open":
                self._open(content)
            else:
                log.warning("detail: dropped unknown action %r", str(action)[:40])
        except InvalidMessage as exc:
            log.warning("detail: dropped invalid %s message: %s", action, exc)
            self.notify("That edit was not accepted.", "error")

    def _save(self, content: dict[str, Any]) -> None:
        from workbench.catalog import CatalogError

        lora_id = clean_int(content.get("id"), 0, 2**62)
        if lora_id != self.lora_id:
            raise InvalidMessage("save for a LoRA that is not open")
        fields = clean_edit(content.get("fields"))
        if "base_model_override" in fields and not fields["base_model_override"]:
            fields["base_model_override"] = None
        if not fields:
            return
        try:
            self._wb.catalog.update(lora_id, **fields)
        except CatalogError as exc:  # our own message, safe to show
            self.notify(str(exc), "error")
            return
        self.load(lora_id)
        self.notify("Saved.")
        for callback in list(self._saved_callbacks):
            callback(lora_id)

    def _open(self, content: dict[str, Any]) -> None:
        lora_id = clean_int(content.get("id"), 0, 2**62)
        if not len(self._wb.catalog.query(ids=[lora_id])):
            raise InvalidMessage(f"no LoRA with id {lora_id}")
        for callback in list(self._open_callbacks):
            callback(lora_id)
        if not self._open_callbacks:
            self.load(lora_id)
