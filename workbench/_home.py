"""Where a workbench keeps its catalog, index, thumbnails and outputs."""
from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "lora-workbench"


def resolve_home(home: str | os.PathLike[str] | None = None) -> Path:
    """Pick the workbench home: explicit argument, then $WORKBENCH_HOME, then the platform data dir."""
    if home is None:
        home = os.environ.get("WORKBENCH_HOME") or platformdirs.user_data_dir(APP_NAME)
    path = Path(home).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path
