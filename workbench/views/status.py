"""Error guarding for widget callbacks, and a small library status line.

Voilà's ``show_tracebacks=False`` only hides errors raised while the notebook runs;
an exception inside a widget callback would still reach the page (or an Output
widget) with its traceback. :func:`guarded` logs it on the server and shows the
visitor a generic message instead.
"""

from __future__ import annotations

import functools
import html
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import ipywidgets

log = logging.getLogger("workbench.views")

GENERIC_ERROR = "Something went wrong. The details are in the server log."

F = TypeVar("F", bound=Callable[..., Any])


def guarded(func: F | None = None, *, notify: Callable[[str], None] | None = None) -> Any:
    """Decorate a widget callback so an exception is logged, never shown to a visitor.

    The visitor sees :data:`GENERIC_ERROR`: through ``notify`` when given, else through
    ``self.notify_error`` when the callback is a method of a widget that has one.
    Usable bare (``@guarded``) or with arguments (``@guarded(notify=...)``).
    """

    def decorate(callback: F) -> F:
        @functools.wraps(callback)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return callback(*args, **kwargs)
            except Exception:
                log.exception("error in widget callback %s", getattr(callback, "__qualname__", callback))
                target = notify
                if target is None and args and hasattr(args[0], "notify_error"):
                    target = args[0].notify_error
                if target is not None:
                    try:
                        target(GENERIC_ERROR)
                    except Exception:
                        log.exception("error while reporting an error")
                return None

        return wrapper  # type: ignore[return-value]

    if func is not None:
        return decorate(func)
    return decorate


class StatusView(ipywidgets.HTML):
    """One line about the library: how many LoRAs, how many missing or broken, which roots."""

    def __init__(self, wb: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._wb = wb
        self.add_class("wb-status")
        self.refresh()

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
