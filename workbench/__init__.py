"""LoRA Workbench: catalog, recommend, compose and generate with Stable Diffusion LoRAs in Jupyter.

import workbench
wb = workbench.open()          # or workbench.open("/path/to/home")
wb.scan("~/loras")
wb.catalog.query(text="anime", base_models=["SDXL"])

`open` and `Workbench` are loaded on first use (module ``__getattr__``), so ``import workbench``
and the command line's ``--help`` stay free of DuckDB and pandas.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workbench._workbench import Workbench, open

try:
    __version__ = version("lora-workbench")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["Workbench", "__version__", "open"]


def __getattr__(name: str) -> Any:
    """``Workbench`` and ``open`` load the catalog stack (pandas, DuckDB) on first use, so ``workbench --help``
    and argument errors start at once."""
    if name in ("Workbench", "open"):
        from workbench import _workbench

        return getattr(_workbench, name)
    raise AttributeError(f"module 'workbench' has no attribute {name!r}")
