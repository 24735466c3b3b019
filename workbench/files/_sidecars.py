"""Sidecar files that other LoRA tools write beside ``<base>.safetensors``, read and merged.

Kinds (the keys of ``sidecars``/``sources``):

=====================  ==========================================================================
``lm.metadata.json``   ``<base>.metadata.json`` of ComfyUI-Lora-Manager (user-edited name, notes,
                       tags, usage tips; its ``civitai`` object is the Civitai model version).
``a1111.json``         ``<base>.json`` of A1111 user metadata (``description``, ``sd version``,
                       ``activation text``, ``preferred weight``, ``notes``, ``negative text``),
                       with Civitai Browser+'s ``sha256``/``modelId``/``modelVersionId``.
``civitai.info``       ``<base>.civitai.info`` of Civitai Helper: the Civitai model-version JSON
                       (``{}`` = looked up, not found).
``civitai.model.json`` ``<base>.json`` holding the Civitai *model* JSON (``modelVersions[]``), as
                       written by SD.Next and imported by the original LoRA Manager; the version
                       whose ``files[].name`` is this file is used, else the first. Without a
                       ``<base>.json``, any other ``*.json`` in the folder whose
                       ``modelVersions[].files[].name`` names this file is used (the original
                       LoRA Manager's importer matches a JSON to its file that way), with its
                       ``stats``, ``nsfwLevel``, ``weight`` and ``sd version``.
``description.txt``    ``<base>.txt`` (SD.Next) or ``<base>.description.txt`` (A1111): plain text.
=====================  ==========================================================================

``<base>.json`` is one file name with two shapes: it is ``civitai.model.json`` when it has a
``modelVersions`` list, else ``a1111.json``.

Merge precedence (first source holding a usable value wins, per field; lists are not unioned):

* Descriptive fields — ``name``, ``description``, ``trigger_words``, ``tags``, ``base_model``,
  ``preferred_weight``, ``negative_text``, ``notes``, ``usage_tips``, ``favorite``:
  user fields (catalog, not here) > ``lm.metadata.json`` > ``a1111.json`` > ``civitai.info`` >
  ``civitai.model.json`` > ``description.txt`` > ``header``.
  Files a person edits in their LoRA tool come first, since they hold that person's corrections;
  ComfyUI-Lora-Manager's file is richer and more recent than A1111's (it is rewritten from Civitai
  and edited in place). Then Civitai's per-version data, which describes exactly this file, beats
  the model-level JSON, whose version we have to guess. Header metadata is last: it is what the
  trainer typed at training time (often a folder name).
* Identity fields — ``civitai_model_id``, ``civitai_version_id``, ``sha256``, ``version_name``,
  ``creator``, ``published_at``, ``nsfw``, ``nsfw_level``, ``stats``, ``preview_url``:
  ``civitai.info`` > ``lm.metadata.json`` > ``civitai.model.json`` > ``a1111.json`` > ``header``.
  Civitai Helper's file is the raw by-hash answer of the Civitai API, so it is authoritative for
  what Civitai says this file is; Civitai Browser+'s ids in ``a1111.json`` are often the string
  "Model not found".

The merged ``base_model`` is only a claim: ``workbench.files._inspect`` keeps it when it agrees with
the file's own evidence (header metadata, tensor shapes) or refines it (Pony is an SDXL
finetune), and reports it in ``sidecar_errors`` when it contradicts the file.

Every value is type-checked: a field of the wrong type is ignored and a ``sidecar_errors`` line
says so; a sidecar that is unreadable, not UTF-8, not a JSON object, over
:data:`SIDECAR_MAX_BYTES` or nested deeper than ``MAX_NESTED_DEPTH`` is skipped with a line.
Nothing here raises for bad input.
"""

from __future__ import annotations

import math
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from workbench.files._paths import is_inside, printable
from workbench.files._taxonomy import normalize_base_model
from workbench.files._training import MAX_LIST_ITEMS, MAX_NESTED_DEPTH, json_depth_exceeds, split_list

