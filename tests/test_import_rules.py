"""The architecture holds: stages import only the stages below them, the core never imports the views, and
code outside a stage uses only its public names (``__all__``), never a private ``_module``."""

from __future__ import annotations

import ast
import json
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = REPO / "workbench"
STAGES = ("files", "catalog", "search", "generate", "views")
#: stage -> the other stages it may import
ALLOWED = {
    "files": set(),
    "catalog": {"files"},
    "search": {"catalog", "files"},
    "generate": {"files", "catalog"},
}


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str]]:
    """Every module a file imports (top level, inside functions and TYPE_CHECKING blocks alike)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if name == "workbench" or name.startswith("workbench.")]


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STAGES else None


def _private_part(name: str, importer: str) -> str | None:
    """``name`` when it reaches into a private ``_module`` the importer has no right to.

    A stage's private modules are for that stage (``workbench.generate`` and its ``backends``);
    the top level's (``workbench._home``, ``workbench._workbench``) for the package; nothing private
    for tests, benchmarks, notebooks and scripts.
    """
    parts = name.split(".")
    private = [i for i, part in enumerate(parts) if part.startswith("_") and not part.startswith("__")]
    if not private:
        return None
    owner = "workbench" if private[0] == 1 else ".".join(parts[:2])
    return None if importer == owner or importer.startswith(owner + ".") else name


def _code_files() -> list[pathlib.Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_stages_import_only_the_stages_below_them() -> None:
    problems = []
    for path in _code_files():
        module = _module_name(path)
        stage = _stage(module)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for line, name in _imports(tree, module, path.name == "__init__.py"):
            target = _stage(name)
            where = f"{path.relative_to(REPO)}:{line} imports {name}"
            if stage == "views":
                continue
            if target == "views":
                problems.append(where + " (the core never imports the views)")
            elif stage is not None and target is None:
                problems.append(where + " (a stage never imports the top level)")
            elif stage is not None and target != stage and target not in ALLOWED[stage]:
                problems.append(where + f" ({stage} may import only {sorted(ALLOWED[stage]) or 'itself'})")
    assert problems == []


def _notebook_sources() -> list[tuple[pathlib.Path, str]]:
    out = []
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        out.append((path, "\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("%", "!")))))
    return out


@pytest.mark.parametrize("folder", ["workbench", "tests", "benchmarks", "data", "notebooks"])
def test_outside_code_uses_only_public_names(folder: str) -> None:
    if folder == "notebooks":
        sources = _notebook_sources()
    else:
        sources = [(p, p.read_text(encoding="utf-8")) for p in sorted((REPO / folder).rglob("*.py"))]
    problems = []
    for path, text in sources:
        module = _module_name(path) if path.suffix == ".py" and folder == "workbench" else folder
        tree = ast.parse(text)
        for line, name in _imports(tree, module, path.name == "__init__.py"):
            private = _private_part(name, module)
            if private:
                problems.append(f"{path.relative_to(REPO)}:{line} imports {private}")
    assert problems == []


@pytest.mark.parametrize("stage", ["files", "catalog", "search", "generate", "generate.backends", "views", "dashboard"])
def test_each_stage_names_its_public_api(stage: str) -> None:
    import importlib

    package = importlib.import_module(f"workbench.{stage}")
    names = package.__all__
    assert names and len(names) == len(set(names))
    for name in names:
        assert getattr(package, name) is not None, name


def test_top_level_keeps_only_the_facade_and_its_tools() -> None:
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(modules) <= 8, modules
    packages = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    assert packages == sorted((*STAGES, "dashboard"))
