"""A backend added from outside the package: one folder (tests/data/plugin_backend/evitdeploy_toy)
and one registry entry (an `evitdeploy.backends` entry point), nothing in evitdeploy edited. Its
option of its own (`graph`) goes through export, check, bench, deploy and sweep on the CLI, and is
refused, in one line, where it does not belong."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PLUGIN = Path(__file__).parent / "data" / "plugin_backend" / "evitdeploy_toy"
SIZE = ("--height", "64", "--width", "64")
PROFILE = """description = "a toy device"
backend = "toy"
precision = "fp32"
precisions = ["fp32"]

[options]
graph = "plain"

[bench]
warmup = 1
count = 3
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """An installed-looking distribution: the package, and its dist-info naming the entry point."""
    site = tmp_path_factory.mktemp("site")
    shutil.copytree(PLUGIN, site / PLUGIN.name)
    info = site / "evitdeploy_toy-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: evitdeploy-toy\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[evitdeploy.backends]\ntoy = evitdeploy_toy\n")
    return site


@pytest.fixture(scope="module")
def toy(site):
    """Run the CLI with the toy distribution on the path: (exit code, stdout, stderr)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}

    def run(*args, cwd: Path):
        done = subprocess.run([sys.executable, "-m", "evitdeploy", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        return done.returncode, done.stdout, done.stderr

    return run


def test_a_backend_from_another_package_exports_checks_benches_deploys_and_sweeps(toy, tmp_path):
    code, out, err = toy("export", "-m", "efficientvit_b0", "-t", "toy", *SIZE, "--option", "graph=plain", "-o", "art", "--json", cwd=tmp_path)
    assert code == 0, err
    manifest = json.loads(out)
    assert (manifest["target"], manifest["export"]["graph"], manifest["export"]["simplified"]) == ("toy", "plain", False)

    code, out, err = toy("check", "art", "--samples", "2", "--json", cwd=tmp_path)
    assert code == 0 and json.loads(out)["passed"] is True, err
    code, out, err = toy("bench", "art", "--warmup", "1", "--count", "3", "--json", cwd=tmp_path)
    assert code == 0 and json.loads(out)["target"] == "toy", err

    (tmp_path / "toy.toml").write_text(PROFILE)
    code, out, err = toy("deploy", "--profile", "toy.toml", "-m", "efficientvit_b0", *SIZE, "--samples", "2", "-o", "bundle", "--json", cwd=tmp_path)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["passed"] and summary["target"] == "toy"
    assert "--target toy" in summary["commands"]["export"] and "--option graph=plain" in summary["commands"]["export"]
    assert json.loads((tmp_path / "bundle" / "manifest.json").read_text())["export"]["graph"] == "plain"
    code, out, err = toy("verify", "bundle", "--count", "2", "--json", cwd=tmp_path)
    assert code == 0 and json.loads(out)["passed"] is True, err

    code, out, err = toy(
        "sweep",
        "-m",
        "efficientvit_b0",
        "-t",
        "toy,onnx",
        "-r",
        "64",
        "--option",
        "graph=plain",
        "--samples",
        "2",
        "--count",
        "3",
        "-o",
        "grid.jsonl",
        "--json",
        cwd=tmp_path,
    )
    assert code == 0, err
    cells = {cell["cell"]["target"]: cell for cell in json.loads(out)["cells"]}
    assert cells.keys() == {"toy", "onnx"} and all(cell["status"] == "ok" for cell in cells.values())
    assert json.loads((tmp_path / cells["toy"]["artifact"] / "manifest.json").read_text())["export"]["graph"] == "plain"

    code, out, err = toy("doctor", "--json", cwd=tmp_path)
    assert "toy" in [entry["name"] for entry in json.loads(out)["backends"]]


@pytest.mark.parametrize(
    "args, message, hint",
    [
        (("-t", "toy", "--option", "graph=bogus"), "--option graph 'bogus' is not one toy takes", "choose one of: slim, plain"),
        (("-t", "onnx", "--option", "graph=plain"), "--option graph is for --target toy", "onnx takes no options"),
        (("-t", "toy", "--option", "colour=red"), "--option colour is not an option of any backend", "toy takes graph"),
        (("-t", "toy", "--nhwc"), "--nhwc is for --target tflite", "toy takes graph"),
        (("-t", "toy", "--option", "graph"), "--option 'graph' is not NAME=VALUE", "e.g. --option"),
    ],
)
def test_a_wrong_option_is_one_line_naming_what_the_target_takes(toy, tmp_path, args, message, hint):
    code, out, err = toy("export", "-m", "efficientvit_b0", *SIZE, *args, "-o", "never", cwd=tmp_path)
    assert code == 2 and err.count("\n") == 1 and message in err and hint in err, err
    assert not (tmp_path / "never").exists()
