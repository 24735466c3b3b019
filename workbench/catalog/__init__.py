"""The DuckDB catalog and what writes it: db access, schema, :class:`Catalog`, scan, hashing, Civitai (dump
import and the online client) and archives. Imports only :mod:`workbench.files` of the rest of the package."""

from __future__ import annotations

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
from workbench.catalog._weights import DEFAULT_THRESHOLD, Weights, group_by_signatures

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
