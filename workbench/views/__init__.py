"""Widgets over the workbench core: gallery, detail, library, status, recommend, generate, queue, history, compare,
analytics, system status, maintenance.

Names are imported on first use, so ``import workbench.views.status`` stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "GalleryWidget": "workbench.views.gallery",
    "DetailWidget": "workbench.views.detail",
    "LibraryView": "workbench.views.library",
    "library_view": "workbench.views.library",
    "dashboard_tabs": "workbench.views.library",
    "DashboardTabs": "workbench.views.library",
    "StatusView": "workbench.views.status",
    "guarded": "workbench.views._feedback",
    "GENERIC_ERROR": "workbench.views._feedback",
    "READ_ONLY_MESSAGE": "workbench.views._feedback",
    "catalog_watcher": "workbench.views._live",
    "CatalogWatcher": "workbench.views._live",
    "stamp_signature": "workbench.views._live",
    "RecommendPanel": "workbench.views.recommend",
    "recommend_tab": "workbench.views.recommend",
    "GenerateView": "workbench.views.generate",
    "generation_tabs": "workbench.views.generate",
    "QueueView": "workbench.views.queue",
    "HistoryView": "workbench.views.history",
    "HistoryWidget": "workbench.views.history",
    "CompareView": "workbench.views.compare",
    "WeightsPanel": "workbench.views.weights",
    "WeightDuplicatesView": "workbench.views.weights",
    "WeightsTab": "workbench.views.weights",
    "weights_tab": "workbench.views.weights",
    "AnalyticsView": "workbench.views.analytics",
    "analytics_tab": "workbench.views.analytics",
    "SystemView": "workbench.views.system",
    "status_tab": "workbench.views.system",
    "MaintenanceView": "workbench.views.maintenance",
    "maintenance_tab": "workbench.views.maintenance",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'workbench.views' has no attribute {name!r}")
    return getattr(import_module(module), name)
