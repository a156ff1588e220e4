"""Every script in benchmarks/ still runs: each in its tiny mode (`--tiny`: the smallest models and
counts that reach every code path) in a subprocess, exit 0 and its result lines printed, or a
"skipped:" line where its backend (TensorRT, CUDA, macOS) is not here. A new script is covered
without editing this file.

The tiny runs over 30 s (conversions and lowerings cost nearly as much at 64x64 as at 224; about
15 minutes together) are the `bench` tier: `make bench-tiny` runs them, `make test` does not. What
rotted a script before (an evitdeploy name it imports moved) is checked for every script in the
fast tier, by resolving each of its imports, function-local ones included."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
SHARED = "common.py"  # the scripts' shared helpers, not a benchmark
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("*.py") if p.name != SHARED)

# What each script's tiny run must print: its ratio or table lines (a new script: exit 0 and some output).
PRINTS = {
    "coreml_cpu.py": [r"FP16/FP32 [\d.]+ \(target ~0\.5\), INT8/FP32 [\d.]+"],
    "deploy_cpu.py": [r"wall [\d.]+ s \(target < 120 s\)", r"beyond the model [\d.]+ MB", r"verify\.py .*median [\d.]+ s"],
    "executorch_cpu.py": [
        r"INT8 speedup over FP32: ExecuTorch [\d.]+x",
        r"portable kernels [\d.]+ ms",
        r"per-image cosine min",
        r"contiguity: .*our runner",
        r"pixel agreement FP32 \.pte vs PyTorch",
        r"check mask IoU min",
    ],
    "farm_cpu.py": [r"wall clock .* local/farm [\d.]+x", r"control: alone after vs before"],
    "gate_noise.py": [r"false-alarm rate", r"A/B \(ours -> naive export\) +interleaved"],
    "gpu_trt.py": [r'"numerics b0"', r'"torch_latency b0"', r'"tensorrt b0"'],
    "int8_kernels.py": [r"\| digits B0 .* \| ONNX Runtime \|", r"\| mosaic Seg-B0 .* \| OpenVINO \|", r"## 2\. speed"],
    "onnx_cpu.py": [r"ours/naive [\d.]+x +ours/eager [\d.]+x", r"op_profile_ours: "],
    "openvino_cpu.py": [r"x ORT FP32", r"min cosine [\d.]+ +top-1", r"INT8 ours \(.*\): "],
    "precision_cpu.py": [r'"speed_vs_fp32"', r'"pixel_agreement_with_fp32"', r'"plan fp16 \(storage emulation\)"'],
    "sam_cpu.py": [r"reference/ours [\d.]+x", r"ORT/OV", r"x FP32"],
    "sam_precision.py": [r"ort int8 plan +mask IoU vs FP32 min", r"ort fp16 plain +mask IoU", r"done in"],
    "tflite_cpu.py": [r"max abs .* \(target <= 1e-4\)", r"INT8 speedup over FP32: XNNPACK [\d.]+x", r"pixel agreement INT8 vs FP32"],
}
# Tiny runs over 30 s (seconds each took here, a shared 2-core host): exports, conversions and
# lowerings cost nearly as much at 64x64 as at 224. Under 30 s: deploy_cpu 17, onnx_cpu 9, gpu_trt 8
# (on the CPU), gate_noise 7.
SLOW = {
    "executorch_cpu.py": "280 s: nine XNNPACK lowerings and a SAM pair",
    "sam_cpu.py": "125 s: SAM pair exports on ONNX Runtime and OpenVINO, FP16 and INT8 plans",
    "farm_cpu.py": "116 s: a Ray cluster and four sweeps",
    "tflite_cpu.py": "96 s: seven litert-torch conversions",
    "coreml_cpu.py": "77 s: six Core ML conversions",
    "int8_kernels.py": "76 s: QEMU runs of every INT8 model",
    "sam_precision.py": "48 s: five SAM pair exports and NNCF",
    "openvino_cpu.py": "39 s: NNCF twice",
    "precision_cpu.py": "38 s: five sections of exports",
}
RAY = {"farm_cpu.py"}  # starts a Ray cluster: one at a time


def _marks(script: str) -> list:
    marks = [pytest.mark.bench] if script in SLOW else []
    return marks + ([pytest.mark.xdist_group("ray")] if script in RAY else [])


@pytest.mark.parametrize("script", [pytest.param(s, marks=_marks(s)) for s in SCRIPTS])
def test_benchmark_runs_in_tiny_mode(script):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), "--tiny"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    shown = f"--- stdout ---\n{done.stdout[-4000:]}\n--- stderr ---\n{done.stderr[-4000:]}"
    assert done.returncode == 0, shown
    assert done.stdout.strip(), shown
    if done.stdout.startswith("skipped: "):  # its backend, GPU or OS is not here
        return
    for pattern in PRINTS.get(script, []):
        assert re.search(pattern, done.stdout), f"{script} did not print /{pattern}/\n{shown}"


BLOCKED = (
    "import runpy, sys\n"
    "class Absent:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] == 'coremltools':\n"
    "            raise ImportError(name)\n"
    "sys.meta_path.insert(0, Absent())\n"
    "sys.argv = sys.argv[1:]\n"
    "sys.path.insert(0, sys.argv[0].rsplit('/', 1)[0])\n"  # as `python benchmarks/x.py` would
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


@pytest.mark.parametrize(("flags", "exit_code"), [(["--tiny"], 0), ([], 3)])
def test_benchmark_without_its_backend_says_skipped(flags, exit_code):
    """Tiny mode passes where a backend is absent (exit 0), a real run says it cannot run (exit 3)."""
    done = subprocess.run([sys.executable, "-c", BLOCKED, str(BENCHMARKS / "coreml_cpu.py"), *flags], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == exit_code, done.stdout + done.stderr
    assert done.stdout.startswith("skipped: coremltools not installed"), done.stdout + done.stderr


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module, [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []


@pytest.mark.fast
@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_docstring_says_what_tiny_mode_runs(script):
    assert "--tiny" in (ast.get_docstring(ast.parse((BENCHMARKS / script).read_text())) or ""), f"{script}'s docstring does not describe --tiny"


@pytest.mark.fast
@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_imports_no_other_script_and_no_private_name(script):
    """Scripts share code through common.py only, and use the package's public names."""
    others = {p.stem for p in BENCHMARKS.glob("*.py")} - {Path(SHARED).stem}
    for module, names in _imports(BENCHMARKS / script):
        assert module.split(".")[0] not in others, f"{script} imports the script {module}"
        if module.startswith("evitdeploy"):
            assert not any(part.startswith("_") for part in module.split(".")), f"{script} imports the private module {module}"
            assert not [n for n in names if n.startswith("_")], f"{script} imports private names {names} from {module}"


@pytest.mark.fast
@pytest.mark.parametrize("script", [*SCRIPTS, SHARED])
def test_every_evitdeploy_name_a_benchmark_imports_exists(script):
    """Each `from evitdeploy... import name` of the script, at any depth, resolves in the package
    as it is now (what broke a script when an api helper moved)."""
    import importlib
    import importlib.util

    for module, names in _imports(BENCHMARKS / script):
        if not module.startswith("evitdeploy"):
            continue
        imported = importlib.import_module(module)
        missing = [name for name in names if not hasattr(imported, name) and importlib.util.find_spec(f"{module}.{name}") is None]
        assert not missing, f"{script} imports {missing} from {module}, which has no such name"


@pytest.mark.fast
def test_every_benchmark_script_has_a_make_target():
    makefile = (ROOT / "Makefile").read_text()
    for script in SCRIPTS:
        assert re.search(rf"^\t\$\(PY\) benchmarks/{re.escape(script)}\b", makefile, re.M), f"no make target runs benchmarks/{script}"


def test_gpu_device_script_parses():
    done = subprocess.run(["bash", "-n", str(BENCHMARKS / "gpu_device.sh")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
