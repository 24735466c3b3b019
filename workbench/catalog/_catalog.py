"""The catalog: what is known about every LoRA, queried as DataFrames, edited with undo.

Readers work on an in-memory snapshot of `lora_view`, refreshed only when another write
(from any process) bumped the catalog's change stamp; so a gallery with many visitors never
holds the file lock. Writes go through `Database.write()`: one short transaction each.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypedDict

import duckdb
import pandas as pd
from typing_extensions import Unpack

from workbench.catalog._db import Database
from workbench.files import USER_FIELD_TYPES, USER_FIELDS

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger("workbench.catalog")

#: Fields a person may edit. A rescan never writes them.

#: Columns every query result carries (the stable contract the views and exports use).
CONTRACT_COLUMNS = (
    "id",
    "path",
    "name",
    "format",
    "network_type",
    "rank",
    "alpha",
    "base_model",
    "trigger_words",
    "tags",
    "sha256",
    "autov2",
    "size_bytes",
    "mtime",
    "missing",
    "error",
)

SORT_KEYS = {
    "name": "_name_lower",
    "added": "added_at",
    "modified": "mtime",
    "size": "size_bytes",
    "rating": "rating",
    "usage": "usage_count",
    "rank": "rank",
    "base_model": "base_model",
    "random": "hash(lora_view.id + {seed})",
    "relevance": "_relevance",
}

_MAX_TAG_LEN = 100
_MAX_TAGS = 500
_MAX_NOTES = 20_000
_FUZZY_THRESHOLD = 0.86


class LoraFilters(TypedDict, total=False):
    """The one filter vocabulary of :meth:`Catalog.query`, :meth:`~Catalog.count` and :meth:`~Catalog.page`
    (the gallery, the CLI and exports use the same names)."""

    text: str | None
    fuzzy: bool
    tags_all: Sequence[str] | None
    tags_any: Sequence[str] | None
    base_models: Sequence[str | None] | None  # None in the list: no base model known
    folder: str | None
    formats: Sequence[str] | None
    network_types: Sequence[str] | None
    favorites: bool | None
    missing: bool | None
    errors: bool | None
    has_preview: bool | None
    ids: Sequence[int] | None
    tags_none: Sequence[str] | None


class CatalogError(ValueError):
    """A request the catalog refuses (unknown id, bad field value); the message says why."""


def _clean_str_list(value: Any, field: str) -> list[str]:
    if isinstance(value, str):
        value = [part for part in value.split(",")]
    if not isinstance(value, (list, tuple)):
        raise CatalogError(f"{field} must be a list of strings, got {type(value).__name__}")
    if len(value) > 4 * _MAX_TAGS:  # refused before any work: the cap holds after de-duplication
        raise CatalogError(f"at most {_MAX_TAGS} {field} (got a list of {len(value):,})")
    cleaned: dict[str, None] = {}  # insertion-ordered set: linear de-duplication
    for item in value:
        if not isinstance(item, str):
            raise CatalogError(f"{field} must hold strings, got {type(item).__name__}")
        if len(item) > 4 * _MAX_TAG_LEN:
            raise CatalogError(f"{field} entries are at most {_MAX_TAG_LEN} characters")
        item = " ".join(item.split())
        if not item:
            continue
        if len(item) > _MAX_TAG_LEN:
            raise CatalogError(f"{field} entries are at most {_MAX_TAG_LEN} characters")
        cleaned[item] = None
        if len(cleaned) > _MAX_TAGS:
            raise CatalogError(f"at most {_MAX_TAGS} {field}")
    return list(cleaned)


#: Where a field comes from when no sidecar or user edit claims it (shown beside each value in the detail view).
_INTRINSIC_SOURCES = {
    **dict.fromkeys(
        ("rank", "alpha", "scale", "network_type", "key_layout", "base_model_detected", "module_count", "tensor_count")
        + ("has_text_encoder", "header_len"),
        "header",
    ),
    **dict.fromkeys(("size_bytes", "mtime", "path", "folder", "format"), "file"),
    **dict.fromkeys(("added_at", "usage_count"), "catalog"),
}


def validate_user_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """Check and normalise user-editable fields; raises CatalogError with a clear message."""
    clean: dict[str, Any] = {}
    for key, value in fields.items():
        if key not in USER_FIELDS:
            raise CatalogError(f"{key!r} is not an editable field (editable: {', '.join(USER_FIELDS)})")
        if value is None:
            clean[key] = None
        elif key in ("tags", "trigger_words"):
            clean[key] = _clean_str_list(value, key)
        elif key in ("notes", "negative_text"):
            if not isinstance(value, str) or len(value) > _MAX_NOTES:
                raise CatalogError(f"{key} must be text of at most {_MAX_NOTES} characters")
            clean[key] = value
        elif key == "rating":
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or value != int(value)
                or not 0 <= value <= 5
            ):
                raise CatalogError("rating must be a whole number from 0 to 5")
            clean[key] = int(value)
        elif key == "favorite":
            if not isinstance(value, bool):
                raise CatalogError("favorite must be true or false")
            clean[key] = value
        elif key == "preferred_weight":
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or not -10 <= value <= 10
            ):
                raise CatalogError("preferred_weight must be a number from -10 to 10")
            clean[key] = float(value)
        elif key == "preview_override":
            if not isinstance(value, str) or not value or len(value) > 4096:
                raise CatalogError("preview_override must be the path of an image (see Workbench.set_preview)")
            clean[key] = value
        elif key == "base_model_override":
            if not isinstance(value, str) or len(value.strip()) > 64:
                raise CatalogError("base_model_override must be a short text (at most 64 characters)")
            clean[key] = value.strip() or None
    return clean


class Catalog:
    """Query and edit the LoRA catalog of one workbench home."""

    def __init__(self, db: Database) -> None:
        self.db = db
        db.ensure_schema()
        self._mem = _snapshot_connection()
        self._mem_lock = threading.Lock()
        self._snapshot_stamp: str | None = None
        self._words_ready = False
        self._content_version = 0  # bumped whenever the snapshot's rows change (not on every stamp)
        self._my_edits: list[int] = []

    # -- snapshot ------------------------------------------------------------------------
    def refresh(self, force: bool = False) -> None:
        """Bring the snapshot up to date if any process changed the catalog since the last look.

        The snapshot is one compressed in-memory DuckDB table: every column of `lora_view`, a hash
        of each row and the lower-cased search columns filters and sorts read (about 8 MB at 50,000
        LoRAs, where an Arrow copy plus a search table took ~85 MB of a kernel). The first load
        attaches the catalog file read-only and copies the view in one statement (no Arrow copy in
        between). Later loads compare row hashes and replace only the rows that changed, so one
        edit elsewhere costs ~0.1 s at 50,000 rows instead of a full reload.
        """
        stamp = self.db.stamp()
        if not force and stamp == self._snapshot_stamp:
            return
        can_attach = getattr(self.db._held, "con", None) is None and self.db.path.exists()
        with self.db.read() as con, self._mem_lock:
            replaced: int | None = None  # rows replaced in place; None: load everything
            if not force and self._snapshot_stamp is not None:
                try:
                    replaced = self._update_changed_rows(con)
                except duckdb.Error:  # e.g. another process migrated the view: start over
                    log.warning("catalog snapshot: row-by-row update failed; reloading it whole", exc_info=True)
            if replaced is None:
                self._load_all(con, attach=can_attach)
            if replaced != 0:  # a write elsewhere (jobs, feedback, pairs) that left every row alone keeps them
                self._content_version += 1
                self._words_ready = False
            self._snapshot_stamp = stamp

    def _load_all(self, con: duckdb.DuckDBPyConnection, attach: bool) -> None:
        """Copy the whole of `lora_view` into the snapshot (caller holds _mem_lock and a catalog read)."""
        if attach:  # the file straight into the compressed table: no Arrow copy of 50,000 wide rows
            path = str(self.db.path).replace("'", "''")
            self._mem.execute(f"ATTACH '{path}' AS _cat (READ_ONLY)")
            try:
                self._mem.execute(f"CREATE OR REPLACE TABLE lora_view AS {_snapshot_select('_cat.lora_view')}")
            finally:
                self._mem.execute("DETACH _cat")
            return
        # inside a write transaction of this process: read through its connection
        table = con.sql("SELECT v.*, hash(v) AS _row_hash FROM lora_view v").to_arrow_table()
        self._mem.register("_fresh", table)
        try:
            self._mem.execute(f"CREATE OR REPLACE TABLE lora_view AS {_snapshot_select('_fresh', hashed=True)}")
        finally:
            self._mem.unregister("_fresh")

    def _update_changed_rows(self, con: duckdb.DuckDBPyConnection) -> int | None:
        """Replace the snapshot rows whose hash differs from the file's (and drop gone ones, add new ones).

        Returns how many rows were replaced or dropped, or None, having changed nothing, when a full
        load is needed: the view's columns changed, or so much changed that a full load is cheaper
        (caller holds _mem_lock and a catalog read).
        """
        file_columns = con.sql("SELECT * FROM lora_view LIMIT 0").columns
        held_columns = [c for c in self._mem.sql("SELECT * FROM lora_view LIMIT 0").columns if c not in _SNAPSHOT_ONLY]
        if file_columns != held_columns:
            return None
        hashes = con.sql("SELECT id, hash(v) AS _row_hash FROM lora_view v").to_arrow_table()
        self._mem.register("_now", hashes)
        try:
            changed = [
                int(r[0])
                for r in self._mem.execute(
                    "SELECT n.id FROM _now n LEFT JOIN lora_view s ON s.id = n.id WHERE s._row_hash IS DISTINCT FROM n._row_hash"
                ).fetchall()
            ]
            gone = [
                int(r[0])
                for r in self._mem.execute("SELECT s.id FROM lora_view s ANTI JOIN _now n ON n.id = s.id").fetchall()
            ]
        finally:
            self._mem.unregister("_now")
        if len(changed) > max(_INCREMENTAL_MAX_ROWS, hashes.num_rows // 5):
            return None
        fresh = None
        if changed:
            fresh = con.sql(
                "SELECT v.*, hash(v) AS _row_hash FROM lora_view v WHERE id IN (SELECT unnest(?::BIGINT[]))",
                params=[changed],
            ).to_arrow_table()
        self._mem.execute("BEGIN TRANSACTION")
        try:
            if changed or gone:
                self._mem.execute("DELETE FROM lora_view WHERE id IN (SELECT unnest(?::BIGINT[]))", [changed + gone])
            if fresh is not None:
                self._mem.register("_fresh", fresh)
                try:
                    self._mem.execute(f"INSERT INTO lora_view BY NAME {_snapshot_select('_fresh', hashed=True)}")
                finally:
                    self._mem.unregister("_fresh")
            self._mem.execute("COMMIT")
        except BaseException:
            self._mem.execute("ROLLBACK")
            raise
        return len(changed) + len(gone)

    def snapshot_version(self) -> int:
        """A number that changes whenever the snapshot's rows change, brought up to date first.

        Writes that touch no LoRA row (jobs, feedback, weight pairs) leave it alone, so data derived
        from the rows (recommendations' result table) can be kept while it stays the same.
        """
        self.refresh()
        return self._content_version

    def snapshot_table(self) -> tuple[int, pa.Table]:
        """The snapshot's `lora_view` columns (the ones `query` gives) as Arrow, with their `snapshot_version`.

        A fresh copy each call (~40 MB at 50,000 LoRAs), kept by nobody here: a caller converts it and
        keys what it made on the version (the snapshot itself stays a compressed table).
        """
        self.refresh()
        with self._mem_lock:
            only = ", ".join(_SNAPSHOT_ONLY)
            table = self._mem.sql(f"SELECT * EXCLUDE ({only}) FROM lora_view ORDER BY id").to_arrow_table()
            return self._content_version, table

    def _ensure_word_index(self) -> None:
        """Distinct words of names/triggers/tags, built on the first fuzzy query after a refresh:
        fuzzy search compares query words with these instead of with every row (caller holds _mem_lock)."""
        if self._words_ready:
            return
        self._mem.execute(
            """
            CREATE OR REPLACE TABLE _word_index AS
            SELECT DISTINCT id, word FROM (
                SELECT id, unnest(regexp_split_to_array(_short, '[^a-z0-9]+')) AS word FROM lora_view
            ) WHERE length(word) > 1
            """
        )
        self._mem.execute("CREATE OR REPLACE TABLE _words AS SELECT DISTINCT word FROM _word_index")
        self._words_ready = True

    def _rows(self, ids: Sequence[int], columns: Sequence[str] | None = None) -> pd.DataFrame:
        """Rows for ids, in that order (unknown ids left out), with every `lora_view` column or only
        ``columns`` (caller holds _mem_lock).

        No Arrow copy of the card columns is kept to cut pages from (3 ms instead of ~15 ms a page):
        at 50,000 rows it cost a kernel ~14 MB, more than the compressed snapshot itself.
        """
        wanted = [int(i) for i in ids]
        select = ", ".join(columns) if columns else f"* EXCLUDE ({', '.join(_SNAPSHOT_ONLY)})"
        table = self._mem.sql(
            f"SELECT {select} FROM lora_view WHERE id IN (SELECT unnest(?::BIGINT[]))", params=[wanted]
        ).to_arrow_table()
        positions = pd.Index(table.column("id").to_numpy()).get_indexer(wanted)
        return table.take(positions[positions >= 0]).to_pandas()

    def _columns(self, columns: Sequence[str] | None) -> list[str] | None:
        """Check a column list against `lora_view`'s (``id`` always comes first); None: every column."""
        if columns is None:
            return None
        if isinstance(columns, str) or not all(isinstance(c, str) for c in columns):
            raise CatalogError("columns must be a list of column names")
        known = set(self._view_columns())
        unknown = [c for c in columns if c not in known]
        if unknown:
            raise CatalogError(f"unknown column {unknown[0]!r}; columns: {', '.join(CONTRACT_COLUMNS)}, ...")
        return ["id", *dict.fromkeys(c for c in columns if c != "id")]

    def _view_columns(self) -> list[str]:
        self.refresh()
        with self._mem_lock:
            names = [r[0] for r in self._mem.execute("DESCRIBE lora_view").fetchall()]
        return [n for n in names if n not in _SNAPSHOT_ONLY]

    # -- queries -------------------------------------------------------------------------
    def _where(self, filters: LoraFilters) -> tuple[str, list[Any], str, list[Any]]:
        """Build a WHERE clause and a relevance expression, with parameters only (no user SQL)."""
        unknown = set(filters) - set(LoraFilters.__annotations__)
        if unknown:
            raise CatalogError(
                f"unknown filter {sorted(unknown)[0]!r}; filters: {', '.join(LoraFilters.__annotations__)}"
            )
        text, fuzzy = filters.get("text"), bool(filters.get("fuzzy"))
        tags_all, tags_any = filters.get("tags_all"), filters.get("tags_any")
        base_models, formats, network_types = (
            filters.get("base_models"),
            filters.get("formats"),
            filters.get("network_types"),
        )
        folder, ids = filters.get("folder"), filters.get("ids")
        favorites, missing, errors = filters.get("favorites"), filters.get("missing"), filters.get("errors")
        has_preview, tags_none = filters.get("has_preview"), filters.get("tags_none")
        clauses: list[str] = []
        params: list[Any] = []
        relevance, rel_params = "0", []
        tokens = [t for t in (text or "").lower().split() if t]
        if tokens and not fuzzy:
            for token in tokens:
                clauses.append("contains(_haystack, ?)")
                params.append(token)
            relevance = "(CASE WHEN lower(name) = ? THEN 3 WHEN starts_with(lower(name), ?) THEN 2 WHEN contains(_short, ?) THEN 1 ELSE 0 END)"
            joined = " ".join(tokens)
            rel_params = [joined, joined, joined]
        elif tokens:
            # Fuzzy: every query word must be close (Jaro-Winkler) to a word of name/triggers/tags,
            # or appear verbatim anywhere; rows are scored by the mean closeness.
            clauses.append("_fz.id IS NOT NULL")
            relevance = "_fz.score"
        if tags_all:
            clauses.append("list_has_all(_tags_lower, ?)")
            params.append([t.lower() for t in tags_all])
        if tags_any:
            clauses.append("list_has_any(_tags_lower, ?)")
            params.append([t.lower() for t in tags_any])
        if tags_none:
            clauses.append("NOT list_has_any(_tags_lower, ?)")
            params.append([t.lower() for t in tags_none])
        for column, values in (("base_model", base_models), ("format", formats), ("network_type", network_types)):
            if values:
                # None in the list stands for "unknown" (no value detected or claimed)
                known = [v for v in values if v is not None]
                or_null = f" OR {column} IS NULL" if len(known) < len(values) else ""
                clauses.append(f"(list_contains(?, {column}){or_null})")
                params.append(known)
        if folder:
            folder = folder.strip("/")
            clauses.append("(folder = ? OR starts_with(folder, ?))")
            params.extend([folder, folder + "/"])
        for column, value in (("favorite", favorites), ("missing", missing), ("has_preview", has_preview)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(bool(value))
        if errors is not None:
            clauses.append("error IS NOT NULL" if errors else "error IS NULL")
        if ids is not None:
            clauses.append("list_contains(?, lora_view.id)")
            params.append([int(i) for i in ids])
        where = " AND ".join(clauses) if clauses else "true"
        return where, params, relevance, rel_params

    def query(
        self,
        *,
        sort: str = "name",
        descending: bool = False,
        limit: int | None = None,
        offset: int = 0,
        seed: int = 0,
        **filters: Unpack[LoraFilters],
    ) -> pd.DataFrame:
        """Filter (see :class:`LoraFilters`), sort and page the catalog; one row per LoRA (see CONTRACT_COLUMNS)."""
        return self._query(None, sort=sort, descending=descending, limit=limit, offset=offset, seed=seed, **filters)

    def _query(
        self,
        columns: Sequence[str] | None,
        *,
        sort: str = "name",
        descending: bool = False,
        limit: int | None = None,
        offset: int = 0,
        seed: int = 0,
        **filters: Unpack[LoraFilters],
    ) -> pd.DataFrame:
        if sort not in SORT_KEYS:
            raise CatalogError(f"unknown sort {sort!r}; choose one of {', '.join(SORT_KEYS)}")
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise CatalogError("limit must be a non-negative integer")
        if not isinstance(offset, int) or offset < 0:
            raise CatalogError("offset must be a non-negative integer")
        where, params, relevance, rel_params = self._where(filters)
        ids = filters.get("ids")
        narrowed = any(
            (value is not None) if key in ("favorites", "missing", "errors", "has_preview") else bool(value)
            for key, value in filters.items()
            if key not in ("ids", "fuzzy")
        )
        if ids is not None and sort == "name" and not descending and not narrowed:
            return self._rows_by_id(ids, limit, offset, columns)
        text, fuzzy = filters.get("text"), bool(filters.get("fuzzy"))
        order = SORT_KEYS[sort].format(seed=int(seed))
        direction = "DESC" if descending or sort == "relevance" else "ASC"
        # Two steps: order and page the ids (narrow), then fetch the wide rows of that page only.
        id_sql = (
            f"SELECT lora_view.id, {relevance} AS _relevance, count(*) OVER () AS _total "
            f"FROM lora_view{_fuzzy_join(text, fuzzy)} WHERE {where} "
            f"ORDER BY {order} {direction} NULLS LAST, _name_lower, lora_view.id"
        )
        id_params = rel_params + params
        if limit is not None:
            id_sql += " LIMIT ? OFFSET ?"
            id_params += [limit, offset]
        elif offset:
            id_sql += " OFFSET ?"
            id_params.append(offset)
        self.refresh()
        with self._mem_lock:
            self._prepare_fuzzy(text if fuzzy else None)
            ordered = self._mem.execute(id_sql, id_params).fetchall()
            frame = self._rows([row[0] for row in ordered], columns)
        if sort == "relevance":
            frame["relevance"] = [row[1] for row in ordered]
        frame.attrs["total"] = int(ordered[0][2]) if ordered else (0 if not offset else None)
        return frame

    def _rows_by_id(
        self, ids: Sequence[int], limit: int | None, offset: int, columns: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """Fast path for "these LoRAs, by name": the rows of those ids, sorted here (no ordering query)."""
        fetch = None if columns is None else [*columns, *(["name"] if "name" not in columns else [])]
        self.refresh()
        with self._mem_lock:
            frame = self._rows(sorted({int(i) for i in ids}), fetch)
        if len(frame):
            frame = frame.assign(_key=frame["name"].str.lower()).sort_values(["_key", "id"]).drop(columns="_key")
        if columns is not None and "name" not in columns:
            frame = frame.drop(columns="name")
        total = len(frame)
        frame = frame.iloc[offset : None if limit is None else offset + limit].reset_index(drop=True)
        frame.attrs["total"] = total
        return frame

    def page(
        self,
        limit: int = 100,
        offset: int = 0,
        *,
        sort: str = "name",
        descending: bool = False,
        seed: int = 0,
        **filters: Unpack[LoraFilters],
    ) -> tuple[pd.DataFrame, int]:
        """One page of `query` plus how many rows match in all, computed in the same pass."""
        return self._page(None, limit, offset, sort=sort, descending=descending, seed=seed, **filters)

    def page_columns(
        self,
        columns: Sequence[str],
        limit: int = 100,
        offset: int = 0,
        *,
        sort: str = "name",
        descending: bool = False,
        seed: int = 0,
        **filters: Unpack[LoraFilters],
    ) -> tuple[pd.DataFrame, int]:
        """Like :meth:`page` but with only ``columns`` of each row (``id`` always): what a gallery card
        shows costs a fraction of a page of every column at 50,000 LoRAs."""
        return self._page(self._columns(columns), limit, offset, sort=sort, descending=descending, seed=seed, **filters)

    def _page(
        self,
        columns: list[str] | None,
        limit: int,
        offset: int,
        *,
        sort: str,
        descending: bool,
        seed: int,
        **filters: Unpack[LoraFilters],
    ) -> tuple[pd.DataFrame, int]:
        frame = self._query(columns, limit=limit, offset=offset, sort=sort, descending=descending, seed=seed, **filters)
        total = frame.attrs.get("total")
        return frame, int(total) if total is not None else self.count(**filters)

    def _prepare_fuzzy(self, text: str | None) -> None:
        """Fill the temp table `_fuzzy(id, score)` for a fuzzy text query (caller holds _mem_lock)."""
        if not text:
            return
        tokens = [t for t in text.lower().split() if t][:8]
        self._ensure_word_index()
        self._mem.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE _fuzzy AS
            WITH tok AS (SELECT unnest(?::VARCHAR[]) AS t),
            close_words AS (
                SELECT t, word, jaro_winkler_similarity(word, t) AS s FROM tok, _words
                WHERE jaro_winkler_similarity(word, t) >= {_FUZZY_THRESHOLD - 0.1}
            ),
            per_token AS (
                SELECT w.id, c.t, max(c.s) AS s FROM close_words c JOIN _word_index w ON w.word = c.word GROUP BY ALL
                UNION ALL
                SELECT v.id, tok.t, 1.0 FROM lora_view v, tok WHERE contains(v._haystack, tok.t)
            ),
            best AS (SELECT id, t, max(s) AS s FROM per_token GROUP BY ALL)
            SELECT id, sum(s) / {len(tokens)} AS score FROM best GROUP BY id
            HAVING count(*) = {len(tokens)} AND sum(s) / {len(tokens)} >= {_FUZZY_THRESHOLD}
            """,
            [tokens],
        )

    def count(self, **filters: Unpack[LoraFilters]) -> int:
        """How many LoRAs match the same filters `query` takes."""
        where, params, _, _ = self._where(filters)
        self.refresh()
        with self._mem_lock:
            self._prepare_fuzzy(filters.get("text") if filters.get("fuzzy") else None)
            join = _fuzzy_join(filters.get("text"), bool(filters.get("fuzzy")))
            return int(
                self._mem.execute(f"SELECT count(*) FROM lora_view{join} WHERE {where}", params).fetchall()[0][0]
            )

    def facets(self) -> dict[str, list[tuple[str, int]]]:
        """Values with counts for the filter widgets: base models, formats, network types, folders, tags."""
        self.refresh()
        out: dict[str, list[tuple[str, int]]] = {}
        with self._mem_lock:
            for column in ("base_model", "format", "network_type", "folder"):
                rows = self._mem.execute(
                    f"SELECT coalesce({column}, '') AS v, count(*) AS n FROM lora_view GROUP BY 1 ORDER BY n DESC, v"
                ).fetchall()
                out[column] = [(v, int(n)) for v, n in rows]
            rows = self._mem.execute(
                "SELECT t, count(*) AS n FROM (SELECT unnest(tags) AS t FROM lora_view) GROUP BY t ORDER BY n DESC, t LIMIT 500"
            ).fetchall()
            out["tags"] = [(v, int(n)) for v, n in rows]
        return out

    def __len__(self) -> int:
        return self.count()

    def get(self, lora_id: int) -> dict[str, Any]:
        """Everything known about one LoRA: effective fields, their sources, metadata, sidecars, hashes, duplicates."""
        lora_id = self._check_id(lora_id)
        with self.db.read() as con:
            view = con.execute("SELECT * FROM lora_view WHERE id = ?", [lora_id]).df()
            raw = con.execute(
                "SELECT metadata, sidecars, sidecar_errors, sources, training_tags, stats, header_len, module_count,"
                " tensor_count, has_text_encoder, sha256_claimed, trigger_words AS file_trigger_words,"
                " file_tags, base_model AS file_base_model, sidecar_sig FROM loras WHERE id = ?",
                [lora_id],
            ).df()
            user = con.execute("SELECT * FROM user_fields WHERE lora_id = ?", [lora_id]).df()
            dupes = con.execute(
                "SELECT v2.id, v2.path, v2.name, 'sha256' AS by FROM lora_view v1 JOIN lora_view v2 "
                "ON v1.sha256 = v2.sha256 AND v1.id <> v2.id WHERE v1.id = ? "
                "UNION ALL SELECT v2.id, v2.path, v2.name, 'tensor_hash' FROM lora_view v1 JOIN lora_view v2 "
                "ON v1.tensor_hash = v2.tensor_hash AND v1.id <> v2.id WHERE v1.id = ?",
                [lora_id, lora_id],
            ).df()
        if view.empty:
            raise CatalogError(f"LoRA {lora_id} is not in the catalog (removed?)")
        record = _row_to_dict(view.iloc[0])
        extra = _row_to_dict(raw.iloc[0])
        for key in ("metadata", "sidecars", "sources", "training_tags", "stats"):
            extra[key] = _loads(extra.get(key))
        record.update(extra)
        user_row = _row_to_dict(user.iloc[0]) if not user.empty else {}
        sources = {**_INTRINSIC_SOURCES, **(record.get("sources") or {})}
        for field in USER_FIELDS:
            target = "base_model" if field == "base_model_override" else field
            if user_row.get(field) is not None:
                sources[target] = "user"
        record["sources"] = sources
        record["user_fields"] = {f: user_row.get(f) for f in USER_FIELDS}
        record["duplicates"] = dupes.to_dict("records")
        return record

    def duplicates(self, by: str = "sha256", threshold: float | None = None) -> pd.DataFrame:
        """Groups of catalog entries sharing a file hash (`sha256`) or a tensor-data hash (`tensor_hash`), or
        near-duplicates by their weights (`weights`: every pair in a group has a delta cosine ≥ `threshold`,
        default 0.9; only LoRAs analysed with `wb.weights.analyze()` take part)."""
        if by == "weights":
            from workbench.catalog._weights import DEFAULT_THRESHOLD, Weights

            return Weights(self).duplicates(DEFAULT_THRESHOLD if threshold is None else threshold)
        if by not in ("sha256", "tensor_hash"):
            raise CatalogError("duplicates(by=) takes 'sha256', 'tensor_hash' or 'weights'")
        self.refresh()
        with self._mem_lock:
            return self._mem.execute(
                f"SELECT {by} AS hash, id, name, path, size_bytes, missing FROM lora_view WHERE {by} IN "
                f"(SELECT {by} FROM lora_view WHERE {by} IS NOT NULL GROUP BY 1 HAVING count(*) > 1) "
                f"ORDER BY {by}, path"
            ).df()

    # -- saved filter presets -------------------------------------------------------------
    def save_preset(self, name: str, filters: dict[str, Any]) -> None:
        """Store a named set of gallery filters (shared by everyone using this catalog); same name replaces."""
        if not isinstance(name, str) or not name.strip() or len(name.strip()) > 100:
            raise CatalogError("a preset name is 1 to 100 characters")
        if not isinstance(filters, dict):
            raise CatalogError("preset filters must be an object")
        text = json.dumps(filters, default=str)
        if len(text) > 20_000:
            raise CatalogError("preset filters are too large")
        with self.db.write() as con:
            con.execute(
                "INSERT OR REPLACE INTO filter_presets (name, filters, updated_at) VALUES (?, ?, current_timestamp)",
                [name.strip(), text],
            )

    def presets(self) -> dict[str, dict[str, Any]]:
        """Saved filter presets by name (alphabetical)."""
        with self.db.read() as con:
            rows = con.execute("SELECT name, filters FROM filter_presets ORDER BY lower(name)").fetchall()
        return {name: json.loads(filters) for name, filters in rows}

    def delete_preset(self, name: str) -> bool:
        """Forget a preset; False when there was none by that name."""
        with self.db.write() as con:
            return bool(con.execute("DELETE FROM filter_presets WHERE name = ? RETURNING name", [name]).fetchall())

    def roots(self) -> list[str]:
        """Library roots that were scanned into this catalog."""
        return self.db.library_roots()

    # -- edits ---------------------------------------------------------------------------
    def _check_id(self, lora_id: Any) -> int:
        if isinstance(lora_id, bool) or not isinstance(lora_id, (int,)) and not hasattr(lora_id, "__index__"):
            raise CatalogError(f"a LoRA id must be an integer, got {lora_id!r}")
        return int(lora_id)

    def update(self, lora_id: int, **fields: Any) -> int:
        """Set user fields of one LoRA; returns the edit id (undo with `undo()`)."""
        return self.bulk_update([lora_id], **fields)

    def bulk_update(self, ids: Iterable[int], **fields: Any) -> int:
        """Set the same user fields on many LoRAs in one undoable edit."""
        clean = validate_user_fields(fields)
        if not clean:
            raise CatalogError("nothing to update")
        id_list = self._ids(ids)
        return self._edit("update", id_list, lambda current: {i: {**current.get(i, {}), **clean} for i in id_list})

    def add_tags(self, ids: Iterable[int], tags: Sequence[str]) -> int:
        """Add tags (to the effective tags each LoRA shows) in one undoable edit."""
        new = _clean_str_list(list(tags), "tags")
        return self._edit_list_field("tags", self._ids(ids), lambda old: old + [t for t in new if t not in old])

    def remove_tags(self, ids: Iterable[int], tags: Sequence[str]) -> int:
        """Remove tags in one undoable edit."""
        gone = {t.lower() for t in _clean_str_list(list(tags), "tags")}
        return self._edit_list_field("tags", self._ids(ids), lambda old: [t for t in old if t.lower() not in gone])

    def remove(self, ids: Iterable[int]) -> int:
        """Hide LoRAs from the catalog (files are never deleted); a rescan keeps them hidden; undoable."""
        id_list = self._ids(ids)
        return self._edit(
            "remove", id_list, lambda current: {i: {**current.get(i, {}), "removed": True} for i in id_list}
        )

    def undo(self, edit_id: int | None = None) -> bool:
        """Undo an edit: the given one, else the last one this Catalog object made. False if none."""
        if edit_id is None:
            if not self._my_edits:
                return False
            edit_id = self._my_edits.pop()
        with self.db.read() as con:
            rows = con.execute("SELECT before_state, undone FROM edits WHERE id = ?", [int(edit_id)]).fetchall()
        if not rows or rows[0][1]:
            return False
        before: dict[str, dict[str, Any] | None] = json.loads(rows[0][0])  # parsed outside the exclusive lock
        gone = [int(k) for k, row in before.items() if row is None]
        restore = user_rows_table({int(k): row for k, row in before.items() if row is not None})
        with self.db.write() as con:
            flag = con.execute(
                "UPDATE edits SET undone = true WHERE id = ? AND NOT coalesce(undone, false) RETURNING id",
                [int(edit_id)],
            ).fetchall()
            if not flag:
                return False  # undone meanwhile by someone else
            if gone:
                con.execute("DELETE FROM user_fields WHERE lora_id IN (SELECT unnest(?::BIGINT[]))", [gone])
            insert_user_rows(con, restore)
        return True

    def edit_log(self, limit: int = 50) -> pd.DataFrame:
        """Recent edits (what changed, when, whether undone)."""
        return self.db.read_df("SELECT * FROM edits ORDER BY id DESC LIMIT ?", [int(limit)])

    def _ids(self, ids: Iterable[int]) -> list[int]:
        id_list = sorted({self._check_id(i) for i in ids})
        if not id_list:
            raise CatalogError("no LoRA ids given")
        return id_list

    def _edit_list_field(self, field: str, ids: list[int], change: Any) -> int:
        def compute(current: dict[int, dict[str, Any]], effective: dict[int, list[str]]) -> dict[int, dict[str, Any]]:
            return {i: {**current.get(i, {}), field: change(list(effective.get(i) or []))} for i in ids}

        return self._edit("update", ids, compute, effective_field=field)

    def apply_edit(self, kind: str, ids: Iterable[int], compute: Any, *, also: Any = None) -> int | None:
        """One undoable edit of many LoRAs: ``compute(current user rows by id)`` returns the new rows of those that
        change; they are written, with ``also(con)`` (e.g. an import's recipes), in one short transaction.
        Returns the edit id, or None when nothing changed."""
        return self._edit(kind, self._ids(ids), compute, also=also)

    def _edit(
        self, kind: str, ids: list[int], compute: Any, effective_field: str | None = None, also: Any = None
    ) -> Any:
        """One undoable edit, computed outside the exclusive lock and written in one short transaction.

        Reads and the Python work (5,000 ids: ~0.5 s) run under a shared lock; the write transaction only
        checks that the rows read are unchanged (a fingerprint) and inserts one Arrow table, so the exclusive
        hold stays in the tens of milliseconds. If another writer changed those rows meanwhile, it starts
        over; after a few tries it does everything inside the transaction so it always finishes. Edits of
        a few ids do everything in one transaction from the start (cheaper than opening the file twice).
        """
        first = 0 if len(ids) > _PLAN_OUTSIDE_FROM else _OPTIMISTIC_TRIES  # a few ids: one transaction is shorter
        for attempt in range(first, _OPTIMISTIC_TRIES + 1):
            pessimistic = attempt == _OPTIMISTIC_TRIES
            with self.db.write() if pessimistic else self.db.read() as con:
                seen = None if pessimistic else _fingerprint(con, ids, effective_field)
                plan = self._plan_edit(con, kind, ids, compute, effective_field)
                if pessimistic:
                    edit_id = _apply_edit(con, kind, ids, plan, also)
                    break
            try:
                with self.db.write() as con:
                    if _fingerprint(con, ids, effective_field) != seen:
                        raise _Stale  # rolled back: nothing committed, the change stamp stays
                    edit_id = _apply_edit(con, kind, ids, plan, also)
                break
            except _Stale:
                continue
        if edit_id is not None:
            self._my_edits.append(edit_id)
        return edit_id

    def _plan_edit(
        self, con: duckdb.DuckDBPyConnection, kind: str, ids: list[int], compute: Any, effective_field: str | None
    ) -> tuple[Any, str, str]:
        found = {
            r[0] for r in con.execute("SELECT id FROM loras WHERE id IN (SELECT unnest(?::BIGINT[]))", [ids]).fetchall()
        }
        unknown = [i for i in ids if i not in found]
        if unknown:
            raise CatalogError(f"unknown LoRA id(s): {unknown[:10]}")
        current = read_user_rows(con, ids)
        if effective_field is not None:
            eff = con.execute(
                f"SELECT l.id, coalesce(u.{effective_field}, l.{'file_tags' if effective_field == 'tags' else effective_field}) "
                "FROM loras l LEFT JOIN user_fields u ON u.lora_id = l.id WHERE l.id IN (SELECT unnest(?::BIGINT[]))",
                [ids],
            ).fetchall()
            after = compute(current, {int(i): list(v) if v is not None else [] for i, v in eff})
        else:
            after = compute(current)
        before = {str(i): current.get(i) for i in ids}
        return (
            user_rows_table(after),
            json.dumps(before, default=str),
            json.dumps({str(k): v for k, v in after.items()}, default=str),
        )

    def _repr_html_(self) -> str:
        import html

        n = self.count()
        facets = self.facets()
        models = ", ".join(f"{html.escape(v or 'unknown')}: {c}" for v, c in facets["base_model"][:6])
        return f"<b>LoRA catalog</b> {html.escape(str(self.db.path))}: {n} LoRAs ({models})"


_USER_COLUMNS = (*USER_FIELDS, "removed")

#: snapshot columns that are not `lora_view`'s: the row hash and what search and sorting read
_SNAPSHOT_ONLY = ("_row_hash", "_haystack", "_short", "_tags_lower", "_name_lower")
#: at most this many changed rows (or a fifth of the catalog) are replaced in place; more: a full load
_INCREMENTAL_MAX_ROWS = 5_000


def _snapshot_select(source: str, hashed: bool = False) -> str:
    """The snapshot's rows from ``source`` (the view, or an Arrow table of its rows with ``_row_hash`` already)."""
    row_hash = "" if hashed else "hash(v) AS _row_hash, "
    return f"""
        SELECT v.*, {row_hash}
            lower(concat_ws(' ', name, file_name, array_to_string(trigger_words, ' '),
                            array_to_string(tags, ' '), description, creator, folder)) AS _haystack,
            lower(concat_ws(' ', name, array_to_string(trigger_words, ' '), array_to_string(tags, ' '))) AS _short,
            list_transform(tags, lambda t: lower(t)) AS _tags_lower,
            -- "<script>…" or "'quoted'" names sort by their first letter, not before every real name
            coalesce(nullif(regexp_replace(lower(name), '^[[:punct:][:space:]]+', ''), ''), lower(name))
                AS _name_lower
        FROM {source} v
    """


def _snapshot_connection() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB whose tables are compressed (strings with repeats shrink ~5x) and whose
    allocator hands freed memory back soon (a reload must not leave its peak behind in the kernel)."""
    mem = duckdb.connect(
        ":memory:",
        config={"autoload_known_extensions": False, "autoinstall_known_extensions": False, "threads": 2},
    )
    mem.execute("SET allocator_flush_threshold = '16MB'")
    mem.execute("SET allocator_bulk_deallocation_flush_threshold = '16MB'")
    mem.execute("ATTACH ':memory:' AS snapshot (COMPRESS)")
    mem.execute("USE snapshot")
    return mem


def _fuzzy_join(text: str | None, fuzzy: bool) -> str:
    return " LEFT JOIN _fuzzy _fz ON _fz.id = lora_view.id" if fuzzy and text and text.split() else ""


def _user_row(record: dict[str, Any]) -> dict[str, Any]:
    row = {}
    for field in _USER_COLUMNS:
        value = record.get(field)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            if hasattr(value, "tolist"):
                value = value.tolist()
            row[field] = value
    return row


def read_user_rows(con: duckdb.DuckDBPyConnection, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """The user_fields rows of ids (absent ids have none), read in one statement."""
    frame = con.execute(
        "SELECT * FROM user_fields WHERE lora_id IN (SELECT unnest(?::BIGINT[]))", [[int(i) for i in ids]]
    ).df()
    return {int(r["lora_id"]): _user_row(r) for r in frame.to_dict("records")}


_ARROW_TYPES = {**USER_FIELD_TYPES, "removed": "bool"}
_CASTS = {"rating": int, "favorite": bool, "removed": bool, "preferred_weight": float}


class _Stale(Exception):
    """The rows an edit was planned from changed before it could be written; plan again."""


_OPTIMISTIC_TRIES = 4
_PLAN_OUTSIDE_FROM = 100  # ids; below this the plan is computed inside the transaction (one open, not two)


def _fingerprint(con: duckdb.DuckDBPyConnection, ids: list[int], effective_field: str | None) -> tuple:
    """What an edit's plan was computed from: the ids' user rows (and file tags/triggers for list edits)."""
    file_column = {"tags": "file_tags", "trigger_words": "trigger_words"}.get(effective_field or "")
    file_part = f", sum(hash(l.id, l.{file_column}))" if file_column else ""
    return tuple(
        con.execute(
            f"SELECT count(l.id), count(u.lora_id), sum(hash(u.lora_id, u.updated_at, u.tags, u.notes, u.rating, "
            f"u.favorite, u.preferred_weight, u.trigger_words, u.base_model_override, u.removed)){file_part} "
            "FROM loras l LEFT JOIN user_fields u ON u.lora_id = l.id WHERE l.id IN (SELECT unnest(?::BIGINT[]))",
            [ids],
        ).fetchall()[0]
    )


def _apply_edit(
    con: duckdb.DuckDBPyConnection, kind: str, ids: list[int], plan: tuple[Any, str, str], also: Any = None
) -> int | None:
    table, before_json, after_json = plan
    if also is not None:
        also(con)
    if table.num_rows == 0:
        return None
    insert_user_rows(con, table)
    return int(
        con.execute(
            "INSERT INTO edits (kind, lora_ids, before_state, after_state) VALUES (?, ?, ?, ?) RETURNING id",
            [kind, ids, before_json, after_json],
        ).fetchall()[0][0]
    )


def write_user_rows(con: duckdb.DuckDBPyConnection, rows: dict[int, dict[str, Any]]) -> None:
    """Replace the user_fields rows of many LoRAs with one INSERT from an Arrow table (one statement, any count)."""
    insert_user_rows(con, user_rows_table(rows))


def user_rows_table(rows: dict[int, dict[str, Any]]) -> Any:
    """user_fields rows as an Arrow table with the catalog's column types (built outside any lock)."""
    import pyarrow as pa

    ids = [int(i) for i in rows]
    columns: dict[str, Any] = {"lora_id": pa.array(ids, pa.int64())}
    for field in _USER_COLUMNS:
        cast = _CASTS.get(field)
        values = [rows[i].get(field) for i in rows]
        if cast is not None:
            values = [None if v is None else cast(v) for v in values]
        kind = _ARROW_TYPES[field]
        arrow_type = pa.list_(pa.string()) if kind == "list<string>" else pa.type_for_alias(kind)
        columns[field] = pa.array(values, arrow_type)
    return pa.table(columns)


def insert_user_rows(con: duckdb.DuckDBPyConnection, table: Any) -> None:
    """Insert (or replace) the rows of a :func:`user_rows_table` in one statement."""
    if table.num_rows == 0:
        return
    con.register("_user_rows", table)
    try:  # delete + insert: several times faster in DuckDB than INSERT OR REPLACE on the primary key
        con.execute("DELETE FROM user_fields WHERE lora_id IN (SELECT lora_id FROM _user_rows)")
        con.execute(
            f"INSERT INTO user_fields (lora_id, {', '.join(_USER_COLUMNS)}, updated_at) "
            f"SELECT lora_id, {', '.join(_USER_COLUMNS)}, current_timestamp FROM _user_rows"
        )
    finally:
        con.unregister("_user_rows")


def _loads(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _row_to_dict(row: pd.Series) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
            value = value.tolist()  # numpy scalars too: a missing float arrives as nan, handled below
        if isinstance(value, float) and math.isnan(value):
            value = None
        elif value is pd.NaT:
            value = None
        elif isinstance(value, float) and math.isnan(value):
            value = None
        elif value is pd.NA:
            value = None
        out[str(key)] = value
    return out
