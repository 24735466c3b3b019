"""LoRA Workbench: catalog, recommend, compose and generate with Stable Diffusion LoRAs in Jupyter.

import workbench
wb = workbench.open()          # or workbench.open("/path/to/home")
wb.scan("~/loras")
wb.catalog.query(text="anime", base_models=["SDXL"])
"""

from workbench._workbench import Workbench, open

__all__ = ["Workbench", "open", "__version__"]
__version__ = "0.1.0"
