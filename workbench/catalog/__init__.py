"""The DuckDB catalog and what writes it: db access, schema, :class:`Catalog`, scan, hashing, Civitai dump
import and archives. Imports only :mod:`workbench.files` of the rest of the package."""

from __future__ import annotations

from workbench.catalog._archive import ArchiveError, ImportReport, export_archive, import_archive
from workbench.catalog._backup import BackupError, BackupInfo, backup_home, list_backups, restore_backup
from workbench.catalog._catalog import CONTRACT_COLUMNS, USER_FIELDS, Catalog, CatalogError, validate_user_fields
from workbench.catalog._civitai_dump import import_civitai, import_items, item_to_record, link_local_files, read_items
from workbench.catalog._db import CatalogBusyError, Database
from workbench.catalog._hashing import hash_catalog, hash_in_background
from workbench.catalog._scan import LORA_SUFFIXES, ScanReport, scan

__all__ = [
    "CONTRACT_COLUMNS",
    "LORA_SUFFIXES",
    "USER_FIELDS",
    "ArchiveError",
    "BackupError",
    "BackupInfo",
    "Catalog",
    "CatalogBusyError",
    "CatalogError",
    "Database",
    "ImportReport",
    "ScanReport",
    "backup_home",
    "export_archive",
    "hash_catalog",
    "hash_in_background",
    "import_archive",
    "import_civitai",
    "import_items",
    "item_to_record",
    "link_local_files",
    "list_backups",
    "read_items",
    "restore_backup",
    "scan",
    "validate_user_fields",
]
