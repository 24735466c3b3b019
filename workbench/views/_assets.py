"""Find the browser half of the custom widgets (ES modules and CSS).

Installed, they ship inside the wheel as the package ``workbench.widgets``; in a
source checkout they are the top-level ``widgets/`` folder next to ``workbench/``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

_REPO_WIDGETS = Path(__file__).resolve().parents[2] / "widgets"


def asset_path(name: str) -> Path:
    """Path of a widget asset such as ``"gallery.js"``.

    Raises:
        FileNotFoundError: when neither the installed package nor the checkout has it.
    """
    try:
        candidate = resources.files("workbench.widgets") / name
        if candidate.is_file():
            return Path(str(candidate))
    except (ModuleNotFoundError, TypeError):
        pass
    fallback = _REPO_WIDGETS / name
    if fallback.is_file():
        return fallback
    raise FileNotFoundError(f"widget asset {name!r} not found in workbench.widgets or {_REPO_WIDGETS}")


def read_asset(name: str) -> str:
    """Text of a widget asset (what anywidget sends to the browser as ``_esm`` / ``_css``)."""
    return asset_path(name).read_text(encoding="utf-8")
