"""The DuckDB catalog and what writes it: db access, schema, :class:`Catalog`, scan, hashing, Civitai (dump
import and the online client) and archives. Imports only :mod:`workbench.files` of the rest of the package.

Names load on first use (module ``__getattr__``): a scan needs DuckDB but not pandas, and the command
line's ``scan`` with nothing to do must not pay ~0.8 s for pandas it never uses."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workbench.catalog._archive import ArchiveError, ImportReport, export_archive, import_archive
    from workbench.catalog._backup import BackupError, BackupInfo, backup_home, list_backups, restore_backup
    from workbench.catalog._catalog import CONTRACT_COLUMNS, Catalog, CatalogError, LoraFilters, validate_user_fields
    from workbench.catalog._civitai_client import CivitaiClient, CivitaiError, parse_retry_after
    from workbench.catalog._civitai_download import DownloadResult, safe_destination
    from workbench.catalog._civitai_dump import (
        CivitaiImportReport,
        import_civitai,
        import_items,
        item_to_record,
        link_local_files,
        read_items,
    )
    from workbench.catalog._civitai_online import CivitaiOnline, FetchReport, parse_civitai_ref
    from workbench.catalog._custom_previews import set_preview
    from workbench.catalog._db import CatalogBusyError, Database
    from workbench.catalog._hashing import hash_catalog, hash_in_background
    from workbench.catalog._scan import (
        MAX_ERROR_CHARS,
        MAX_NOTE_CHARS,
        MAX_NOTES,
        MAX_STORED_JSON_BYTES,
        RootRefusedError,
        ScanReport,
        scan,
    )
    from workbench.catalog._schema import MIGRATIONS
    from workbench.catalog._weights import DEFAULT_THRESHOLD, Weights, analysis_summary, group_by_signatures

#: public name -> the private module that defines it
_DEFINED_IN: dict[str, str] = {
    "ArchiveError": "_archive",
    "ImportReport": "_archive",
    "export_archive": "_archive",
    "import_archive": "_archive",
    "BackupError": "_backup",
    "BackupInfo": "_backup",
    "backup_home": "_backup",
    "list_backups": "_backup",
    "restore_backup": "_backup",
    "CONTRACT_COLUMNS": "_catalog",
    "Catalog": "_catalog",
    "CatalogError": "_catalog",
    "LoraFilters": "_catalog",
    "validate_user_fields": "_catalog",
    "CivitaiClient": "_civitai_client",
    "CivitaiError": "_civitai_client",
    "parse_retry_after": "_civitai_client",
    "DownloadResult": "_civitai_download",
    "safe_destination": "_civitai_download",
    "CivitaiImportReport": "_civitai_dump",
    "import_civitai": "_civitai_dump",
    "import_items": "_civitai_dump",
    "item_to_record": "_civitai_dump",
    "link_local_files": "_civitai_dump",
    "read_items": "_civitai_dump",
    "CivitaiOnline": "_civitai_online",
    "FetchReport": "_civitai_online",
    "parse_civitai_ref": "_civitai_online",
    "set_preview": "_custom_previews",
    "CatalogBusyError": "_db",
    "Database": "_db",
    "hash_catalog": "_hashing",
    "hash_in_background": "_hashing",
    "MAX_ERROR_CHARS": "_scan",
    "MAX_NOTES": "_scan",
    "MAX_NOTE_CHARS": "_scan",
    "MAX_STORED_JSON_BYTES": "_scan",
    "RootRefusedError": "_scan",
    "ScanReport": "_scan",
    "scan": "_scan",
    "MIGRATIONS": "_schema",
    "DEFAULT_THRESHOLD": "_weights",
    "analysis_summary": "_weights",
    "Weights": "_weights",
    "group_by_signatures": "_weights",
}

__all__ = [
    "ArchiveError",
    "backup_home",
    "BackupError",
    "BackupInfo",
    "Catalog",
    "CatalogBusyError",
    "CatalogError",
    "CivitaiClient",
    "CivitaiError",
    "CivitaiImportReport",
    "CivitaiOnline",
    "CONTRACT_COLUMNS",
    "Database",
    "DEFAULT_THRESHOLD",
    "analysis_summary",
    "DownloadResult",
    "export_archive",
    "FetchReport",
    "group_by_signatures",
    "hash_catalog",
    "hash_in_background",
    "import_archive",
    "import_civitai",
    "import_items",
    "ImportReport",
    "item_to_record",
    "link_local_files",
    "list_backups",
    "LoraFilters",
    "MAX_ERROR_CHARS",
    "MAX_NOTE_CHARS",
    "MAX_NOTES",
    "MAX_STORED_JSON_BYTES",
    "MIGRATIONS",
    "parse_civitai_ref",
    "parse_retry_after",
    "read_items",
    "restore_backup",
    "RootRefusedError",
    "safe_destination",
    "scan",
    "ScanReport",
    "set_preview",
    "validate_user_fields",
    "Weights",
]


def __getattr__(name: str) -> Any:
    """Import the module behind a public name on first use and cache the name in this package."""
    module = _DEFINED_IN.get(name)
    if module is None:
        raise AttributeError(f"module 'workbench.catalog' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"workbench.catalog.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
