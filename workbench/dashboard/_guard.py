"""Run Voilà behind a request guard, so malformed URLs get a 4xx instead of an HTTP 500 from its handlers.

Why: Voilà 0.5 and jupyter_server answer a few odd URLs with an uncaught exception (HTTP 500 and a
traceback in the log): a NUL byte in the path (``/%00``, ``/voila/templates/lab/static/a%00b``), a
``..`` segment under the template static route (an ``assert``), and ``/logout`` (a template this
app does not ship). The guard looks at the raw path before any handler runs and answers such
requests with tornado's plain ``ErrorHandler``: 400 for bytes no URL may hold, 404 for path tricks. ``workbench dashboard`` starts
``python -m workbench.dashboard._guard`` with the usual Voilà arguments.
"""

from __future__ import annotations

import sys
from typing import Any
from urllib.parse import unquote_to_bytes

#: Paths of jupyter_server's login pages: the dashboard has none (and /logout renders a missing template).
_NOT_HERE = ("/logout", "/logout/")


def rejected_status(path: str) -> int | None:
    """The status to answer a raw request path with before routing, or None to let it through."""
    raw = unquote_to_bytes(path)
    if any(byte < 32 or byte == 127 for byte in raw):
        return 400  # NUL and control characters: never a file or route name
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return 400
    if "\\" in text or any(part in ("..", ".") for part in text.split("/")[1:]):
        return 404  # dot segments and backslashes: path tricks that name nothing served here
    if text in _NOT_HERE:
        return 404
    return None


def install() -> None:
    """Route rejected paths to tornado's ErrorHandler in every tornado Application of this process."""
    from tornado import web

    if getattr(web.Application.find_handler, "_workbench_guard", False):
        return
    original = web.Application.find_handler

    def find_handler(self: Any, request: Any, **kwargs: Any) -> Any:
        status = rejected_status(request.path)
        if status is not None:
            return self.get_handler_delegate(request, web.ErrorHandler, {"status_code": status})
        return original(self, request, **kwargs)

    find_handler._workbench_guard = True  # type: ignore[attr-defined]
    web.Application.find_handler = find_handler  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    install()
    from voila.app import main as voila_main

    sys.argv = [sys.argv[0], *(sys.argv[1:] if argv is None else argv)]
    return int(voila_main() or 0)


if __name__ == "__main__":
    raise SystemExit(main())
