"""Training metadata stored in a safetensors ``__metadata__`` map (kohya ``ss_*``, ``modelspec.*``, ``ssmd_*``).

The map is str → str. Some values are JSON strings that need a second parse; numbers and
booleans are strings ("8", "True", "None") and stay so in :func:`decode_metadata` — use the typed
helpers (:func:`md_int`, :func:`md_float`, :func:`md_bool`, :func:`md_text`) to read them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from operator import itemgetter
from typing import Any

import orjson

NESTED_JSON_KEYS = (
    "ss_tag_frequency",
    "ss_dataset_dirs",
    "ss_datasets",
    "ss_bucket_info",
    "ss_network_args",
    "ssmd_cover_images",
    "ss_reg_dataset_dirs",
)
EMBEDDED_IMAGE_KEYS = ("ssmd_cover_images", "modelspec.thumbnail")
MAX_NESTED_DEPTH = 64
TRAINING_TAGS_LIMIT = 50
#: Nested JSON values longer than this are not decoded (a 50 MB ``ss_tag_frequency`` would cost ~1 GB).
MAX_NESTED_JSON_CHARS = 8 * 1024 * 1024
#: Nested JSON values longer than this are kept in the decoded metadata only as a short note.
MAX_STORED_JSON_CHARS = 256 * 1024
#: Plain metadata strings longer than this are cut in the decoded metadata.
MAX_STORED_TEXT_CHARS = 64 * 1024
#: Metadata keys longer than this (real ones are < 40 characters) are cut, with their value.
MAX_KEY_CHARS = 200
#: Per-tag counts and their sums saturate here (JSON-safe integers; kohya counts are small).
MAX_TAG_COUNT = 2**53 - 1
#: Distinct training tags kept by :func:`tag_frequency`.
MAX_DISTINCT_TAGS = 200_000

# In tags joined by NUL: an empty tag, or one with leading/trailing whitespace.
_UNTRIMMED = re.compile(r"(?:^|\x00)(?:\s|\x00|$)|\s(?:\x00|$)")


def json_depth_exceeds(value: Any, limit: int = MAX_NESTED_DEPTH) -> bool:
    """True when ``value`` nests lists/dicts deeper than ``limit`` (checked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children: Iterable[Any]
        if type(item) is dict:
            children = item.values()
        elif type(item) is list:
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if type(child) in (dict, list))
    return False


def _decode_json_string(value: str) -> Any:
    if len(value) > MAX_NESTED_JSON_CHARS:
        return value
    try:
        decoded = orjson.loads(value)
    except orjson.JSONDecodeError:
        return value
    # Depth can only exceed the limit if there are that many brackets; skip the walk otherwise.
    if value.count("{") + value.count("[") > MAX_NESTED_DEPTH and json_depth_exceeds(decoded):
        return value
    return decoded


def decode_metadata(raw: Mapping[str, str]) -> dict[str, Any]:
    """A copy of the metadata with nested JSON strings decoded and embedded images summarised.

    Embedded images (``ssmd_cover_images``, ``modelspec.thumbnail``) can be megabytes of base64;
    they are replaced by a short note here and read on demand with
    ``workbench.files._previews.extract_embedded_preview``. Undecodable nested JSON stays a string.
    """
    out: dict[str, Any] = dict(raw)
    for key, text in raw.items():
        if len(key) > MAX_KEY_CHARS:
            del out[key]
            out[key[:MAX_KEY_CHARS] + f"… <cut: {len(key)} characters>"] = text[:MAX_KEY_CHARS]
        elif len(text) > MAX_STORED_TEXT_CHARS and key not in NESTED_JSON_KEYS and key not in EMBEDDED_IMAGE_KEYS:
            out[key] = text[:MAX_STORED_TEXT_CHARS] + f"… <cut: {len(text)} characters in the file>"
    for key in NESTED_JSON_KEYS:
        value = out.get(key)
        if isinstance(value, str) and len(value) > MAX_STORED_JSON_CHARS and key != "ssmd_cover_images":
            out[key] = f"<{len(value)} characters of JSON, too large to keep; see training_tags>"
        elif isinstance(value, str) and value[:1] in ("{", "["):
            out[key] = _decode_json_string(value)
    covers = out.get("ssmd_cover_images")
    if covers is not None and covers != "" and covers != "[]":
        count = len(covers) if isinstance(covers, list) else 1
        size = len(raw.get("ssmd_cover_images", ""))
        out["ssmd_cover_images"] = f"<{count} embedded image(s), {size} base64 characters>"
    thumb = out.get("modelspec.thumbnail")
    if isinstance(thumb, str) and len(thumb) > 256:
        out["modelspec.thumbnail"] = f"<embedded image, {len(thumb)} characters>"
    return out


# --- typed helpers ----------------------------------------------------------------------------


def md_text(md: Mapping[str, Any], key: str) -> str | None:
    """A stripped string value; ``""`` and ``"None"`` count as absent."""
    value = md.get(key)
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value if value and value != "None" else None


