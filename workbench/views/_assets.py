"""Find the browser half of the custom widgets (ES modules and CSS): ``widgets/`` in a checkout,
the package ``workbench.widgets`` in a wheel."""

from __future__ import annotations

from pathlib import Path

from workbench._home import bundled_file


def asset_path(name: str) -> Path:
    """Path of a widget asset such as ``"gallery.js"``; raises FileNotFoundError when it is nowhere."""
    return bundled_file("widgets", name)


def read_asset(name: str) -> str:
    """Text of a widget asset (what anywidget sends to the browser as ``_esm`` / ``_css``)."""
    return asset_path(name).read_text(encoding="utf-8")
