"""LoRA Workbench: catalog, recommend, compose and generate with Stable Diffusion LoRAs in Jupyter.

import workbench
wb = workbench.open()          # or workbench.open("/path/to/home")
wb.scan("~/loras")
wb.catalog.query(text="anime", base_models=["SDXL"])
"""

from importlib.metadata import PackageNotFoundError, version

from workbench._workbench import Workbench, open

try:
    __version__ = version("lora-workbench")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["Workbench", "__version__", "open"]