def md_float(md: Mapping[str, Any], key: str) -> float | None:
    """A finite float from a string or number value, else None."""
    value = md.get(key)
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        result = float(value)
    else:
        text = md_text(md, key)
        if text is None:
            return None
        try:
            result = float(text)
        except ValueError:
            return None
    return result if math.isfinite(result) else None


def md_int(md: Mapping[str, Any], key: str) -> int | None:
    """An int from "16" or "16.0"; None for anything else."""
    value = md_float(md, key)
    if value is None or value != int(value):
        return None
    return int(value)


def md_bool(md: Mapping[str, Any], key: str) -> bool | None:
    """True/False from "True"/"False"/"1"/"0" (any case); None otherwise."""
    value = md.get(key)
    if isinstance(value, bool):
        return value
    text = (md_text(md, key) or "").lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    return None


#: Items kept from one list of words or tags (trigger words, tags); the rest is dropped with a note.
MAX_LIST_ITEMS = 1000


def split_list(text: str | None, limit: int = MAX_LIST_ITEMS) -> list[str]:
    """Split a comma-separated list, dropping empties and repeats (order kept); at most ``limit`` items."""
    if not text:
        return []
    seen: dict[str, None] = {}
    for part in text.split(","):
        part = part.strip()
        if part:
            seen.setdefault(part, None)
            if len(seen) >= limit:
                break
    return list(seen)


# --- tags --------------------------------------------------------------------------------------


def tag_frequency(md: Mapping[str, Any]) -> dict[str, int]:
    """Caption-tag counts summed over all dataset folders, most frequent first.

    ``ss_tag_frequency`` is ``{dataset_dir: {tag: count}}`` (decoded or still a JSON string).
    Hostile values stay bounded: counts are clamped to ``0..MAX_TAG_COUNT`` (2**64 - 1 or 1e308 would
    not fit a 64-bit column), at most ``MAX_DISTINCT_TAGS`` tags are counted, and a value over
    ``MAX_NESTED_JSON_CHARS`` is not decoded at all.
    """
    value = md.get("ss_tag_frequency")
    if isinstance(value, str):
        value = _decode_json_string(value)
    if not isinstance(value, dict):
        return {}
    totals: dict[str, int] = {}
    get = totals.get
    for per_dir in value.values():
        if type(per_dir) is not dict:
            continue
        for tag, count in per_dir.items():
            if type(count) is not int:
                if type(count) is not float or not math.isfinite(count):
                    continue
                count = int(min(count, MAX_TAG_COUNT))
            if count < 0:
                continue
            total = get(tag)
            if total is None:
                if len(totals) >= MAX_DISTINCT_TAGS:
                    continue
                total = 0
            totals[tag] = min(total + count, MAX_TAG_COUNT)
    if _UNTRIMMED.search("\x00".join(totals)):  # rare: a tag with outer whitespace, or an empty tag
        cleaned: dict[str, int] = {}
        for tag, count in totals.items():
            tag = tag.strip()
            if tag:
                cleaned[tag] = cleaned.get(tag, 0) + count
        totals = cleaned
    items = sorted(totals.items())
    items.sort(key=itemgetter(1), reverse=True)  # stable: equal counts stay alphabetical
    return dict(items)


def training_tags(
    md: Mapping[str, Any], limit: int = TRAINING_TAGS_LIMIT, frequency: Mapping[str, int] | None = None
) -> list[tuple[str, int]]:
    """The ``limit`` most frequent training tags as ``(tag, count)`` pairs."""
    freq = tag_frequency(md) if frequency is None else frequency
    return list(freq.items())[:limit]


# --- descriptive fields -------------------------------------------------------------------------


def header_fields(md: Mapping[str, Any]) -> dict[str, Any]:
    """Name, description, trigger words, tags and author found in header metadata.

    Same field names as ``workbench.files._sidecars`` so both can be merged (source ``'header'``).
    """
    fields: dict[str, Any] = {}
    name = md_text(md, "ssmd_display_name") or md_text(md, "modelspec.title") or md_text(md, "ss_output_name")
    if name:
        fields["name"] = name
    description = (
        md_text(md, "ssmd_description") or md_text(md, "modelspec.description") or md_text(md, "ss_training_comment")
    )
    if description:
        fields["description"] = description
    triggers = split_list(md_text(md, "ssmd_keywords"))
    phrase = md_text(md, "modelspec.trigger_phrase")
    if phrase and phrase not in triggers:
        triggers.append(phrase)
    if triggers:
        fields["trigger_words"] = triggers
    tags = split_list(md_text(md, "ssmd_tags")) or split_list(md_text(md, "modelspec.tags"))
    if tags:
        fields["tags"] = tags
    author = md_text(md, "ssmd_author") or md_text(md, "modelspec.author")
    if author:
        fields["creator"] = author
    return fields


def name_candidates(md: Mapping[str, Any]) -> list[str]:
    """Every display-name the header offers, best first."""
    names = [md_text(md, key) for key in ("ssmd_display_name", "modelspec.title", "ss_output_name")]
    return [n for n in dict.fromkeys(names) if n]
