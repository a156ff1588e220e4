"""OpenVINO on the device: a bundle carries this file as `evitdeploy_device/runtime.py`.

Numpy and openvino only, Python 3.8 syntax, no evitdeploy imports. Every compile setting is
explicit and comes from the manifest (OpenVINO's own default inference precision on a BF16 CPU
is bf16, not f32: a silent default would change the numbers the bundle was checked with). The
host runner compiles through `compile_ir` too, so host and device run the same settings.
"""

import os

import numpy as np

TARGET = "openvino"
RUNTIME = ("openvino", "openvino")
IR_FILE = "model.xml"  # inside the artifact's model.openvino folder, beside model.bin


def settings(manifest: dict, threads=None) -> dict:
    """The CPU plugin's properties for this artifact: the inference precision it was validated at,
    the latency hint, and an explicit thread count (the caller's, else every CPU this process may use)."""
    recorded = manifest.get("export", {}).get("openvino", {})
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return {
        "INFERENCE_PRECISION_HINT": recorded.get("inference_precision", "f32"),
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": int(threads or usable),
    }


def has_bf16(core) -> bool:
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def compile_ir(path, properties: dict):
    """The compiled model on the CPU, or ValueError naming why this CPU cannot run it."""
    import openvino as ov

    core = ov.Core()
    if properties["INFERENCE_PRECISION_HINT"] == "bf16" and not has_bf16(core):
        raise ValueError("this CPU has no BF16 (it needs AVX512-BF16 or AMX): the artifact was validated at bf16")
    return core.compile_model(core.read_model(os.path.join(str(path), IR_FILE)), "CPU", properties)


def describe(properties: dict) -> str:
    return "OpenVINO CPU ({INFERENCE_PRECISION_HINT}, {PERFORMANCE_HINT}, {INFERENCE_NUM_THREADS} threads)".format(**properties)


def open_model(path, manifest: dict, threads):
    """infer(batch) -> the first output, compiled with the manifest's settings; a dict of named
    inputs (a promptable model's decoder) gives a dict of every output."""
    properties = settings(manifest, threads)
    request = compile_ir(path, properties).create_infer_request()

    def infer(batch):
        if isinstance(batch, dict):
            request.infer({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in batch.items()})
            return {out.get_any_name(): request.get_tensor(out).data.copy() for out in request.model_outputs}
        request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})
        return request.get_output_tensor(0).data.copy()  # the request reuses its buffer

    infer.providers = [describe(properties)]
    return infer
