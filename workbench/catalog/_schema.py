"""Versioned catalog schema. Migrations are append-only: never edit a shipped one, add the next."""

from __future__ import annotations

import hashlib

import duckdb

# Each entry moves the schema from version i to i+1.
MIGRATIONS: list[str] = [
    # 1: catalog of files, user fields, hashes, undo log, roots
    """
    CREATE SEQUENCE lora_id_seq START 1;
    CREATE SEQUENCE edit_id_seq START 1;
    CREATE TABLE roots (path VARCHAR PRIMARY KEY, added_at TIMESTAMP DEFAULT current_timestamp);
    CREATE TABLE loras (
        id BIGINT PRIMARY KEY DEFAULT nextval('lora_id_seq'),
        path VARCHAR NOT NULL,            -- resolved path; '' for catalog-only entries (Civitai import)
        root VARCHAR, folder VARCHAR, file_name VARCHAR, name VARCHAR,
        format VARCHAR, size_bytes BIGINT, mtime DOUBLE, mtime_ns BIGINT, sidecar_sig VARCHAR,
        added_at TIMESTAMP DEFAULT current_timestamp, scanned_at TIMESTAMP,
        missing BOOLEAN DEFAULT false, error VARCHAR,
        header_len BIGINT, key_layout VARCHAR, network_type VARCHAR,
        rank INTEGER, rank_min INTEGER, rank_max INTEGER, alpha DOUBLE, scale DOUBLE,
        base_model VARCHAR, base_model_evidence VARCHAR,
        module_count INTEGER, tensor_count INTEGER, has_text_encoder BOOLEAN,
        description VARCHAR, trigger_words VARCHAR[], file_tags VARCHAR[],
        training_tags JSON, metadata JSON, sidecars JSON, sidecar_errors VARCHAR[], sources JSON,
        preview_path VARCHAR, preview_embedded BOOLEAN DEFAULT false,
        civitai_model_id BIGINT, civitai_version_id BIGINT, creator VARCHAR, stats JSON,
        sha256_claimed VARCHAR,
        origin VARCHAR DEFAULT 'scan'     -- 'scan' | 'civitai'
    );
    CREATE INDEX loras_path ON loras(path);
    CREATE TABLE user_fields (
        lora_id BIGINT PRIMARY KEY,
        tags VARCHAR[], notes VARCHAR, rating INTEGER, favorite BOOLEAN, preferred_weight DOUBLE,
        trigger_words VARCHAR[], base_model_override VARCHAR, removed BOOLEAN DEFAULT false,
        updated_at TIMESTAMP DEFAULT current_timestamp
    );
    CREATE TABLE edits (
        id BIGINT PRIMARY KEY DEFAULT nextval('edit_id_seq'),
        created_at TIMESTAMP DEFAULT current_timestamp, kind VARCHAR, lora_ids BIGINT[],
        before_state JSON, after_state JSON, undone BOOLEAN DEFAULT false
    );
    CREATE TABLE hashes (
        path VARCHAR, size_bytes BIGINT, mtime_ns BIGINT,
        sha256 VARCHAR, autov1 VARCHAR, tensor_hash VARCHAR, computed_at TIMESTAMP DEFAULT current_timestamp
    );
    CREATE INDEX hashes_path ON hashes(path);
    """,
    # 2: embeddings, feedback, usage, jobs, results (history), recipes
    """
    CREATE SEQUENCE event_id_seq START 1;
    CREATE TABLE embeddings (
        lora_id BIGINT PRIMARY KEY, model VARCHAR, payload_hash VARCHAR, vector FLOAT[],
        updated_at TIMESTAMP DEFAULT current_timestamp
    );
    CREATE TABLE feedback (
        id BIGINT PRIMARY KEY DEFAULT nextval('event_id_seq'), query VARCHAR, query_kind VARCHAR,
        lora_id BIGINT, value INTEGER, created_at TIMESTAMP DEFAULT current_timestamp
    );
    CREATE TABLE usage_events (
        id BIGINT PRIMARY KEY DEFAULT nextval('event_id_seq'), lora_id BIGINT, kind VARCHAR,
        job_id VARCHAR, weight DOUBLE, created_at TIMESTAMP DEFAULT current_timestamp
    );
    CREATE TABLE jobs (
        id VARCHAR PRIMARY KEY, backend VARCHAR, params JSON, state VARCHAR, progress DOUBLE DEFAULT 0,
        error VARCHAR, attempts INTEGER DEFAULT 0, max_attempts INTEGER DEFAULT 1,
        cancel_requested BOOLEAN DEFAULT false, worker VARCHAR, next_attempt_at TIMESTAMP,
        created_at TIMESTAMP DEFAULT current_timestamp, started_at TIMESTAMP, finished_at TIMESTAMP,
        updated_at TIMESTAMP DEFAULT current_timestamp
    );
    CREATE TABLE results (
        id VARCHAR PRIMARY KEY, job_id VARCHAR, path VARCHAR, params JSON, infotext VARCHAR,
        seed BIGINT, width INTEGER, height INTEGER, rating INTEGER, favorite BOOLEAN DEFAULT false,
        deleted BOOLEAN DEFAULT false, created_at TIMESTAMP DEFAULT current_timestamp
    );
    CREATE TABLE recipes (
        name VARCHAR PRIMARY KEY, stack JSON, params JSON,
        created_at TIMESTAMP DEFAULT current_timestamp, updated_at TIMESTAMP DEFAULT current_timestamp
    );
    """,
    # 3 (issue 14): per library root, whether links that resolve outside it are followed (opt-in)
    """
    ALTER TABLE roots ADD COLUMN follow_outside BOOLEAN DEFAULT false;
    """,
    # 4 (civitai online): cached answers by SHA256 ("not_found" too), models, links made by hand, images
    """
    CREATE TABLE civitai_lookups (
        sha256 VARCHAR PRIMARY KEY, status VARCHAR, model_id BIGINT, version_id BIGINT, version JSON,
        checked_at TIMESTAMP DEFAULT current_timestamp
    );
    CREATE TABLE civitai_models (model_id BIGINT PRIMARY KEY, item JSON, fetched_at TIMESTAMP DEFAULT current_timestamp);
    CREATE TABLE civitai_links (
        lora_id BIGINT PRIMARY KEY, model_id BIGINT, version_id BIGINT, version JSON,
        linked_at TIMESTAMP DEFAULT current_timestamp
    );
    CREATE TABLE civitai_images (
        version_id BIGINT, position INTEGER, kind VARCHAR, url VARCHAR, path VARCHAR, nsfw_level INTEGER,
        width INTEGER, height INTEGER, meta JSON, error VARCHAR, fetched_at TIMESTAMP DEFAULT current_timestamp,
        PRIMARY KEY (version_id, position)
    );
    """,
    # 5 (weights): weight-space analyses cached by file identity, exact pair cosines
    """
    CREATE TABLE weight_analyses (
        path VARCHAR, size_bytes BIGINT, mtime_ns BIGINT, version INTEGER,
        ok BOOLEAN, error VARCHAR, family VARCHAR, network_type VARCHAR, key_layout VARCHAR,
        nominal_rank INTEGER, rank90 DOUBLE, rank99 DOUBLE, total_norm DOUBLE, module_count INTEGER,
        summary JSON, signature FLOAT[], computed_at TIMESTAMP DEFAULT current_timestamp
    );
    CREATE INDEX weight_analyses_path ON weight_analyses(path);
    CREATE TABLE weight_pairs (
        key_a VARCHAR, key_b VARCHAR, cosine DOUBLE, common_modules INTEGER, error VARCHAR,
        computed_at TIMESTAMP DEFAULT current_timestamp
    );
    CREATE INDEX weight_pairs_keys ON weight_pairs(key_a, key_b);
    """,
    # 6: values imported from other tools' sidecars (A1111 .json, ComfyUI-Lora-Manager, Civitai JSON), kept
    #    apart from user_fields so a person's edit still wins and a rescan refreshes them; negative text.
    """
    ALTER TABLE loras ADD COLUMN imported_notes VARCHAR;
    ALTER TABLE loras ADD COLUMN imported_preferred_weight DOUBLE;
    ALTER TABLE loras ADD COLUMN imported_negative_text VARCHAR;
    ALTER TABLE loras ADD COLUMN imported_favorite BOOLEAN;
    ALTER TABLE loras ADD COLUMN usage_tips JSON;
    ALTER TABLE loras ADD COLUMN nsfw_level INTEGER;
    ALTER TABLE user_fields ADD COLUMN negative_text VARCHAR;
    ALTER TABLE user_fields ADD COLUMN preview_override VARCHAR;
    CREATE TABLE filter_presets (name VARCHAR PRIMARY KEY, filters JSON, updated_at TIMESTAMP DEFAULT current_timestamp);
    """,
]

