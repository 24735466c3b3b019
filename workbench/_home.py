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


def existing_home(home: str | os.PathLike[str] | None = None) -> Path:
    """The home a read-only command uses: it must already hold a catalog (a typo must not create one)."""
    if home is None:
        home = os.environ.get("WORKBENCH_HOME") or platformdirs.user_data_dir(APP_NAME)
    path = Path(home).expanduser().resolve()
    if not (path / "catalog.duckdb").is_file():
        raise FileNotFoundError(
            f"there is no workbench catalog in {path} (check --home or $WORKBENCH_HOME; "
            f"'workbench scan FOLDER --home {path}' creates one)"
        )
    return path


_CHECKOUT = Path(__file__).resolve().parents[1]


def bundled_file(folder: str, name: str) -> Path:
    """A file shipped beside the code: ``notebooks/`` or ``widgets/``.

    A source checkout's own folder wins (so a checkout, or a git worktree run with ``PYTHONPATH``, always
    serves its own notebooks and widget modules); an installed wheel has them as ``workbench.<folder>``.
    """
    from importlib import resources

    candidates = [_CHECKOUT / folder / name]
    try:
        candidates.append(Path(str(resources.files(f"workbench.{folder}") / name)))
    except (ModuleNotFoundError, TypeError):
        pass
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"{folder}/{name} not found (looked in {', '.join(map(str, candidates))})")
