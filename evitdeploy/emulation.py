"""Run INT8 models on the kernels of an x86 CPU without VNNI, from any x86 host.

QEMU user mode (`qemu-x86_64 -cpu Haswell`: AVX2 and FMA, no AVX-512, no VNNI) makes CPUID say
so, and ONNX Runtime and OpenVINO pick their AVX2 kernels by CPUID: the real AVX2 code runs,
translated, so its int16 saturation is reproduced (correctness only; its timing means nothing).
The models run in a child process with numpy and the runtime only, as on a device.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

AVX2_ONLY_CPU = "Haswell"
QEMU_NOISE = "TCG doesn't support requested feature"  # QEMU's line per CPUID bit of the model it does not emulate

_CHILD = r"""
import json, sys, numpy as np
jobs = json.loads(sys.argv[1]); x = np.load(jobs["inputs"])["x"]; found = {}
for key, (kind, path, precision) in jobs["models"].items():
    if kind == "onnx":
        import onnxruntime as ort
        options = ort.SessionOptions(); options.intra_op_num_threads = jobs["threads"]
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        run = lambda batch: session.run(None, {session.get_inputs()[0].name: batch})[0]
    else:
        import openvino as ov
        core = ov.Core()
        if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            precision = "f32 (bf16 refused on this CPU)"
        compiled = core.compile_model(core.read_model(path + "/model.xml"), "CPU",
                                      {"INFERENCE_PRECISION_HINT": precision.split()[0], "INFERENCE_NUM_THREADS": jobs["threads"]})
        request = compiled.create_infer_request()
        def run(batch):
            request.infer({0: batch}); return request.get_output_tensor(0).data.copy()
    np.save(jobs["out"] + "/" + key + ".npy", np.concatenate([run(x[i:i + 1]) for i in range(len(x))]))
    found[key] = precision
print(json.dumps(found))
"""


def qemu() -> Optional[str]:
    """The QEMU user-mode x86-64 emulator, where this is an x86-64 host that has it."""
    return shutil.which("qemu-x86_64") if platform.machine().lower() in ("x86_64", "amd64") else None


def model_of(artifact) -> tuple[str, str, str]:
    """(kind, model path, inference precision) of an ONNX Runtime or OpenVINO artifact."""
    precision = artifact.manifest.get("export", {}).get("openvino", {}).get("inference_precision", "f32")
    return (artifact.target, str(artifact.model_file), precision)


def outputs(models: dict, inputs: np.ndarray, *, on_avx2: bool, threads: int = 2) -> tuple[dict, dict]:
    """({key: outputs}, {key: inference precision used}) of each model in `models` ({key: model_of(...)}),
    one input at a time, in a child process on this CPU or (`on_avx2`) on an emulated AVX2-only one.
    RuntimeError with the child's last lines when it fails."""
    emulator = qemu()
    if on_avx2 and emulator is None:
        raise RuntimeError("qemu-x86_64 is not installed on this x86-64 host (apt-get install qemu-user)")
    with tempfile.TemporaryDirectory(prefix="evitdeploy-kernels-") as scratch:
        np.savez(Path(scratch) / "inputs.npz", x=np.ascontiguousarray(inputs, np.float32))
        jobs = json.dumps({"inputs": str(Path(scratch) / "inputs.npz"), "out": scratch, "models": models, "threads": threads})
        command = ([emulator, "-cpu", AVX2_ONLY_CPU] if on_avx2 else []) + [sys.executable, "-c", _CHILD, jobs]
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENBLAS")}  # set for the host's CPU, not the emulated one
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if done.returncode:
            raise RuntimeError(f"the {'emulated AVX2 ' if on_avx2 else ''}run failed: " + quiet(done.stderr)[-2000:])
        precisions = json.loads(done.stdout.strip().splitlines()[-1])
        return {key: np.load(Path(scratch) / f"{key}.npy") for key in models}, precisions


def quiet(stderr: str) -> str:
    """stderr without QEMU's notes on CPUID bits it does not emulate."""
    return "\n".join(line for line in stderr.splitlines() if QEMU_NOISE not in line)
