"""The one object a notebook opens: settings, catalog and (lazily) everything built on it."""
from __future__ import annotations

import html
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench._db import Database
from workbench._home import resolve_home
from workbench.catalog import Catalog

if TYPE_CHECKING:
    from workbench.scanner import ScanReport


class Workbench:
    """A workbench home: `catalog.duckdb`, its index, thumbnails and generated images."""

    def __init__(self, home: str | os.PathLike[str] | None = None, *, lock_timeout: float = 120.0) -> None:
        self.home: Path = resolve_home(home)
        self.db = Database(self.home / "catalog.duckdb", timeout=lock_timeout)
        self.catalog = Catalog(self.db)

    # -- library -----------------------------------------------------------------------
    @property
    def roots(self) -> list[Path]:
        """Library roots scanned into this catalog (the only folders besides home that may be served)."""
        return [Path(p) for p in self.catalog.roots()]

    def scan(
        self,
        roots: Iterable[str | os.PathLike[str]] | str | os.PathLike[str] | None = None,
        *,
        workers: int | None = None,
        progress: bool = True,
    ) -> ScanReport:
        """Scan library roots (default: the ones scanned before) into the catalog, incrementally."""
        from workbench.scanner import scan

        if roots is None:
            roots = self.roots
        elif isinstance(roots, (str, os.PathLike)):
            roots = [roots]
        return scan(self.db, [Path(r) for r in roots], workers=workers, progress=progress)

    def hash(self, ids: Iterable[int] | None = None, *, progress: bool = True, workers: int | None = None) -> int:
        """Compute missing file hashes (SHA256, AutoV1/V2, tensor hash); returns how many files were hashed."""
        from workbench.hashes import hash_catalog

        return hash_catalog(self.db, ids=ids, progress=progress, workers=workers)

    def hash_in_background(self) -> Any:
        """Start hashing in a daemon thread; returns the thread (join it to wait)."""
        from workbench.hashes import hash_in_background

        return hash_in_background(self.db)

    def is_servable(self, path: str | os.PathLike[str]) -> bool:
        """True only for files inside a library root or the workbench home (what a view may show)."""
        try:
            real = Path(path).resolve(strict=True)
        except (OSError, RuntimeError):
            return False
        for base in [self.home, *self.roots]:
            try:
                real.relative_to(base.resolve())
                return real.is_file()
            except (ValueError, OSError):
                continue
        return False

    def _repr_html_(self) -> str:
        return (
            f"<b>LoRA Workbench</b> at <code>{html.escape(str(self.home))}</code><br>"
            + self.catalog._repr_html_()
        )

    def __repr__(self) -> str:
        return f"Workbench(home={str(self.home)!r})"


def open(home: str | os.PathLike[str] | None = None, **kwargs: Any) -> Workbench:  # noqa: A001 - mirrors builtins by design
    """Open (creating if needed) the workbench at `home` ($WORKBENCH_HOME or the platform data dir)."""
    return Workbench(home, **kwargs)
