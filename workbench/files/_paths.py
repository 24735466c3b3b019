"""Paths as the catalog stores them, and the library-root rules every reader of a file obeys.

POSIX file names are bytes; Python decodes the ones that are not UTF-8 with ``surrogateescape``
(``bad\\xff.safetensors`` becomes ``'bad\\udcff.safetensors'``), which no UTF-8 store (DuckDB, JSON,
a browser) accepts. :func:`catalog_path` turns such a name into plain text that round-trips through
:func:`fs_path`; every other path is stored unchanged, so ordinary (and Windows) paths stay as typed.

The escaped form: backslashes doubled, each undecodable byte written ``\\xhh`` (lower-case hex,
``80``–``ff``). A path is escaped exactly when it holds an undecodable byte or the literal text
``\\x8``…``\\xf`` + hex digit, so a stored string is escaped exactly when it contains that text:
the two forms never collide.

Library roots: :func:`is_inside` decides whether a resolved path lies under a root, and
:func:`refuse_system_root` names the folders that are never a library (``/``, ``/proc``, ``/etc``…).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

# The literal text an escaped path always contains and a plain one never does.
_ESCAPE_MARK = re.compile(r"\\x[89a-f][0-9a-f]")
_SURROGATE = re.compile("[\udc80-\udcff]")
_TOKEN = re.compile(r"\\\\|\\x([89a-f][0-9a-f])")

#: Folders (and everything under them) that are never scanned: pseudo file systems and the system.
SYSTEM_FOLDERS = (
    "/proc",
    "/sys",
    "/dev",
    "/run",
    "/boot",
    "/etc",
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/var/run",
    "/var/log",
)


def catalog_path(path: str | os.PathLike[str]) -> str:
    """The text stored for ``path``: unchanged when it is valid UTF-8, else escaped (see module doc)."""
    text = os.fspath(path)
    if not _SURROGATE.search(text) and not _ESCAPE_MARK.search(text):
        return text
    text = text.replace("\\", "\\\\")
    return _SURROGATE.sub(lambda m: f"\\x{ord(m.group()) - 0xDC00:02x}", text)


def fs_path(stored: str | os.PathLike[str]) -> str:
    """The file-system path (``surrogateescape`` str) of a path stored by :func:`catalog_path`."""
    text = os.fspath(stored)
    if not _ESCAPE_MARK.search(text):
        return text
    return _TOKEN.sub(lambda m: "\\" if m.group(1) is None else chr(0xDC00 + int(m.group(1), 16)), text)


def printable(text: str) -> str:
    """``text`` with undecodable bytes shown as ``\\xhh`` (for messages; not reversible)."""
    return _SURROGATE.sub(lambda m: f"\\x{ord(m.group()) - 0xDC00:02x}", text)


def is_inside(resolved: str, roots: Iterable[str]) -> bool:
    """True when the resolved path ``resolved`` is one of ``roots`` or lies under one (no symlinks followed)."""
    for root in roots:
        root = root.rstrip(os.sep) or os.sep
        if resolved == root or resolved.startswith(root if root == os.sep else root + os.sep):
            return True
    return False


def refuse_system_root(resolved: str) -> str | None:
    """Why the resolved folder ``resolved`` may not be a library root (``/``, a system folder), or None."""
    if resolved == os.sep or os.path.dirname(resolved) == resolved:
        return f"{printable(resolved)} is the file-system root; scan the folder that holds your LoRAs instead"
    for folder in SYSTEM_FOLDERS:
        if resolved == folder or resolved.startswith(folder + os.sep):
            return f"{printable(resolved)} is a system folder ({folder}); scan the folder that holds your LoRAs instead"
    return None
