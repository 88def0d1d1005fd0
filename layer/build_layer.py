"""The CoreLayer's own code: the modules of `image_cicd` that the functions import.

`sam build` runs layer/Makefile (template.yaml: CoreLayer, BuildMethod makefile), which
calls `python3 build_layer.py <dir>` to copy these files into the layer's python/ and
installs src/requirements.txt beside them. The list is the import closure of
functions/*/app.py over src/ (read with `ast`, every import followed, also those under
TYPE_CHECKING), plus the data files (templates, stylesheets) of each package in it;
the CLI, the console and the local stack are not in it unless a function imports them.
tests/infra/test_layer.py checks the same list.
"""

from __future__ import annotations

import ast
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = "image_cicd"


def module_file(src: Path, name: str) -> Path | None:
    """The file of module `name` under `src` (a package's __init__.py), if there is one."""
    path = src.joinpath(*name.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def imported_names(path: Path, module: str) -> set[str]:
    """Every module `path` (the module `module`) may import: `import a.b` gives a.b,
    `from a import b` gives a and a.b (b may be a submodule); relative imports resolved."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def closure(src: Path, roots: set[str]) -> set[str]:
    """The modules of `src` that `roots` import, directly or not (with their packages)."""
    seen: set[str] = set()
    todo = sorted(roots)
    while todo:
        name = todo.pop()
        path = module_file(src, name)
        if name in seen or path is None:
            continue
        seen.add(name)
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        todo.extend(n for n in imported_names(path, name) if n.partition(".")[0] == PACKAGE)
    return seen


def handler_imports(root: Path = ROOT) -> set[str]:
    """The modules of the package that the handlers (functions/*/app.py) import."""
    found: set[str] = set()
    for app in sorted((root / "functions").glob("*/app.py")):
        found |= {n for n in imported_names(app, "app") if n.partition(".")[0] == PACKAGE}
    return found


def _data_files(directory: Path) -> list[Path]:
    """A package's files that are not Python, with its subdirectories that are not
    packages (templates/, static/)."""
    found: list[Path] = []
    for entry in sorted(directory.iterdir()):
        if entry.name == "__pycache__":
            continue
        if entry.is_dir() and not (entry / "__init__.py").exists():
            found.extend(p for p in sorted(entry.rglob("*")) if p.is_file())
        elif entry.is_file() and entry.suffix not in (".py", ".pyc"):
            found.append(entry)
    return found


def layer_files(root: Path = ROOT) -> list[Path]:
    """The files of the layer's python/ directory that come from src/, relative to src/."""
    src = root / "src"
    files: set[Path] = set()
    for name in closure(src, handler_imports(root)):
        path = module_file(src, name)
        assert path is not None
        files.add(path)
        if path.name == "__init__.py":
            files.update(_data_files(path.parent))
    return sorted(p.relative_to(src) for p in files)


def build(destination: Path, root: Path = ROOT) -> list[Path]:
    """Copy `layer_files` into `destination` (the layer's python/ directory)."""
    files = layer_files(root)
    for relative in files:
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / "src" / relative, target)
    return files


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: build_layer.py <the layer's python/ directory>")
    copied = build(Path(sys.argv[1]))
    print(f"build_layer.py: {len(copied)} files of src/ into {sys.argv[1]}")