#: Real sidecars are KBs (a Civitai model JSON with every version and image: ~1-3 MB); parsing costs
#: ~5x the file in memory, so larger ones are skipped with a line instead of read.
SIDECAR_MAX_BYTES = 8 * 1024 * 1024
#: Longest text kept from one sidecar field (descriptions are HTML from Civitai, rarely over 20 KB).
MAX_FIELD_CHARS = 64 * 1024
#: What is kept of a sidecar's raw JSON for the catalog (the detail panel): lists and objects are cut
#: to this many items and strings to ``MAX_FIELD_CHARS``, so a hostile 15 MB file is not stored whole.
MAX_STORED_ITEMS = 100

DESCRIPTIVE_ORDER = (
    "lm.metadata.json",
    "a1111.json",
    "civitai.info",
    "civitai.model.json",
    "description.txt",
    "header",
)
IDENTITY_ORDER = ("civitai.info", "lm.metadata.json", "civitai.model.json", "a1111.json", "header")
IDENTITY_FIELDS = frozenset(
    {
        "civitai_model_id",
        "civitai_version_id",
        "sha256",
        "version_name",
        "creator",
        "published_at",
        "nsfw",
        "nsfw_level",
        "stats",
        "preview_url",
    }
)

_NOT_FOUND = re.compile(r"^\s*(model\s+)?not\s+found\s*$", re.IGNORECASE)
_SHA256 = re.compile(r"^(0x)?([0-9a-fA-F]{64})$")

# --- directory listings -------------------------------------------------------------------------

_LISTING_CACHE: dict[str, tuple[int, dict[str, str]]] = {}
_LISTING_CACHE_MAX = 64


def sibling_names(directory: Path | str) -> dict[str, str]:
    """Lower-cased name → real name of every entry in ``directory``.

    Cached per process and revalidated by the directory's mtime, so scanning a folder of N LoRAs
    lists it once instead of probing ~25 candidate names per file. Unreadable → empty.
    """
    key = os.fspath(directory)
    try:
        mtime = os.stat(key).st_mtime_ns
    except OSError:
        return {}
    cached = _LISTING_CACHE.get(key)
    if cached is not None and cached[0] == mtime:
        return cached[1]
    try:
        names = {name.lower(): name for name in os.listdir(key)}
    except OSError:
        names = {}
    if len(_LISTING_CACHE) >= _LISTING_CACHE_MAX:
        _LISTING_CACHE.pop(next(iter(_LISTING_CACHE)))
    _LISTING_CACHE[key] = (mtime, names)
    return names


def find_sidecars(path: Path, siblings: Mapping[str, str] | None = None) -> dict[str, Path]:
    """Existing sidecar files of ``path`` by file role (``<base>.json`` not yet classified)."""
    path = Path(path)
    if siblings is None:
        siblings = sibling_names(path.parent)
    stem = path.stem.lower()
    found: dict[str, Path] = {}
    for role, suffixes in _SIDECAR_SUFFIXES:
        for suffix in suffixes:
            real = siblings.get(stem + suffix)
            if real is not None:
                found[role] = path.with_name(real)
                break
    if "base.json" not in found:
        model_json = model_json_by_file_name(path.parent, siblings).get(path.name.lower())
        if model_json is not None:
            found["base.json"] = path.with_name(model_json)
    return found


_LORA_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
_MODEL_JSON_CACHE: dict[str, tuple[int, dict[str, str]]] = {}


def unclaimed_json_names(siblings: Mapping[str, str]) -> list[str]:
    """Lower-cased ``*.json`` names in a folder that are no LoRA's ``<base>.…json`` sidecar.

    These may be Civitai model JSONs named after the model rather than the file (the original LoRA
    Manager imports them so); the scanner folds their signature into each LoRA's sidecar signature.
    """
    stems = {name[: -len(suffix)] for name in siblings for suffix in _LORA_FILE_SUFFIXES if name.endswith(suffix)}
    out = []
    for name in siblings:
        if not name.endswith(".json"):
            continue
        parts = name.split(".")
        if not any(".".join(parts[:i]) in stems for i in range(1, len(parts))):
            out.append(name)
    return sorted(out)


