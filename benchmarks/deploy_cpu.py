"""The deploy targets, measured in one run on this host.

    .venv/bin/python benchmarks/deploy_cpu.py [--clean-venv] [--keep DIR] [--tiny]

1. `make demo`'s core: `evitdeploy deploy --profile x86-cpu --model efficientvit_b0` (FP32), wall time
   of the whole command (target: under 2 minutes on 2 cores).
2. B1 INT8 for x86-cpu: the bundle's bytes beyond the model file (target < 5 MB), and the wall time
   of `python -I verify.py` in the bundle (target < 10 s), with torch and evitdeploy blocked.
3. With --clean-venv: a new virtual environment holding only numpy and onnxruntime (pip, from the
   package index, at the versions the bundle was made with), and verify.py run there: the device's
   situation exactly. Needs access to the package index.
--tiny: B0 at 64x64 for both bundles (2 photos, 2 calibration images, no INT8 search), verify.py
once (a smoke run of sections 1 and 2).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import add_tiny_flag

EVITDEPLOY = [sys.executable, "-m", "evitdeploy"]
BLOCK = (
    "import runpy, sys\n"
    "class DeviceOnly:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in ('torch', 'evitdeploy', 'onnx', 'skimage', 'scipy'):\n"
    "            raise ImportError(name + ' is not on the device')\n"
    "sys.meta_path.insert(0, DeviceOnly())\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


def timed(command: list[str], **kwargs) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"failed ({result.returncode}): {' '.join(command)}\n{result.stderr[-2000:]}{result.stdout[-2000:]}")
    return seconds, result


def deploy(folder: Path, model: str, precision: str, options: tuple = ()) -> tuple[float, dict]:
    seconds, result = timed([*EVITDEPLOY, "deploy", "--profile", "x86-cpu", "--model", model, "-p", precision, "-o", str(folder), "--json", *options])
    return seconds, json.loads(result.stdout)


def clean_venv_verify(bundle: Path, scratch: Path) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    versions = manifest["toolchain"]
    venv = scratch / "device-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", f"numpy=={versions['numpy']}", f"onnxruntime=={versions['onnxruntime']}"]
    install_s, _ = timed(pip)
    listing = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True).stdout.split()
    seconds, result = timed([str(venv / "bin" / "python"), "verify.py", "--count", "50"], cwd=bundle)
    print(f"clean venv: {len(listing)} packages ({', '.join(listing)}); pip install {install_s:.1f} s")
    print(f"verify.py there: {seconds:.2f} s, exit 0; last line: {result.stdout.strip().splitlines()[-1]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clean-venv", action="store_true", help="also verify in a new venv with only numpy + onnxruntime")
    parser.add_argument("--keep", type=Path, default=None, help="keep the bundles in this folder")
    add_tiny_flag(parser)
    args = parser.parse_args()
    # (the INT8 bundle's model, deploy's options, verify.py runs)
    int8_model, options, verify_runs = (
        ("efficientvit_b0", ("--height", "64", "--width", "64", "-n", "2", "--calib-count", "2", "--search-budget", "0"), 1)
        if args.tiny
        else ("efficientvit_b1", (), 3)
    )
    scratch = Path(tempfile.mkdtemp(prefix="evitdeploy-bench-deploy-"))
    folder = args.keep or scratch
    try:
        print("## 1. deploy --profile x86-cpu --model efficientvit_b0 (FP32), the demo's core")
        seconds, summary = deploy(folder / "b0-fp32", "efficientvit_b0", "fp32", options)
        print(
            f"wall {seconds:.1f} s (target < 120 s); stages {summary['seconds']}; passed {summary['passed']}; "
            f"median {summary['latency']['median_ms']:.3f} ms; min cosine {summary['check']['metrics']['cosine_min']:.6f}"
        )

        print(f"\n## 2. {int8_model} INT8 bundle for x86-cpu")
        seconds, summary = deploy(folder / "b1-int8", int8_model, "int8", options)
        sizes = summary["sizes"]
        print(
            f"deploy wall {seconds:.1f} s; model {sizes['model_bytes'] / 1e6:.2f} MB; beyond the model {sizes['extra_bytes'] / 1e6:.2f} MB "
            f"(target < 5 MB) in {sizes['files']} files; passed {summary['passed']}"
        )
        runs = [timed([sys.executable, "-I", "-c", BLOCK, "verify.py"], cwd=folder / "b1-int8")[0] for _ in range(verify_runs)]
        print(f"verify.py (torch/evitdeploy blocked), {verify_runs} runs: median {sorted(runs)[len(runs) // 2]:.2f} s (target < 10 s)")

        if args.clean_venv:
            print("\n## 3. verify.py in a virtual environment with only numpy + onnxruntime")
            clean_venv_verify(folder / "b1-int8", scratch)
    finally:
        if args.keep is None:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