# The flat view every reader uses; the in-memory snapshot copies it. User fields win over file fields.
LORA_VIEW_SQL = """
CREATE OR REPLACE VIEW lora_view AS
SELECT
    l.id, l.path, coalesce(nullif(l.name, ''), l.file_name) AS name, l.format, l.network_type,
    l.rank, l.alpha,
    coalesce(u.base_model_override, l.base_model) AS base_model,
    coalesce(u.trigger_words, l.trigger_words, []::VARCHAR[]) AS trigger_words,
    coalesce(u.tags, l.file_tags, []::VARCHAR[]) AS tags,
    coalesce(h.sha256, CASE WHEN l.path = '' THEN l.sha256_claimed END) AS sha256,
    substr(coalesce(h.sha256, CASE WHEN l.path = '' THEN l.sha256_claimed END), 1, 10) AS autov2,
    l.size_bytes, l.mtime, l.missing, l.error,
    l.folder, l.root, l.file_name, l.key_layout, l.rank_min, l.rank_max, l.scale,
    l.base_model AS base_model_detected, l.base_model_evidence, u.base_model_override,
    l.description, coalesce(u.preview_override, l.preview_path) AS preview_path,
    (u.preview_override IS NOT NULL OR l.preview_path IS NOT NULL OR coalesce(l.preview_embedded, false)) AS has_preview,
    coalesce(l.preview_embedded, false) AS preview_embedded,
    coalesce(u.favorite, l.imported_favorite, false) AS favorite, coalesce(u.rating, 0) AS rating,
    coalesce(u.notes, l.imported_notes) AS notes, coalesce(u.preferred_weight, l.imported_preferred_weight) AS preferred_weight,
    coalesce(u.negative_text, l.imported_negative_text) AS negative_text, l.nsfw_level,
    l.added_at, coalesce(usage.n, 0) AS usage_count,
    l.civitai_model_id, l.civitai_version_id, l.creator, h.tensor_hash, h.autov1, l.origin
FROM loras l
LEFT JOIN user_fields u ON u.lora_id = l.id
LEFT JOIN hashes h ON h.path = l.path AND h.size_bytes = l.size_bytes AND h.mtime_ns = l.mtime_ns AND l.path <> ''
LEFT JOIN (SELECT lora_id, count(*) AS n FROM usage_events GROUP BY lora_id) usage ON usage.lora_id = l.id
WHERE NOT coalesce(u.removed, false)
"""