def model_json_by_file_name(directory: Path, siblings: Mapping[str, str] | None = None) -> dict[str, str]:
    """Lower-cased LoRA file name → real name of the unclaimed Civitai model JSON that lists it.

    Cached per folder and revalidated by the folder's mtime, so a folder of N LoRAs is indexed once,
    not N times; a JSON edited in place changes no folder mtime, so every scan starts by clearing this
    cache (:func:`forget_model_json_cache`). Unreadable JSONs are skipped: they are nobody's sidecar yet.
    """
    key = os.fspath(directory)
    try:
        signature = os.stat(key).st_mtime_ns  # like sibling_names: one listing per folder state, not per file
    except OSError:
        return {}
    cached = _MODEL_JSON_CACHE.get(key)
    if cached is not None and cached[0] == signature:
        return cached[1]
    if siblings is None:
        siblings = sibling_names(directory)
    candidates = unclaimed_json_names(siblings)
    index: dict[str, str] = {}
    for lower in candidates:
        real = siblings[lower]
        obj = _load_json_object(Path(directory) / real, real, [])
        versions = obj.get("modelVersions") if obj else None
        if not isinstance(versions, list):
            continue
        for version in versions:
            files = version.get("files") if isinstance(version, dict) else None
            for item in files if isinstance(files, list) else []:
                if isinstance(item, dict) and isinstance(item.get("name"), str):
                    index.setdefault(item["name"].lower(), real)
    if len(_MODEL_JSON_CACHE) >= _LISTING_CACHE_MAX:
        _MODEL_JSON_CACHE.pop(next(iter(_MODEL_JSON_CACHE)))
    _MODEL_JSON_CACHE[key] = (signature, index)
    return index


def forget_model_json_cache() -> None:
    """Drop cached model-JSON indexes (a scan calls this, so JSONs edited in place are re-read)."""
    _MODEL_JSON_CACHE.clear()


_SIDECAR_SUFFIXES = (
    ("lm.metadata.json", (".metadata.json",)),
    ("civitai.info", (".civitai.info",)),
    ("base.json", (".json",)),
    ("description.txt", (".txt", ".description.txt")),
)


# --- reading -----------------------------------------------------------------------------------


@dataclass(slots=True)
class SidecarReport:
    """Everything read beside one LoRA: raw parsed sidecars, normalised fields, problems."""

    sidecars: dict[str, Any] = field(default_factory=dict)
    fields: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def _read_bytes(path: Path, label: str, errors: list[str], roots: tuple[str, ...] | None = None) -> bytes | None:
    """The bytes of a sidecar that is a regular file inside ``roots`` (default: its own folder), else None.

    Symlinks are resolved first and the target must lie inside a root: a sidecar linked to
    ``/proc/self/environ`` is refused with a line in ``errors``, never opened. The resolved path is
    opened without following links and without blocking (a FIFO gets a line, not a hang).
    """
    resolved = os.path.realpath(path)
    if roots is None:
        roots = (os.path.realpath(os.path.dirname(os.path.abspath(path))),)
    if not is_inside(resolved, roots):
        errors.append(f"{label}: links outside the library root (to {printable(resolved)[:200]}); not read")
        return None
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(resolved, flags)
    except OSError as err:
        errors.append(f"{label}: cannot read ({err.strerror or err})")
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            errors.append(f"{label}: not a regular file (skipped)")
            return None
        if st.st_size > SIDECAR_MAX_BYTES:
            errors.append(
                f"{label}: {st.st_size} bytes is over the {SIDECAR_MAX_BYTES // (1024 * 1024)} MiB "
                f"sidecar cap (skipped)"
            )
            return None
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read(SIDECAR_MAX_BYTES + 1)
        if len(data) > SIDECAR_MAX_BYTES:
            errors.append(f"{label}: over the {SIDECAR_MAX_BYTES // (1024 * 1024)} MiB sidecar cap (skipped)")
            return None
        return data
    except OSError as err:
        errors.append(f"{label}: cannot read ({err.strerror or err})")
        return None
    finally:
        os.close(fd)


