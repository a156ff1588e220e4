"""memory sits above spec, spec above errors, and an import kept for type checkers only counts
too: a cycle between the two is caught however it is written."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )


def test_spec_imports_nothing_above_errors():
    import ast

    tree = ast.parse((ROOT / "evitdeploy" / "spec.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    ours = {name for name in imported if name.startswith("evitdeploy")}
    # the task names and the references' preprocessing settings: the lowest layer, numpy-free constants
    assert ours <= {"evitdeploy.errors", "evitdeploy.device.tasks", "evitdeploy.device.preprocessing"}, ours
    assert "import numpy" not in (ROOT / "evitdeploy" / "device" / "preprocessing.py").read_text()


@pytest.mark.parametrize(
    "added",
    [
        "from evitdeploy import memory\n",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from evitdeploy.memory import fits\n",
    ],
    ids=["import", "type-checking-import"],
)
def test_spec_importing_memory_fails_the_lint(tmp_path, added):
    copy = tmp_path / "src"
    shutil.copytree(ROOT / "evitdeploy", copy / "evitdeploy", ignore=shutil.ignore_patterns("__pycache__"))
    spec = copy / "evitdeploy" / "spec.py"
    spec.write_text(spec.read_text() + "\n" + added)
    result = lint(copy)
    assert result.returncode != 0 and "memory -> spec -> errors BROKEN" in result.stdout, result.stdout[-3000:]
