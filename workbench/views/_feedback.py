"""Feedback from widget callbacks: errors are logged on the server and a visitor sees a generic line.

Voilà's ``show_tracebacks=False`` only hides errors raised while the notebook runs; an exception inside a
widget callback would still reach the page with its traceback. :func:`guarded` stops that, and
:class:`NoticeWidget` is the one place an anywidget view shows a short message in its page.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import anywidget
import traitlets as t

log = logging.getLogger("workbench.views")

GENERIC_ERROR = "Something went wrong. The details are in the server log."
#: what a viewer (``workbench dashboard --read-only``) sees when the kernel refuses an edit
READ_ONLY_MESSAGE = "This dashboard is read-only: changes are not allowed."

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


class NoticeWidget(anywidget.AnyWidget):
    """An anywidget with a ``notice`` trait its browser half shows as a short message."""

    notice = t.Dict({"seq": 0, "text": "", "level": "info"}).tag(sync=True)

    def notify(self, text: str, level: str = "info") -> None:
        """Show a short message in the page (``level``: info, success, error)."""
        seq = self.notice.get("seq", 0)
        self.notice = {"seq": (seq if isinstance(seq, int) else 0) + 1, "text": str(text)[:500], "level": level}

    def notify_error(self, text: str) -> None:
        self.notify(text, "error")