def _load_json_object(
    path: Path, label: str, errors: list[str], roots: tuple[str, ...] | None = None
) -> dict[str, Any] | None:
    data = _read_bytes(path, label, errors, roots)
    if data is None:
        return None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as err:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as uerr:
            errors.append(f"{label}: not valid UTF-8 (bad byte at offset {uerr.start}; skipped)")
            return None
        msg = str(err)
        if "depth" in msg or "recursion" in msg:
            errors.append(f"{label}: JSON nested too deeply (skipped)")
        else:
            errors.append(f"{label}: not valid JSON ({msg}; skipped)")
        return None
    if type(obj) is not dict:
        errors.append(f"{label}: JSON is {_json_kind(obj)}, not an object (skipped)")
        return None
    if json_depth_exceeds(obj, MAX_NESTED_DEPTH):
        errors.append(f"{label}: JSON nested deeper than {MAX_NESTED_DEPTH} levels (skipped)")
        return None
    return obj


def read_sidecars(
    path: Path, siblings: Mapping[str, str] | None = None, roots: tuple[str, ...] | None = None
) -> SidecarReport:
    """Read and normalise every sidecar of ``path``; never raises.

    ``roots``: folders a sidecar may resolve into (default: the LoRA's own folder); see :func:`_read_bytes`.
    """
    path = Path(path)
    report = SidecarReport()
    for role, sidecar_path in find_sidecars(path, siblings).items():
        label = printable(sidecar_path.name if role == "base.json" else role)
        if role == "description.txt":
            data = _read_bytes(sidecar_path, role, report.errors, roots)
            if data is None:
                continue
            try:
                text = data.decode("utf-8-sig")
            except UnicodeDecodeError as err:
                report.errors.append(
                    f"{role}: not valid UTF-8 (bad byte at offset {err.start}; undecodable bytes replaced)"
                )
                text = data.decode("utf-8", errors="replace")
            text = _cut(text.strip())
            report.sidecars[role] = {"text": text}
            if text:
                report.fields[role] = {"description": text}
            continue
        obj = _load_json_object(sidecar_path, label, report.errors, roots)
        if obj is None:
            continue
        if role == "base.json":
            role = "civitai.model.json" if "modelVersions" in obj else "a1111.json"
        parser = _PARSERS[role]
        fields_ = _Fields(role, report.errors)
        parser(obj, fields_, path)
        report.sidecars[role] = bounded_copy(obj)
        if fields_.values:
            report.fields[role] = fields_.values
    return report


