"""The CoreLayer ships what the functions run and nothing of the CLI, the console or the
local stack: the layer's code is built by running layer/Makefile's `code` target (the
step `sam build` runs for CoreLayer) into a temporary directory, and every handler is
then imported in a fresh interpreter that sees only that directory and the installed
third-party packages (not src/)."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import subprocess
import sys
import sysconfig
from importlib.metadata import distribution
from pathlib import Path
from types import ModuleType

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from image_cicd.local.template import load_template

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {"click", "rich", "yaml", "moto"}
FORBIDDEN_DISTRIBUTIONS = {"click", "rich", "pyyaml", "moto"}


def _builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_layer", ROOT / "layer" / "build_layer.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def layer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The layer's python/ directory as the build makes it (its own code only)."""
    artifacts = tmp_path_factory.mktemp("CoreLayer")
    subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-f",
            str(ROOT / "layer" / "Makefile"),
            "code",
            f"ARTIFACTS_DIR={artifacts}",
            f"PYTHON={sys.executable}",
        ],
        check=True,
        capture_output=True,
    )
    return artifacts / "python"


def _files(directory: Path) -> list[Path]:
    return sorted(p.relative_to(directory) for p in directory.rglob("*") if p.is_file())


def test_the_template_builds_the_layer_with_layer_makefile() -> None:
    template = load_template(ROOT / "template.yaml")
    layer = template["Resources"]["CoreLayer"]
    assert layer["Metadata"]["BuildMethod"] == "makefile"
    assert (ROOT / layer["Metadata"]["ContextPath"] / "Makefile").is_file()
    # the local stack puts ContentUri on the functions' path: the same source
    assert (ROOT / layer["Properties"]["ContentUri"] / "image_cicd" / "__init__.py").is_file()
    # what sam build runs for the layer: the requirements, then the `code` target below
    commands = subprocess.run(
        [
            "make",
            "-n",
            "--no-print-directory",
            "-f",
            str(ROOT / "layer" / "Makefile"),
            "build-CoreLayer",
            "ARTIFACTS_DIR=/artifacts",
            "PYTHON=python3.12",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "--python-version 3.12" in commands
    assert '/layer/../src/requirements.txt"' in commands
    assert commands.rstrip().endswith('/layer/build_layer.py" "/artifacts/python"')


def test_the_layer_holds_the_files_of_the_build_list_and_no_cli_console_or_local(
    layer: Path,
) -> None:
    files = _files(layer)
    assert files == _builder().layer_files(ROOT)
    shipped = {p.parts[1] for p in files if len(p.parts) > 2}
    assert {"promotion", "approvals", "ledger", "aws", "registry"} <= shipped
    assert not shipped & {"cli", "console", "local"}
    assert Path("image_cicd/registry/synthetic.py") not in files
    # the approval pages' templates and stylesheet ship beside the code
    assert Path("image_cicd/web/templates/approvals/approval.html") in files
    assert Path("image_cicd/web/static/style.css") in files


def test_nothing_in_the_layer_imports_click_rich_yaml_or_moto(layer: Path) -> None:
    offenders = []
    for path in layer.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            offenders += [
                f"{path.relative_to(layer)}:{node.lineno} {name}"
                for name in names
                if name.partition(".")[0] in FORBIDDEN
            ]
    assert offenders == []


_IMPORT_HANDLERS = """
import importlib.util, json, sys
loaded = {}
for path in sys.argv[1:]:
    spec = importlib.util.spec_from_file_location("handler_" + str(len(loaded)), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    loaded[path] = callable(module.lambda_handler)
print(json.dumps({
    "handlers": loaded,
    "modules": {n: getattr(m, "__file__", None) for n, m in sys.modules.items()},
}))
"""


def test_every_handler_imports_with_the_layer_alone(layer: Path) -> None:
    handlers = sorted(str(p) for p in (ROOT / "functions").glob("*/app.py"))
    # -S: no site processing, so not the editable install of src/; site-packages for
    # the third-party packages (the build installs them from src/requirements.txt)
    path = os.pathsep.join([str(layer), sysconfig.get_paths()["purelib"]])
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": path,
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_TRACE_DISABLED": "1",
        "POWERTOOLS_SERVICE_NAME": "image-cicd",
    }
    done = subprocess.run(
        [sys.executable, "-S", "-c", _IMPORT_HANDLERS, *handlers],
        env=env,
        cwd=layer,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["handlers"] == dict.fromkeys(handlers, True)
    ours = {n: f for n, f in report["modules"].items() if n.partition(".")[0] == "image_cicd"}
    assert ours
    assert all(f is not None and Path(f).is_relative_to(layer) for f in ours.values()), ours
    assert not {n.partition(".")[0] for n in report["modules"]} & FORBIDDEN


def _requirement_closure(lines: list[str]) -> set[str]:
    """The distributions src/requirements.txt brings in (as installed in this venv)."""
    seen: set[tuple[str, str]] = set()  # (distribution, extra)
    todo = [(Requirement(line), "") for line in lines]  # (requirement, the asking extra)
    while todo:
        requirement, asking = todo.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": asking}):
            continue
        name = canonicalize_name(requirement.name)
        for extra in ["", *requirement.extras]:
            if (name, extra) not in seen:
                seen.add((name, extra))
                todo += [(Requirement(r), extra) for r in distribution(name).requires or []]
    return {name for name, _ in seen}


def test_the_layer_requirements_bring_no_cli_or_test_tools() -> None:
    text = (ROOT / "src" / "requirements.txt").read_text(encoding="utf-8")
    lines = [
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    ]
    closure = _requirement_closure(lines)
    assert {"pydantic", "aws-lambda-powertools", "aws-xray-sdk", "boto3"} <= closure
    assert not closure & FORBIDDEN_DISTRIBUTIONS, closure & FORBIDDEN_DISTRIBUTIONS
    assert not [n for n in closure if re.match(r"types-|mypy", n)]
