"""The DuckDB catalog and what writes it: db access, schema, :class:`Catalog`, scan, hashing, Civitai dump
import and archives. Imports only :mod:`workbench.files` of the rest of the package."""

from __future__ import annotations

from workbench.catalog._archive import ArchiveError, ImportReport, export_archive, import_archive
from workbench.catalog._catalog import CONTRACT_COLUMNS, USER_FIELDS, Catalog, CatalogError, validate_user_fields
from workbench.catalog._civitai_dump import import_civitai, import_items, item_to_record, link_local_files, read_items
from workbench.catalog._custom_previews import set_preview
from workbench.catalog._db import CatalogBusyError, Database
from workbench.catalog._hashing import hash_catalog, hash_in_background
from workbench.catalog._scan import LORA_SUFFIXES, ScanReport, scan

__all__ = [
    "CONTRACT_COLUMNS",
    "LORA_SUFFIXES",
    "USER_FIELDS",
    "ArchiveError",
    "Catalog",
    "CatalogBusyError",
    "CatalogError",
    "Database",
    "ImportReport",
    "ScanReport",
    "export_archive",
    "hash_catalog",
    "hash_in_background",
    "import_archive",
    "import_civitai",
    "import_items",
    "item_to_record",
    "link_local_files",
    "read_items",
    "scan",
    "set_preview",
    "validate_user_fields",
]