def _cut(text: str, limit: int = MAX_FIELD_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + f"… <cut: {len(text)} characters>"


def bounded_copy(value: Any, items: int = MAX_STORED_ITEMS, chars: int = MAX_FIELD_CHARS) -> Any:
    """A copy of parsed JSON with every list/object cut to ``items`` entries and every string to ``chars``.

    Depth is already bounded by the reader (``MAX_NESTED_DEPTH``), so plain recursion is safe here.
    """
    if type(value) is str:
        return _cut(value, chars)
    if type(value) is list:
        out = [bounded_copy(item, items, chars) for item in value[:items]]
        if len(value) > items:
            out.append(f"<{len(value) - items} more item(s) not kept>")
        return out
    if type(value) is dict:
        kept = {}
        for index, (key, item) in enumerate(value.items()):
            if index >= items:
                kept["<not kept>"] = f"{len(value) - items} more key(s)"
                break
            kept[_cut(key, 200)] = bounded_copy(item, items, chars)
        return kept
    return value


# --- typed field extraction ----------------------------------------------------------------------


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return {dict: "an object", list: "an array", str: "a string", type(None): "null"}.get(
        type(value), type(value).__name__
    )


class _Fields:
    """Collects sanitised values for one source and a note for every value of the wrong type."""

    def __init__(self, label: str, errors: list[str]):
        self.label = label
        self.errors = errors
        self.values: dict[str, Any] = {}

    def _wrong(self, key: str, value: Any, expected: str) -> None:
        self.errors.append(f"{self.label}: {key} is {_json_kind(value)}, expected {expected} (ignored)")

    def set(self, name: str, value: Any) -> None:
        if value is not None and value != "" and value != [] and name not in self.values:
            self.values[name] = value

    def text(self, obj: Mapping[str, Any], key: str, name: str) -> None:
        value = obj.get(key)
        if value is None:
            return
        if not isinstance(value, str):
            self._wrong(key, value, "text")
            return
        self.set(name, _cut(value.strip()))

    def number(self, obj: Mapping[str, Any], key: str, name: str, *, zero_is_default: bool = False) -> None:
        value = obj.get(key)
        if value is None or value == "":
            return
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                self._wrong(key, value, "a number")
                return
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self._wrong(key, value, "a number")
            return
        if zero_is_default and value == 0:
            return
        self.set(name, float(value))

    def boolean(self, obj: Mapping[str, Any], key: str, name: str) -> None:
        value = obj.get(key)
        if value is None:
            return
        if not isinstance(value, bool):
            self._wrong(key, value, "true/false")
            return
        self.set(name, value)

    def ident(self, obj: Mapping[str, Any], key: str, name: str) -> None:
        value = obj.get(key)
        if value is None or value == "":
            return
        if isinstance(value, str):
            if _NOT_FOUND.match(value):
                self.errors.append(f"{self.label}: {key} is {value.strip()!r} (treated as absent)")
                return
            if value.strip().isdigit() and len(value.strip()) <= 19:  # int() of 5,000 digits raises
                value = int(value.strip())
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**63:
            self._wrong(key, value, "a positive integer id")
            return
        self.set(name, value)

    def sha256(self, value: Any, key: str) -> None:
        if value is None or value == "":
            return
        if not isinstance(value, str):
            self._wrong(key, value, "a SHA256 hex string")
            return
        match = _SHA256.match(value.strip())
        if match is None:
            if _NOT_FOUND.match(value):
                self.errors.append(f"{self.label}: {key} is {value.strip()!r} (treated as absent)")
            else:
                self.errors.append(f"{self.label}: {key} {value[:80]!r} is not a SHA256 hex string (ignored)")
            return
        self.set("sha256", match.group(2).lower())

    def str_list(self, obj: Mapping[str, Any], key: str, name: str, *, split_text: bool = False) -> None:
        value = obj.get(key)
        if value is None:
            return
        if isinstance(value, str) and split_text:
            words = split_list(value)
            if len(words) >= MAX_LIST_ITEMS:
                self.errors.append(
                    f"{self.label}: {key} has more than {MAX_LIST_ITEMS} items; the first {MAX_LIST_ITEMS} kept"
                )
            self.set(name, words)
            return
        if not isinstance(value, list):
            self._wrong(key, value, "a list")
            return
        items: dict[str, None] = {}  # insertion-ordered set: linear de-duplication
        dropped = 0
        for item in value[: MAX_LIST_ITEMS * 4]:
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                item = item["name"]  # older Civitai tags: [{"name": ...}]
            if isinstance(item, str):
                item = item.strip()[:200]
                if item:
                    items[item] = None
                    if len(items) >= MAX_LIST_ITEMS:
                        break
            else:
                dropped += 1
        if dropped:
            self.errors.append(f"{self.label}: {key} has {dropped} non-text item(s) (ignored)")
        if len(value) > MAX_LIST_ITEMS and len(items) >= MAX_LIST_ITEMS:
            self.errors.append(f"{self.label}: {key} has {len(value)} items; the first {MAX_LIST_ITEMS} kept")
        elif len(value) > MAX_LIST_ITEMS * 4:
            self.errors.append(f"{self.label}: {key} has {len(value)} items; only the first {MAX_LIST_ITEMS * 4} read")
        self.set(name, list(items))

    def base_model(self, obj: Mapping[str, Any], key: str) -> None:
        value = obj.get(key)
        if value is None:
            return
        if not isinstance(value, str):
            self._wrong(key, value, "text")
            return
        label = normalize_base_model(value)
        if label:
            self.set("base_model", label)
            self.set("base_model_raw", value)

    def mapping(self, obj: Mapping[str, Any], key: str) -> dict[str, Any] | None:
        value = obj.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            self._wrong(key, value, "an object")
            return None
        return value


def _civitai_version(version: Mapping[str, Any], f: _Fields, path: Path, prefix: str = "") -> None:
    """Fields of a Civitai model-version object (civitai.info, LM ``civitai``, model JSON versions)."""
    f.ident(version, "id", "civitai_version_id")
    f.ident(version, "modelId", "civitai_model_id")
    f.text(version, "name", "version_name")
    f.base_model(version, "baseModel")
    f.str_list(version, "trainedWords", "trigger_words")
    f.text(version, "publishedAt", "published_at")
    f.text(version, "description", "description")
    _nsfw_level(version, f)
    _stats(version, f)
    model = f.mapping(version, "model")
    if model:
        f.text(model, "name", "name")
        f.text(model, "description", "description")
        f.boolean(model, "nsfw", "nsfw")
        f.str_list(model, "tags", "tags")
    _creator(version, f)
    files = version.get("files")
    if isinstance(files, list):
        chosen = _pick_file(files, path)
        if chosen is not None:
            hashes = chosen.get("hashes")
            if isinstance(hashes, dict):
                f.sha256(hashes.get("SHA256"), "files[].hashes.SHA256")
    elif files is not None:
        f._wrong("files", files, "a list")
    images = version.get("images")
    if isinstance(images, list):
        for image in images:
            if isinstance(image, dict) and isinstance(image.get("url"), str) and image["url"].startswith("http"):
                f.set("preview_url", image["url"])
                break
    elif images is not None:
        f._wrong("images", images, "a list")


def _nsfw_level(obj: Mapping[str, Any], f: _Fields) -> None:
    """Civitai's ``nsfwLevel``: a whole number (a bit mask of levels, 1 = PG); 0 or absent = unknown."""
    value = obj.get("nsfwLevel")
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        f._wrong("nsfwLevel", value, "a whole number")
        return
    if value:
        f.set("nsfw_level", value)


_STATS_KEYS = ("downloadCount", "favoriteCount", "thumbsUpCount", "commentCount", "ratingCount", "rating")


def _stats(obj: Mapping[str, Any], f: _Fields) -> None:
    """Civitai ``stats``: the numeric counters only (downloads, favourites, rating...)."""
    stats = f.mapping(obj, "stats")
    if not stats:
        return
    clean = {
        key: stats[key]
        for key in _STATS_KEYS
        if isinstance(stats.get(key), (int, float))
        and not isinstance(stats.get(key), bool)
        and math.isfinite(stats[key])
        and stats[key] >= 0
    }
    if len(clean) < len([k for k in _STATS_KEYS if k in stats]):
        f.errors.append(f"{f.label}: stats has values that are not non-negative numbers (ignored)")
    f.set("stats", clean or None)


def _creator(obj: Mapping[str, Any], f: _Fields) -> None:
    """``creator`` is ``{"username": …}`` in the API, a plain name in some exports."""
    if isinstance(obj.get("creator"), str):
        f.text(obj, "creator", "creator")
        return
    creator = f.mapping(obj, "creator")
    if creator:
        f.text(creator, "username", "creator")


def _pick_file(files: list[Any], path: Path) -> dict[str, Any] | None:
    dicts = [item for item in files if isinstance(item, dict)]
    lowered = path.name.lower()
    for item in dicts:
        if isinstance(item.get("name"), str) and item["name"].lower() == lowered:
            return item
    for item in dicts:
        if item.get("primary") is True:
            return item
    return dicts[0] if len(dicts) == 1 else None


def _parse_civitai_info(obj: Mapping[str, Any], f: _Fields, path: Path) -> None:
    _civitai_version(obj, f, path)


def _parse_a1111(obj: Mapping[str, Any], f: _Fields, path: Path) -> None:
    f.text(obj, "description", "description")
    version = obj.get("sd version")
    if version is not None and not isinstance(version, str):
        f._wrong("sd version", version, "text")
    elif version:
        f.base_model(obj, "sd version")
    f.str_list(obj, "activation text", "trigger_words", split_text=True)
    f.number(obj, "preferred weight", "preferred_weight", zero_is_default=True)
    f.text(obj, "negative text", "negative_text")
    f.text(obj, "notes", "notes")
    f.sha256(obj.get("sha256"), "sha256")
    f.ident(obj, "modelId", "civitai_model_id")
    f.ident(obj, "modelVersionId", "civitai_version_id")


def _parse_civitai_model(obj: Mapping[str, Any], f: _Fields, path: Path) -> None:
    f.ident(obj, "id", "civitai_model_id")
    f.text(obj, "name", "name")
    f.text(obj, "description", "description")
    f.str_list(obj, "tags", "tags")
    _creator(obj, f)
    if isinstance(obj.get("nsfw"), bool):
        f.set("nsfw", obj["nsfw"])
    # The original LoRA Manager also reads these A1111-style keys from the same JSON.
    f.str_list(obj, "activation text", "trigger_words", split_text=True)
    f.number(obj, "weight", "preferred_weight")
    f.number(obj, "default_weight", "preferred_weight")
    version_label = obj.get("sd version")
    if version_label is not None and not isinstance(version_label, str):
        f._wrong("sd version", version_label, "text")
    elif version_label:
        f.base_model(obj, "sd version")
    _nsfw_level(obj, f)
    _stats(obj, f)
    versions = obj.get("modelVersions")
    if not isinstance(versions, list):
        f._wrong("modelVersions", versions, "a list")
        return
    dicts = [v for v in versions if isinstance(v, dict)]
    if len(dicts) != len(versions):
        f.errors.append(f"{f.label}: modelVersions has {len(versions) - len(dicts)} non-object item(s) (ignored)")
    chosen = None
    lowered = path.name.lower()
    for version in dicts:
        files = version.get("files")
        if isinstance(files, list) and any(
            isinstance(x, dict) and isinstance(x.get("name"), str) and x["name"].lower() == lowered for x in files
        ):
            chosen = version
            break
    if chosen is None and dicts:
        chosen = dicts[0]
    if chosen is not None:
        saved = f.values.pop("civitai_model_id", None)
        _civitai_version(chosen, f, path)
        if saved is not None:
            f.values["civitai_model_id"] = saved


def _parse_lm_metadata(obj: Mapping[str, Any], f: _Fields, path: Path) -> None:
    f.text(obj, "model_name", "name")
    f.text(obj, "modelDescription", "description")
    f.base_model(obj, "base_model")
    f.str_list(obj, "tags", "tags")
    f.text(obj, "notes", "notes")
    f.boolean(obj, "favorite", "favorite")
    f.sha256(obj.get("sha256"), "sha256")
    f.text(obj, "preview_url", "preview_url")
    tips = obj.get("usage_tips")
    if isinstance(tips, str) and tips.strip():
        try:
            tips = orjson.loads(tips)
        except orjson.JSONDecodeError:
            f.errors.append(f"{f.label}: usage_tips is not valid JSON (ignored)")
            tips = None
    if isinstance(tips, dict):
        clean = {
            k: float(v)
            for k, v in tips.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        }
        f.set("usage_tips", clean or None)
        if "strength" in clean:
            f.set("preferred_weight", clean["strength"])
    elif tips not in (None, ""):
        f._wrong("usage_tips", tips, "a JSON object string")
    civitai = f.mapping(obj, "civitai")
    if civitai:
        _civitai_version(civitai, f, path)


_PARSERS: dict[str, Callable[[Mapping[str, Any], _Fields, Path], None]] = {
    "civitai.info": _parse_civitai_info,
    "a1111.json": _parse_a1111,
    "civitai.model.json": _parse_civitai_model,
    "lm.metadata.json": _parse_lm_metadata,
}


# --- merging -------------------------------------------------------------------------------------


def merge_fields(fields_by_source: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, Any], dict[str, str]]:
    """Merge per-source fields by the documented precedence.

    Returns ``(merged, sources)``: ``merged[field]`` is the winning value and ``sources[field]``
    the source it came from (a key of ``fields_by_source``).
    """
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    names = {name for values in fields_by_source.values() for name in values}
    for name in sorted(names):
        order = IDENTITY_ORDER if name in IDENTITY_FIELDS else DESCRIPTIVE_ORDER
        for source in order + tuple(s for s in fields_by_source if s not in order):
            values = fields_by_source.get(source)
            if values and name in values:
                merged[name] = values[name]
                sources[name] = source
                break
    return merged, sources
