"""`evitdeploy build BUNDLE`: on the device, the bundle's own verification with its TensorRT device
module (the code `python3 verify.py` runs there): the engine(s) built from the bundle's ONNX and
plan, cached beside the bundle, checked against reference.npz, and timed (host wall time, and GPU
compute from CUDA events, the figure trtexec reports). The bundle itself is not changed (a signed
bundle stays as signed)."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Callable, Optional

from evitdeploy.device import integrity
from evitdeploy.artifact import MANIFEST, read_manifest
from evitdeploy.errors import UserError
from evitdeploy.backends.tensorrt.plan import DEFAULT_WORKSPACE_MIB


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


def device_runtime(workspace_mib: int, progress: Optional[Callable[[str], None]]):
    """The TensorRT device module as verify takes it, building with this workspace and reporting
    each build through `progress`."""
    from evitdeploy.backends.tensorrt import device

    def open_model(path, manifest, threads):
        return device.open_model(path, manifest, threads, workspace_mib=workspace_mib, progress=progress or (lambda line: None))

    names = ("TARGET", "RUNTIME", "VERSION_BOUND", "cannot_run_here")
    return types.SimpleNamespace(**{name: getattr(device, name) for name in names}, open_model=open_model)


def build_in_bundle(folder: Path, workspace_mib: int = DEFAULT_WORKSPACE_MIB, count: int = 100, progress: Optional[Callable[[str], None]] = None) -> dict:
    from evitdeploy import limits
    from evitdeploy.backends.tensorrt import device
    from evitdeploy.backends.tensorrt.runtime import gpu_identity, import_tensorrt
    from evitdeploy.device.verify import verify

    limits.check_range("--count", count, 1, high=limits.COUNT_MAX)
    limits.check_range("--workspace", workspace_mib, 64, high=1 << 20)
    folder = Path(folder)
    manifest = _trusted(folder)
    trt = import_tensorrt()
    identity = gpu_identity()
    try:
        report = verify(folder, lambda target: device_runtime(workspace_mib, progress), count=count)
    except integrity.BundleError as exc:
        raise UserError(exc.message, exc.hint, exc.exit_code) from None
    except device.BuildError as exc:
        raise UserError(exc.message, exc.hint, 1) from None
    cache = device.cache_folder(folder, trt.__version__, identity["gpu"])
    engines = {}
    for section in (manifest["export"], manifest["export"].get("decoder") or {}):
        if section.get("engine"):
            engines[section["engine"]["file"]] = device.read_record(cache, section["engine"]["file"])
    return {**report, "kind": "engine-build", "engines": engines, "engine_cache": str(cache), "builder": f"TensorRT {trt.__version__}", **identity}