def migrate(con: duckdb.DuckDBPyConnection) -> int:
    """Bring the open catalog up to the newest schema; returns the version it ends at."""
    con.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER)")
    rows = con.execute("SELECT max(version) FROM schema_version").fetchall()
    current = rows[0][0] or 0
    if current > len(MIGRATIONS):
        raise RuntimeError(
            f"this catalog has schema version {current}, newer than this workbench ({len(MIGRATIONS)}); upgrade lora-workbench"
        )
    for version in range(current, len(MIGRATIONS)):
        con.execute(MIGRATIONS[version])
        con.execute("INSERT INTO schema_version VALUES (?)", [version + 1])
    _ensure_view(con)
    return len(MIGRATIONS)


def _view_digest() -> str:
    return hashlib.sha256(LORA_VIEW_SQL.encode()).hexdigest()[:16]


def _ensure_view(con: duckdb.DuckDBPyConnection) -> None:
    """(Re)create lora_view whenever its definition changed since the file was last opened."""
    con.execute("CREATE TABLE IF NOT EXISTS schema_meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
    rows = con.execute("SELECT value FROM schema_meta WHERE key = 'lora_view'").fetchall()
    if rows and rows[0][0] == _view_digest():
        return
    con.execute(LORA_VIEW_SQL)
    con.execute("INSERT OR REPLACE INTO schema_meta VALUES ('lora_view', ?)", [_view_digest()])


def needs_migration(con: duckdb.DuckDBPyConnection) -> bool:
    """True when the file lacks tables or a newer migration exists."""
    try:
        rows = con.execute("SELECT max(version) FROM schema_version").fetchall()
        view = con.execute("SELECT value FROM schema_meta WHERE key = 'lora_view'").fetchall()
    except duckdb.CatalogException:
        return True
    return (rows[0][0] or 0) < len(MIGRATIONS) or not view or view[0][0] != _view_digest()
