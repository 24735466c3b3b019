"""The command line imports only what a command needs: help and argument errors never load pandas or DuckDB."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("pandas", "duckdb", "pyarrow", "torch", "numpy")


def _modules_after(argv: list[str]) -> tuple[int, list[str], str]:
    code = (
        "import sys\n"
        "from workbench.cli import main\n"
        f"try:\n    rc = main({argv!r})\nexcept SystemExit as exc:\n    rc = exc.code\n"
        f"print(rc, sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    rc, _, loaded = out.stdout.strip().rpartition("\n")[2].partition(" ")
    return int(rc), eval(loaded), out.stderr


@pytest.mark.parametrize("argv", [["--help"], ["scan", "--help"], ["recommend", "--bogus"], ["no-such-command"]])
def test_help_and_argument_errors_stay_light(argv: list[str]) -> None:
    rc, loaded, err = _modules_after(argv)
    assert rc in (0, 2), err
    assert loaded == [], f"{argv} imported {loaded}"


def test_import_workbench_is_lazy_but_open_works(tmp_path: Path) -> None:
    code = (
        "import sys, workbench\n"
        "assert 'pandas' not in sys.modules and 'duckdb' not in sys.modules\n"
        f"wb = workbench.open({str(tmp_path / 'home')!r})\n"
        "assert isinstance(wb, workbench.Workbench) and wb.catalog.count() == 0\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        import workbench

        workbench.nope  # noqa: B018


def test_scan_with_nothing_to_do_never_loads_pandas(tmp_path: Path) -> None:
    """A no-change rescan is a stat walk compared against the catalog in DuckDB: pandas is never needed.

    The first scan writes rows (pandas builds the batch); the second, in a fresh process, finds every
    file unchanged, with the roots given and with the remembered ones.
    """
    from tests.lora_factory import write_kohya_lora

    lib = tmp_path / "lib"
    lib.mkdir()
    for i in range(3):
        write_kohya_lora(lib / f"style_{i}.safetensors", seed=i)
    home = str(tmp_path / "home")
    rc, loaded, err = _modules_after(["scan", "--home", home, "-q", str(lib)])
    assert rc == 0, err
    assert "pandas" in loaded, "the first scan writes rows; if it no longer needs pandas, tighten this test"
    for argv in (["scan", "--home", home, "-q", str(lib)], ["scan", "--home", home, "-q"]):
        rc, loaded, err = _modules_after(argv)
        assert rc == 0, err
        assert "pandas" not in loaded and "pyarrow" not in loaded, f"{argv} imported {loaded}"


def test_catalog_package_names_resolve_lazily() -> None:
    """Every public name of workbench.catalog resolves (the lazy table matches ``__all__``)."""
    code = (
        "import sys, workbench.catalog as c\n"
        "assert 'pandas' not in sys.modules, 'importing the package loaded pandas'\n"
        "missing = [n for n in c.__all__ if getattr(c, n, None) is None]\n"
        "print(sorted(c._DEFINED_IN) == sorted(c.__all__), missing)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "True []", out.stderr
