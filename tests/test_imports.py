"""The layering holds: import-linter's contracts from pyproject.toml, plus one independence
contract generated from the backend registry, so a new backend is held to it by registering."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from evitdeploy.backends import BACKENDS

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def independence_contract() -> str:
    """Backends import no other backend, except the ones their descriptor says they consume (the
    ONNX export). The PyTorch reference (backends/torch) is what every export validates against,
    so it is not one of them."""
    folders = [f"evitdeploy.backends.{b.folder}" for b in BACKENDS.values()]
    ignored = [f"evitdeploy.backends.{b.folder}.** -> evitdeploy.backends.{other}.**" for b in BACKENDS.values() for other in b.consumes]
    return textwrap.dedent(f"""
        [[tool.importlinter.contracts]]
        name = "backends are independent of each other (TensorRT and OpenVINO may read the ONNX export)"
        type = "independence"
        modules = {folders!r}
        ignore_imports = {ignored!r}
        unmatched_ignore_imports_alerting = "none"
        """)


def lint(root: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    config = tmp_path / "importlinter.toml"
    config.write_text((ROOT / "pyproject.toml").read_text() + independence_contract())
    return subprocess.run(
        [str(LINT), "--config", str(config), "--no-cache"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )


def test_every_contract_is_kept(tmp_path):
    result = lint(ROOT, tmp_path)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "broken" in result.stdout and " 0 broken" in result.stdout


@pytest.mark.parametrize(
    "module, added, broken",
    [
        ("spec.py", "from evitdeploy import api\n", "no import cycles"),  # a cycle: api imports spec
        ("backends/tflite/plan.py", "from evitdeploy.backends.coreml import export\n", "backends are independent"),
        ("precision/plan.py", "from evitdeploy.backends import BACKENDS\n", "one direction"),
    ],
)
def test_a_broken_rule_fails_the_lint(tmp_path, module, added, broken):
    """The contracts are not vacuous: each kind of regression is caught on a copy of the package."""
    copy = tmp_path / "src"
    shutil.copytree(ROOT / "evitdeploy", copy / "evitdeploy", ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / "evitdeploy" / module
    target.write_text(target.read_text() + "\n" + added)
    result = lint(copy, tmp_path)
    assert result.returncode != 0 and broken in result.stdout, result.stdout[-3000:]
