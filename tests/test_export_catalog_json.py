"""``workbench export-catalog`` writes strict JSON: never a literal NaN or Infinity, even for odd rows."""

from __future__ import annotations

import json
from pathlib import Path

import workbench
from workbench.cli import main


def _strict(line: str) -> dict:
    def refuse(constant: str) -> None:
        raise AssertionError(f"non-JSON constant {constant} in {line[:200]}")

    return json.loads(line, parse_constant=refuse)


def test_export_catalog_has_no_nan_for_real_files_and_odd_rows(shared_data: Path, tmp_path: Path, capsys) -> None:
    wb = workbench.open(tmp_path / "home")
    wb.scan([shared_data / "loras"], progress=False, workers=1)
    with wb.db.write() as con:  # catalog-only rows with missing, NaN and infinite numbers
        con.execute(
            "INSERT INTO loras (path, origin, file_name, name, size_bytes, alpha, scale, mtime, rank) VALUES "
            "('', 'civitai', 'nan.safetensors', 'nan', NULL, 'nan'::DOUBLE, 'inf'::DOUBLE, 'nan'::DOUBLE, NULL), "
            "('', 'civitai', 'inf.safetensors', 'inf', 5, '-inf'::DOUBLE, NULL, NULL, 4)"
        )
    ids = [int(i) for i in wb.catalog.query()["id"]]
    wb.catalog.bulk_update(ids[:1], preferred_weight=0.5)
    capsys.readouterr()
    assert main(["export-catalog", "--home", str(wb.home)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(ids) >= 6
    records = {r["name"]: r for r in map(_strict, lines)}
    assert records["nan"]["alpha"] is None and records["inf"]["alpha"] is None
    assert records["inf"]["size_bytes"] == 5 and records["nan"]["size_bytes"] is None
