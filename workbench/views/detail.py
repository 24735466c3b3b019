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

from workbench.files import BASE_MODELS, USER_FIELDS, VIDEO_SUFFIXES, ThumbnailCache, preview_source
from workbench.views._assets import asset_path
from workbench.views._feedback import READ_ONLY_MESSAGE, NoticeWidget, guarded
from workbench.views._live import catalog_watcher
from workbench.views._messages import InvalidMessage, clean_int, json_value

log = logging.getLogger("workbench.views")

PREVIEW_SIZE = 512
#: Video previews up to this size are sent to the browser to play; larger ones show their poster only.
MAX_VIDEO_BYTES = 32 * 1024 * 1024
MAX_UPLOAD_BYTES = 32 * 1024 * 1024
MAX_VALUE = 2000

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
    ("preferred_weight", "Preferred weight"),
    ("negative_text", "Negative prompt"),
    ("notes", "Notes"),
    ("favorite", "Favorite"),
    ("creator", "Creator"),
    ("nsfw_level", "Civitai NSFW level"),
    ("stats", "Civitai stats"),
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
    """Minutes are enough for people: epoch seconds or a (UTC, naive) catalog timestamp, no microseconds."""
    if isinstance(value, datetime):  # pandas Timestamp too
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
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
        elif key in ("mtime", "added_at"):
            shown = _timestamp(value)
        else:
            shown = text_value(value)
        if shown == "":
            continue
        source = sources.get(key)
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
    weight = json_value(full.get("preferred_weight"))  # the user's, else the one imported from a sidecar
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
            "notes": text_value(full.get("notes"), 20_000),
            "negative_text": text_value(full.get("negative_text"), 20_000),
            "rating": int(json_value(full.get("rating")) or 0),
            "favorite": bool(json_value(full.get("favorite"))),
            "preferred_weight": weight,
            "base_model_override": text_value(user.get("base_model_override"), 64),
        },
        "syntax": prompt_tags(name_for_prompt, weight, effective_triggers),
    }


def clean_edit(raw: Any) -> dict[str, Any]:
    """The user fields of a ``save`` message, checked by the catalog's own rules (an empty override clears it)."""
    from workbench.catalog import CatalogError, validate_user_fields

    if not isinstance(raw, dict) or not set(raw) <= set(USER_FIELDS):
        raise InvalidMessage("fields must be an object of editable fields")
    fields = dict(raw)
    if fields.get("base_model_override") == "":
        fields["base_model_override"] = None
    try:
        return validate_user_fields(fields)
    except CatalogError as exc:
        raise InvalidMessage(str(exc)) from None


def _same(shown: Any, value: Any) -> bool:
    if isinstance(shown, float) or isinstance(value, float):
        try:
            return math.isclose(float(shown), float(value), abs_tol=1e-9)
        except (TypeError, ValueError):
            return False
    if value is None:
        return shown in (None, "", [])
    return shown == value


