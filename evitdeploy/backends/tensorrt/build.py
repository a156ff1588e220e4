"""`evitdeploy build BUNDLE`: on the device, build the TensorRT engine a bundle's recipe describes,
then check it against the bundle's reference outputs and time it the way trtexec reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from evitdeploy.device import integrity, metrics
from evitdeploy.artifact import MANIFEST, build_manifest, read_manifest, write_bytes, write_json
from evitdeploy.errors import UserError
from evitdeploy.backends.tensorrt.plan import DEFAULT_WORKSPACE_MIB, ENGINE_FILE, TIMING_CACHE_FILE
from evitdeploy.spec import ModelSpec


def _trusted(folder: Path) -> dict:
    try:
        manifest = integrity.load_manifest(folder)
        integrity.check_integrity(folder, manifest)
    except integrity.BundleError as exc:
        raise UserError(exc.message, exc.hint, 2 if exc.exit_code != 3 else 3) from exc
    read_manifest(folder / MANIFEST, bundle=True)  # the full schema, once the device's own checks passed
    if manifest["target"] != "trt":
        raise UserError(f"{folder} is a {manifest['target']} bundle, not a TensorRT one", "run `python3 verify.py` in it instead")
    return manifest


def build_in_bundle(folder: Path, workspace_mib: int = DEFAULT_WORKSPACE_MIB, count: int = 100,
                    progress: Optional[Callable[[str], None]] = None) -> dict:
    from evitdeploy.precision.plan import PrecisionPlan
    from evitdeploy.backends.tensorrt.export import ONNX_FILE, build_engine
    from evitdeploy.backends.tensorrt.runtime import gpu_identity, import_tensorrt
    from evitdeploy.backends.tensorrt.runner import TensorRTRunner

    from evitdeploy import limits

    limits.check_range("--count", count, 1, high=limits.COUNT_MAX)
    folder = Path(folder)
    manifest = _trusted(folder)
    trt = import_tensorrt()
    identity = gpu_identity()
    spec = ModelSpec.from_dict(manifest["spec"])
    plan_file = folder / "precision_plan.json"
    plan = PrecisionPlan.from_dict(json.loads(plan_file.read_text())) if plan_file.is_file() else None
    shape_range = {k: tuple(v) for k, v in manifest["export"]["shapes"].items()}
    if progress:
        progress(f"building the {manifest['precision'].upper()} engine on {identity['gpu']} with TensorRT {trt.__version__}")
    engine, info = build_engine(
        trt, folder / ONNX_FILE, spec, precision=manifest["precision"], plan=plan, shape_range=shape_range,
        workspace_mib=workspace_mib, timing_cache=folder / TIMING_CACHE_FILE,
    )
    write_bytes(folder / ENGINE_FILE, engine)
    write_bytes(folder / TIMING_CACHE_FILE, info.pop("timing_cache"))
    built = {"toolchain": {"tensorrt": trt.__version__}, "export": identity}
    with np.load(folder / integrity.REFERENCE, allow_pickle=False) as reference:
        inputs, expected = reference["inputs"], reference["expected"]
    if progress:
        progress("checking the engine against reference.npz, then timing it")
    with TensorRTRunner(folder / ENGINE_FILE, spec, built) as runner:
        outputs = metrics.run_batches(lambda b: runner.infer({spec.input_name: b})[spec.output_name], inputs, spec.input_shape[0])
        gpu = metrics.latency_stats(runner.gpu_times_ms(inputs[[0] * spec.input_shape[0]], count=count), spec.input_shape[0])
    parity = metrics.compare_outputs(spec.task, expected, outputs, tolerances=manifest["bundle"]["tolerances"])
    export = {**manifest["export"], "engine": {**manifest["export"]["engine"], "built": True, **info, **identity}, **identity}
    sections = {k: v for k, v in manifest.items() if k not in ("format", "created", "target", "precision", "model_file", "spec", "files", "export", "toolchain")}
    updated = build_manifest(folder, "trt", manifest["precision"], spec=spec, model_file=manifest["model_file"], **sections, export=export,
                             toolchain={**manifest.get("toolchain", {}), "tensorrt": trt.__version__})
    write_json(folder / MANIFEST, updated)
    return {
        "kind": "engine-build", "bundle": str(folder), "model": spec.name, "precision": manifest["precision"],
        "passed": parity["passed"], "failures": parity["failures"], "parity": parity, "gpu_compute": gpu,
        "engine": export["engine"], "tensorrt": trt.__version__,
    }
