"""The one object a notebook opens: settings, catalog and (lazily) everything built on it."""

from __future__ import annotations

import html
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench._home import resolve_home
from workbench.catalog import Database

if TYPE_CHECKING:
    from workbench.catalog import Catalog, CivitaiImportReport, CivitaiOnline, ImportReport, ScanReport, Weights
    from workbench.generate import History, JobQueue, Recipes
    from workbench.search import Recommender


class Workbench:
    """A workbench home: `catalog.duckdb`, its index, thumbnails and generated images."""

    def __init__(self, home: str | os.PathLike[str] | None = None, *, lock_timeout: float = 120.0) -> None:
        self.home: Path = resolve_home(home)
        self.db = Database(self.home / "catalog.duckdb", timeout=lock_timeout)
        self.db.ensure_schema()  # a broken or locked catalog fails here, at open, as before
        self._catalog: Catalog | None = None
        self._catalog_lock = threading.Lock()
        self._recommend: Recommender | None = None
        self._queue: JobQueue | None = None
        self._history: History | None = None
        self._recipes: Recipes | None = None
        self._weights: Weights | None = None
        self._civitai: CivitaiOnline | None = None

    @property
    def catalog(self) -> Catalog:
        """The catalog's query and edit API, built on first use: it loads pandas, which a scan does not need."""
        if self._catalog is None:
            with self._catalog_lock:
                if self._catalog is None:
                    from workbench.catalog import Catalog

                    self._catalog = Catalog(self.db)
        return self._catalog

    # -- library -----------------------------------------------------------------------
    @property
    def roots(self) -> list[Path]:
        """Library roots scanned into this catalog (the only folders besides home that may be served)."""
        from workbench.files import fs_path

        return [Path(fs_path(p)) for p in self.db.library_roots()]

    def scan(
        self,
        roots: Iterable[str | os.PathLike[str]] | str | os.PathLike[str] | None = None,
        *,
        workers: int | None = None,
        progress: bool = True,
        follow_outside: bool | None = None,
    ) -> ScanReport:
        """Scan library roots (default: the ones scanned before) into the catalog, incrementally.

        ``follow_outside=True`` follows links that resolve outside a root (remembered per root;
        None keeps what was remembered). ``/`` and system folders are refused as roots.
        """
        from workbench.catalog import scan

        if roots is None:
            roots = self.roots
        elif isinstance(roots, (str, os.PathLike)):
            roots = [roots]
        return scan(
            self.db, [Path(r) for r in roots], workers=workers, progress=progress, follow_outside=follow_outside
        )

    def hash(self, ids: Iterable[int] | None = None, *, progress: bool = True, workers: int | None = None) -> int:
        """Compute missing file hashes (SHA256, AutoV1/V2, tensor hash); returns how many files were hashed."""
        from workbench.catalog import hash_catalog, link_local_files

        hashed = hash_catalog(self.db, ids=ids, progress=progress, workers=workers)
        if hashed:
            link_local_files(self.db)  # imported Civitai entries join the files they describe
        return hashed

    def hash_in_background(self) -> threading.Thread:
        """Start hashing in a daemon thread; returns the thread (join it to wait)."""
        from workbench.catalog import hash_in_background

        return hash_in_background(self.db)

    def set_preview(
        self, lora_id: int, image: bytes | str | os.PathLike[str] | None = None, *, result_id: str | None = None
    ) -> Path:
        """Make an image (bytes, a file, or the history result ``result_id``) LoRA ``lora_id``'s preview; undoable."""
        from workbench.catalog import CatalogError, set_preview

        if result_id is not None:
            rows = self.db.read_df("SELECT path FROM results WHERE id = ? AND NOT deleted", [str(result_id)])
            if rows.empty:
                raise CatalogError(f"no history image {result_id!r}")
            image = rows.iloc[0]["path"]
        if image is None:
            raise CatalogError("give an image (bytes or a file) or a history result_id")
        return set_preview(self.catalog, self.home, lora_id, image)

    # recommend
    @property
    def recommend(self) -> Recommender:
        """Recommendations (:class:`workbench.search.Recommender`): similar, for_prompt, by_trigger, feedback."""
        if self._recommend is None:
            from workbench.search import Recommender

            self._recommend = Recommender(self)
            if shared_worker_url():  # embeddings computed by the shared worker: no torch in this process
                from workbench.tasks import RemoteEmbedder

                remote: Any = RemoteEmbedder(self, self._recommend.embedder.name)  # the Embedder interface, remotely
                self._recommend.embedder = remote
        return self._recommend

    @property
    def weights(self) -> Weights:
        """Weight-space analysis (:class:`workbench.catalog.Weights`): analyze, table, get, similar, duplicates."""
        if self._weights is None:
            from workbench.catalog import Weights

            self._weights = Weights(self.catalog)
        return self._weights

    def import_civitai(self, path: str | os.PathLike[str], *, progress: bool = True) -> CivitaiImportReport:
        """Add catalog entries from a Civitai /api/v1/models export (.json, .jsonl, .jsonl.gz)."""
        from workbench.catalog import import_civitai

        return import_civitai(self.db, path, progress=progress)

    @property
    def civitai(self) -> CivitaiOnline:
        """Civitai online (:class:`workbench.catalog.CivitaiOnline`): fetch, link, updates, examples, download.
        Nothing goes to the network until one of them is called."""
        if self._civitai is None:
            from workbench.catalog import CivitaiOnline

            self._civitai = CivitaiOnline(self.db, self.home)
        return self._civitai

    # generation
    @property
    def queue(self) -> JobQueue:
        """The generation queue (:class:`workbench.generate.JobQueue`); its worker thread starts on first submit."""
        if self._queue is None:
            from workbench.generate import JobQueue, catalog_resolver

            shared = shared_worker_url()  # the dashboard's shared worker owns the pipeline: never load it here
            self._queue = JobQueue(
                self.db,
                self.home / "outputs",
                resolver=catalog_resolver(self.db),
                executor="rq" if shared else "thread",
                redis_url=shared,
                backend_defaults={
                    "diffusers": {
                        "model": "tiny",
                        "cache_dir": str(self.home / "models"),
                        "lora_dirs": [str(r) for r in self.roots],
                    }
                },
            )
        return self._queue

    @property
    def history(self) -> History:
        """Generated images with their parameters (:class:`workbench.generate.History`)."""
        if self._history is None:
            from workbench.generate import History

            def flush_queue() -> None:  # results the queue recorded are committed before history reads
                if self._queue is not None:
                    self._queue.flush()

            self._history = History(self.db, before_read=flush_queue)
        return self._history

    @property
    def recipes(self) -> Recipes:
        """Named LoRA stacks with generation parameters, shareable as JSON (:class:`workbench.generate.Recipes`)."""
        if self._recipes is None:
            from workbench.generate import Recipes

            self._recipes = Recipes(self.db)
        return self._recipes

    def export(self, dest: str | os.PathLike[str], *, include_files: bool = False) -> Path:
        """Write ratings, tags, notes, recipes (and optionally the files) to a checksummed zip."""
        from workbench.catalog import export_archive

        return export_archive(self, dest, include_files=include_files)

    def import_archive(
        self,
        src: str | os.PathLike[str],
        *,
        dry_run: bool = False,
        conflict: str = "skip",
        restore_to: str | os.PathLike[str] | None = None,
    ) -> ImportReport:
        """Check an archive completely, then apply it (see :func:`workbench.catalog.import_archive`)."""
        from workbench.catalog import import_archive

        return import_archive(self, src, dry_run=dry_run, conflict=conflict, restore_to=restore_to)

    def backup(self, keep: int = 5) -> Any:
        """Zip the catalog (history, feedback, usage, recipes included) and generated images into
        ``<home>/backups``, keeping the newest ``keep`` backups; returns the new one's BackupInfo."""
        from workbench.catalog import backup_home

        return backup_home(self.home, self.db, keep=keep)

    def backups(self) -> list[Any]:
        """Backups of this home, newest first (see ``backup``)."""
        from workbench.catalog import list_backups

        return list_backups(self.home)

    @property
    def tasks(self) -> Any:
        """Heavy work (rescan, hash, embed) run by the shared worker (`workbench.tasks.Tasks`)."""
        if getattr(self, "_tasks", None) is None:
            from workbench.tasks import Tasks

            self._tasks = Tasks(self)
        return self._tasks

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
        return f"<b>LoRA Workbench</b> at <code>{html.escape(str(self.home))}</code><br>" + self.catalog._repr_html_()

    def __repr__(self) -> str:
        return f"Workbench(home={str(self.home)!r})"


def shared_worker_url() -> str | None:
    """Redis URL of the shared worker ($WORKBENCH_REDIS, set by ``workbench dashboard``), if any."""
    return os.environ.get("WORKBENCH_REDIS") or None


def open(home: str | os.PathLike[str] | None = None, **kwargs: Any) -> Workbench:
    """Open (creating if needed) the workbench at `home` ($WORKBENCH_HOME or the platform data dir)."""
    return Workbench(home, **kwargs)
