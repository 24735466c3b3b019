"""Every generated image with its full parameters: browse, rate, favorite, reuse, delete, export.

Rows live in the catalog table ``results`` (written by the queue's recorder); the PNG files live
under ``<home>/outputs`` and carry A1111 infotext, so they stay meaningful outside the workbench.
"""

from __future__ import annotations

import builtins
import io
import json
import pathlib
import zipfile
from collections.abc import Callable
from typing import Any

import pandas as pd

from workbench.catalog import Database
from workbench.generate._types import GenerationRequest


class History:
    """Queries and edits over generated images (``wb.history``)."""

    def __init__(self, db: Database, before_read: Callable[[], None] | None = None) -> None:
        self.db = db
        self._before_read = before_read  # the queue's flush: results it recorded are visible here

    def _sync(self) -> None:
        if self._before_read is not None:
            self._before_read()

    def list(
        self,
        *,
        text: str | None = None,
        lora: str | None = None,
        favorites: bool | None = None,
        min_rating: int | None = None,
        backend: str | None = None,
        include_deleted: bool = False,
        limit: int = 200,
        offset: int = 0,
    ) -> pd.DataFrame:
        """Results newest first, filtered in DuckDB: prompt text, LoRA name in the stack, favorite, rating, backend."""
        self._sync()
        where: list[str] = []
        args: list[Any] = []
        if not include_deleted:
            where.append("NOT r.deleted")
        if text:
            where.append("(r.infotext ILIKE ?)")
            args.append(f"%{text}%")
        if lora:
            where.append("list_contains(json_extract_string(r.params, '$.loras[*].name'), ?)")
            args.append(lora)
        if favorites is not None:
            where.append("coalesce(r.favorite, false) = ?")
            args.append(bool(favorites))
        if min_rating is not None:
            where.append("coalesce(r.rating, 0) >= ?")
            args.append(int(min_rating))
        if backend:
            where.append("json_extract_string(r.params, '$.backend') = ?")
            args.append(backend)
        sql = (
            "SELECT r.id, r.job_id, r.path, r.seed, r.width, r.height, coalesce(r.rating, 0) AS rating, "
            "coalesce(r.favorite, false) AS favorite, r.deleted, r.created_at, r.infotext, r.params, "
            "json_extract_string(r.params, '$.prompt') AS prompt, json_extract_string(r.params, '$.backend') AS backend "
            "FROM results r"
        )
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY r.created_at DESC, r.id LIMIT ? OFFSET ?"
        df = self.db.read_df(sql, args + [int(limit), int(offset)])
        df["loras"] = [
            [f"{x['name']}:{x.get('unet', 1.0)}" for x in json.loads(p).get("loras", [])] for p in df["params"]
        ]
        return df

    def get(self, result_id: str) -> dict:
        self._sync()
        rows = self.db.read_df("SELECT * FROM results WHERE id = ?", [result_id]).to_dict("records")
        if not rows:
            raise KeyError(f"no result {result_id}")
        row = rows[0]
        row["params"] = json.loads(row["params"]) if isinstance(row["params"], str) else row["params"]
        return row

    def paths(self, result_ids: builtins.list[str]) -> dict[str, str]:
        """result id -> PNG path for many results in one query (thumbnails of a history page)."""
        self._sync()
        if not result_ids:
            return {}
        marks = ", ".join("?" for _ in result_ids)
        frame = self.db.read_df(f"SELECT id, path FROM results WHERE id IN ({marks}) AND NOT deleted", list(result_ids))
        return {str(i): str(p) for i, p in zip(frame["id"], frame["path"]) if p}

    def rate(self, result_id: str, rating: int) -> None:
        if not 0 <= int(rating) <= 5:
            raise ValueError("rating must be 0..5")
        self._set(result_id, "rating", int(rating))

    def favorite(self, result_id: str, value: bool = True) -> None:
        self._set(result_id, "favorite", bool(value))

    def _set(self, result_id: str, column: str, value) -> None:
        self._sync()
        with self.db.write() as con:
            n = con.execute(f"UPDATE results SET {column} = ? WHERE id = ? RETURNING id", [value, result_id]).fetchall()
        if not n:
            raise KeyError(f"no result {result_id}")

    def reuse(self, result_id: str) -> GenerationRequest:
        """The request that made this image (seed included), to edit and submit again."""
        params = self.get(result_id)["params"]
        return GenerationRequest.from_dict(params)

    def delete(self, result_id: str, delete_file: bool = True) -> None:
        """Hide the result from history (the row stays for usage counts) and remove its PNG."""
        row = self.get(result_id)
        self._set(result_id, "deleted", True)
        if delete_file and row.get("path"):
            pathlib.Path(row["path"]).unlink(missing_ok=True)

    def png(self, result_id: str) -> bytes:
        return pathlib.Path(self.get(result_id)["path"]).read_bytes()

    def export_zip(
        self, dest: str | pathlib.Path | None = None, ids: builtins.list[str] | None = None
    ) -> bytes | pathlib.Path:
        """A zip of the PNGs (infotext inside) plus ``manifest.json`` with every parameter.

        Returns the bytes when ``dest`` is None, else writes the file and returns its path.
        """
        df = self.list(limit=1_000_000) if ids is None else pd.DataFrame([self.get(i) for i in ids])
        buf = io.BytesIO()
        manifest = []
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for row in df.to_dict("records"):
                path = pathlib.Path(row["path"])
                if not path.is_file():
                    continue
                arcname = f"images/{path.name}"
                zf.write(path, arcname)
                params = row["params"] if isinstance(row["params"], dict) else json.loads(row["params"])
                manifest.append(
                    {
                        "id": row["id"],
                        "file": arcname,
                        "seed": int(row["seed"]),
                        "infotext": row["infotext"],
                        "rating": int(row.get("rating") or 0),
                        "favorite": bool(row.get("favorite")),
                        "params": params,
                    }
                )
            zf.writestr("manifest.json", json.dumps(manifest, indent=1, default=str))
        if dest is None:
            return buf.getvalue()
        dest = pathlib.Path(dest)
        dest.write_bytes(buf.getvalue())
        return dest

    def usage(self) -> pd.DataFrame:
        """Generations per LoRA (from ``usage_events``), most used first."""
        self._sync()
        return self.db.read_df(
            "SELECT e.lora_id, any_value(v.name) AS name, count(*) AS uses, avg(e.weight) AS mean_weight, max(e.created_at) AS last_used "
            "FROM usage_events e LEFT JOIN lora_view v ON v.id = e.lora_id WHERE e.kind = 'generate' "
            "GROUP BY e.lora_id ORDER BY uses DESC"
        )