class DetailWidget(NoticeWidget):
    """Detail panel for one LoRA (set ``lora_id``; ``None`` shows an empty panel)."""

    _esm = asset_path("detail.js")
    _css = asset_path("detail.css")

    lora_id = t.Int(None, allow_none=True).tag(sync=True)
    record = t.Dict().tag(sync=True)
    """Display-ready record (see :func:`detail_record`); empty when nothing is open."""
    preview = t.Bytes(b"").tag(sync=True)
    """WEBP preview of the open LoRA (empty when it has none)."""
    base_models = t.List(list(BASE_MODELS)).tag(sync=True)
    video = t.Bytes(b"").tag(sync=True)
    """The video preview itself (mp4/webm) when the LoRA has one, to play in the panel."""
    video_type = t.Unicode("").tag(sync=True)
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
                self.record, self.preview, self.video, self.video_type = {}, b"", b"", ""
            return
        try:
            record = detail_record(self._wb, int(lora_id))
        except CatalogError as exc:
            with self.hold_sync():
                self.record, self.preview = {}, b""
            self.notify(str(exc), "error")
            return
        preview, video, video_type = b"", b"", ""
        frame = self._wb.catalog.query(ids=[int(lora_id)])
        source = preview_source(frame.to_dict("records")[0]) if len(frame) else None
        if source:
            preview = self._thumbnails.get(source, PREVIEW_SIZE) or b""
            video, video_type = self._video(source)
        with self.hold_sync():
            self.record = record  # before lora_id, so the observer sees it is loaded
            self.preview = preview
            self.video, self.video_type = video, video_type
            if self.lora_id != lora_id:
                self.lora_id = int(lora_id)

    def _video(self, source: str) -> tuple[bytes, str]:
        """The bytes and MIME type of a video preview the visitor may see, else empty."""
        suffix = PurePath(source).suffix.lower()
        if suffix not in VIDEO_SUFFIXES or not self._thumbnails.is_allowed(source):
            return b"", ""
        try:
            with open(source, "rb") as handle:
                data = handle.read(MAX_VIDEO_BYTES + 1)
        except OSError:
            return b"", ""
        if len(data) > MAX_VIDEO_BYTES:
            return b"", ""
        return data, "video/webm" if suffix == ".webm" else "video/mp4"

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
        self.base_models = sorted(set(BASE_MODELS) | {str(v)[:64] for v in seen})

    # -- browser messages -------------------------------------------------------------------

    def _on_custom_msg(self, _widget: Any, content: Any, buffers: Any) -> None:
        self.handle_message(content, buffers)

    @guarded
    def handle_message(self, content: Any, buffers: Any = None) -> None:
        """Dispatch one browser message: ``save``, ``open`` or ``set_preview``; anything else is dropped."""
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
            elif action == "set_preview":
                self._set_preview(content, buffers)
            else:
                log.warning("detail: dropped unknown action %r", str(action)[:40])
        except InvalidMessage as exc:
            log.warning("detail: dropped invalid %s message: %s", action, exc)
            self.notify(f"That edit was not accepted: {exc}", "error")

    def _save(self, content: dict[str, Any]) -> None:
        from workbench.catalog import CatalogError

        lora_id = clean_int(content.get("id"), 0, 2**62)
        if lora_id != self.lora_id:
            raise InvalidMessage("save for a LoRA that is not open")
        fields = clean_edit(content.get("fields"))
        fields = self._changed_only(fields)
        if not fields:
            self.notify("Nothing changed.")
            return
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

    def _set_preview(self, content: dict[str, Any], buffers: Any) -> None:
        from workbench.catalog import CatalogError

        lora_id = clean_int(content.get("id"), 0, 2**62)
        if lora_id != self.lora_id:
            raise InvalidMessage("preview for a LoRA that is not open")
        if not buffers or len(buffers) != 1:
            raise InvalidMessage("set_preview needs exactly one file")
        data = bytes(buffers[0])
        if len(data) > MAX_UPLOAD_BYTES:
            self.notify(f"That file is over {MAX_UPLOAD_BYTES // 2**20} MiB.", "error")
            return
        try:
            self._wb.set_preview(lora_id, data)
        except CatalogError as exc:  # our own message, safe to show
            self.notify(str(exc), "error")
            return
        self.load(lora_id)
        self.notify("Preview replaced.")
        for callback in list(self._saved_callbacks):
            callback(lora_id)

    def _changed_only(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Drop fields the visitor left as shown: a value imported from a sidecar stays imported
        (so the other tool's later changes still arrive) until the visitor really edits it."""
        shown = (self.record or {}).get("edit") or {}
        if self.lora_id is None:
            return fields
        user = self._wb.catalog.get(int(self.lora_id)).get("user_fields") or {}
        out = {}
        for key, value in fields.items():
            if user.get(key) is None and key in shown and _same(shown[key], value):
                continue
            out[key] = value
        return out

    def _open(self, content: dict[str, Any]) -> None:
        lora_id = clean_int(content.get("id"), 0, 2**62)
        if not len(self._wb.catalog.query(ids=[lora_id])):
            raise InvalidMessage(f"no LoRA with id {lora_id}")
        for callback in list(self._open_callbacks):
            callback(lora_id)
        if not self._open_callbacks:
            self.load(lora_id)
