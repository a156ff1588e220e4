"""Helpers shared by the test modules: the in-process CLI, the error contract, the device
interpreter and manifest edits (the TensorRT and libcudart stand-ins are tests/standin/, put in
place by conftest). Fixtures live in conftest.py (injected, not imported); test modules import
from here, never from each other or from conftest."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from evitdeploy.cli import app


class Cli:
    """Runs `evitdeploy ...` in-process and keeps stdout, stderr and the exit code apart."""

    def __init__(self):
        self.runner = CliRunner()

    def __call__(self, *args: str):
        result = self.runner.invoke(app, [str(a) for a in args])
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result


def assert_clean_error(result, code: int, *fragments: str) -> None:
    """One clear line, the right exit code, no traceback."""
    text = result.stderr + result.stdout
    assert result.exit_code == code, text
    assert "Traceback" not in text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, text  # progress lines may precede it; the error itself is one line
    for fragment in fragments:
        assert fragment in text, text


# A fresh interpreter in which torch, evitdeploy and the rest of our toolchain cannot be imported:
# what a device has (numpy + the runtime), proven by refusing the imports, then verify.py run as __main__.
BLOCKED = ("torch", "evitdeploy", "onnx", "onnxslim", "skimage", "scipy", "cv2", "typer", "rich", "matplotlib", "litert_torch", "ai_edge_quantizer", "jax")
DEVICE = """
import os, runpy, sys
blocked = set(sys.argv[1].split(","))
sys.path[:0] = [p for p in os.environ.get("EVITDEPLOY_TEST_DEVICE_PATH", "").split(os.pathsep) if p]
class DeviceOnly:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ImportError(name + " is not on the device")
sys.meta_path.insert(0, DeviceOnly())
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def on_device(script: Path, *args: str, blocked: tuple = BLOCKED, paths: tuple = (), libraries: str = "") -> subprocess.CompletedProcess:
    """`script` (a bundle's verify.py) as a device runs it: a fresh interpreter, in the bundle's
    folder, where the modules in `blocked` (torch, evitdeploy, ...) do not import. `paths`: folders
    put first on its sys.path (a stand-in runtime); `libraries`: its LD_LIBRARY_PATH (a stand-in
    libcudart)."""
    import os

    env = dict(os.environ, EVITDEPLOY_TEST_DEVICE_PATH=os.pathsep.join(map(str, paths)))
    if libraries:
        env["LD_LIBRARY_PATH"] = libraries
    return subprocess.run(
        [sys.executable, "-I", "-c", DEVICE, ",".join(blocked), str(script), *args],
        cwd=Path(script).parent,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def manifest_of(folder: Path) -> dict:
    return json.loads((Path(folder) / "manifest.json").read_text())


def rewrite_manifest(folder: Path, change) -> None:
    """Apply `change` to a bundle's manifest.json in place (hashes are not redone: that is the caller's)."""
    manifest = manifest_of(folder)
    change(manifest)
    (Path(folder) / "manifest.json").write_text(json.dumps(manifest, indent=2))


# A device profile for `--precision auto`: an x86 host that can take ONNX Runtime and OpenVINO; the
# fields in braces are the test's (str.format).
X86_TEST_PROFILE = """
description = "x86 test device"
backend = "openvino"
precision = "{precision}"
precisions = {precisions}
candidates = {candidates}
[input]
height = 64
width = 64
[bench]
threads = 2
warmup = 5
count = 30
[budget]
latency_ms = 33.3
[tolerances.fp32]
max_abs = {max_abs}
min_cosine = 0.99999
[tolerances.int8]
min_cosine = 0.98
min_top1 = 0.9
[host]
machine = ["x86_64", "amd64"]
"""


# A device profile whose parity tolerances alone would let a naive INT8 through: what decides is the
# accuracy on the user's data (--dataset, --max-drop).
LOOSE_PROFILE = """
description = "x86 test device whose parity tolerances alone would let a naive INT8 through"
backend = "onnxruntime"
precision = "fp32"
precisions = ["fp32", "int8"]
candidates = ["onnxruntime"]
[bench]
threads = 2
warmup = 3
count = 20
[budget]
latency_ms = 100
[tolerances.int8]
min_cosine = 0.0
min_top1 = 0.0
min_pixel_agreement = 0.0
[host]
machine = ["x86_64", "amd64"]
"""


# The session's sweep (conftest's sweep_results): 1 model x 2 precisions x 2 sizes; bf16 is no ONNX
# precision, so those cells fail and the sweep goes on.
SWEEP_ARGS = (
    "--model",
    "efficientvit_b0",
    "--precision",
    "fp32,bf16",
    "--resolution",
    "64,64x96",
    "--samples",
    "1",
    "--warmup",
    "1",
    "--count",
    "5",
    "--threads",
    "1",
)
