"""Checking what a browser sends to a widget, and turning catalog values into plain JSON for it.

Every message from a page is untrusted: each value is checked for type, range and length before it
reaches the core, and anything that does not fit raises :class:`InvalidMessage` (logged, dropped).
"""

from __future__ import annotations

import math
from typing import Any

MAX_TEXT = 200
MAX_LIST = 50
MAX_SELECTION = 100_000


class InvalidMessage(ValueError):
    """A browser message that does not fit the whitelist; it is dropped and logged."""


def clean_text(value: Any, limit: int = MAX_TEXT) -> str:
    """A bounded single string, or an error for anything that is not a string."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidMessage(f"expected a string, got {type(value).__name__}")
    return value.replace("\x00", "").strip()[:limit]


def clean_strings(value: Any, limit: int = MAX_LIST, item_limit: int = MAX_TEXT) -> list[str]:
    """A bounded list of non-empty unique strings (a comma separated string is split)."""
    if value is None:
        return []
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, (list, tuple)):
        raise InvalidMessage(f"expected a list of strings, got {type(value).__name__}")
    out: list[str] = []
    for item in value[: limit * 2]:
        text = clean_text(item, item_limit)
        if text and text not in out:
            out.append(text)
    return out[:limit]


def clean_int(value: Any, low: int, high: int) -> int:
    """An int in [low, high]; bools and floats with a fraction are refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidMessage(f"expected an integer, got {type(value).__name__}")
    if isinstance(value, float) and (not math.isfinite(value) or value != int(value)):
        raise InvalidMessage("expected an integer")
    number = int(value)
    if not low <= number <= high:
        raise InvalidMessage(f"{number} is outside [{low}, {high}]")
    return number


def clean_ids(value: Any, limit: int = MAX_SELECTION) -> list[int]:
    """A list of positive int ids (unique, order kept)."""
    if not isinstance(value, (list, tuple)):
        raise InvalidMessage("expected a list of ids")
    if len(value) > limit:
        raise InvalidMessage(f"more than {limit} ids")
    seen: dict[int, None] = {}
    for item in value:
        seen[clean_int(item, 0, 2**62)] = None
    return list(seen)


def clean_tristate(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise InvalidMessage("expected true, false or null")


def json_value(value: Any) -> Any:
    """A JSON-safe plain value (numpy scalars, NaN, timestamps and arrays converted)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "tolist") and not isinstance(value, (bytes, bytearray)):
        return json_value(value.tolist())
    if isinstance(value, (list, tuple, set)):
        return [json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if hasattr(value, "isoformat"):
        try:
            return value.isoformat()
        except ValueError:  # NaT
            return None
    if isinstance(value, (bytes, bytearray)):
        return None
    try:
        if value != value:  # pandas NA / NaT
            return None
    except (TypeError, ValueError):
        return None
    return str(value)
