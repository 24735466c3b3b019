"""Run the curated report notebook with papermill (for schedules: cron, CI, Airflow...)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from workbench._home import bundled_file

_REPORT = "report.ipynb"


_REPORT_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>LoRA library report</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #222; }}
table {{ border-collapse: collapse; margin: 0.3rem 0 1rem; }}
.wb-report-table th, .wb-report-table td {{ text-align: left; padding: 2px 10px 2px 0; border-bottom: 1px solid #ddd; }}
pre {{ white-space: pre-wrap; }}
</style></head><body>
{body}
</body></html>
"""


def report_notebook() -> Path:
    """The report notebook (the checkout's, else the installed package's)."""
    return bundled_file("notebooks", _REPORT)


def run_report(
    out: str | os.PathLike[str],
    *,
    home: str | os.PathLike[str] | None = None,
    library: list[str] | None = None,
    rescan: bool = True,
    hash_files: bool = False,
    html: str | os.PathLike[str] | None = None,
    timeout: int = 1800,
) -> Path:
    """Execute the report for one workbench home; writes the executed notebook (and optionally HTML)."""
    import papermill

    params: dict[str, Any] = {
        "home": str(Path(home).resolve()) if home else None,
        "library": [str(Path(p).resolve()) for p in (library or [])],
        "rescan": rescan,
        "hash_files": hash_files,
    }
    out_path = Path(out).resolve()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(
        str(report_notebook()),
        str(out_path),
        parameters=params,
        kernel_name="python3",
        progress_bar=False,
        execution_timeout=timeout,
        cwd=str(out_path.parent),
    )
    if html:
        import nbformat
        from nbconvert import HTMLExporter

        # the "basic" template: the cells only, no CDN scripts and no 300 KB of notebook CSS; our own small page
        exporter = HTMLExporter(
            template_name="basic", exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True
        )
        body, _ = exporter.from_notebook_node(nbformat.read(out_path, as_version=4))
        Path(html).write_text(_REPORT_PAGE.format(body=body), encoding="utf-8")
    return out_path
