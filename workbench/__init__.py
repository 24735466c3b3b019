"""LoRA Workbench: catalog, recommend, compose and generate with Stable Diffusion LoRAs in Jupyter.

import workbench
wb = workbench.open()          # or workbench.open("/path/to/home")
wb.scan("~/loras")
wb.catalog.query(text="anime", base_models=["SDXL"])

`open` and `Workbench` are loaded on first use (module ``__getattr__``), so ``import workbench``
and the command line's ``--help`` stay free of DuckDB and pandas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workbench._workbench import Workbench, open

__all__ = ["Workbench", "open", "__version__"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in ("Workbench", "open"):
        from workbench import _workbench

        return getattr(_workbench, name)
    raise AttributeError(f"module 'workbench' has no attribute {name!r}")
