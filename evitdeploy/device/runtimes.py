"""What running any runtime on a device shares: its version, loading the model, which host this is.

A backend's own code is its device module (`backends/<folder>/device.py`, carried in a bundle as
`evitdeploy_device/runtime.py`), passed in: nothing here names a target, so a new backend adds
its device runtime without editing this package. A device module defines

    TARGET = "onnx"                       # the manifest's target it runs
    RUNTIME = ("import name", "pip package")
    VERSION_BOUND = False                 # optional: a model loads only on the version that made it
    SILENCE_NATIVE_LOAD = False           # optional: it logs noise on stderr while importing or loading
    def cannot_run_here(manifest): ...    # optional: None, or (message, hint) refusing this host
    def open_model(path, manifest, threads): ...  # infer(batch) -> ndarray; infer.providers, if any
"""

import contextlib
import importlib
import os
import platform
import sys
from pathlib import Path

import numpy as np

from .integrity import BundleError


def runtime_versions(runtime, manifest: dict) -> dict:
    """The runtime's, numpy's and Python's versions here; exit 3 where the runtime cannot run
    manifest's bundles on this host (a delegate it lacks) or is not installed."""
    target = manifest["target"]
    if getattr(runtime, "TARGET", None) != target:
        raise BundleError(f"this verifier cannot run {target!r} bundles", "verify it with the evitdeploy that made it", 3)
    module_name, package = runtime.RUNTIME
    quiet = native_stderr_silenced if getattr(runtime, "SILENCE_NATIVE_LOAD", False) else contextlib.nullcontext
    with quiet():  # ExecuTorch's import logs torchao/pytree noise; failures still raise
        refusal = runtime.cannot_run_here(manifest) if hasattr(runtime, "cannot_run_here") else None
    if refusal:
        raise BundleError(refusal[0], refusal[1], 3)
    try:
        with quiet():
            module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BundleError(f"{package} is not installed", f"install it with: pip install numpy {package}", 3) from exc
    return {package: _distribution_version(package, module), "numpy": np.__version__, "python": platform.python_version()}


def _distribution_version(package: str, module) -> str:
    """The installed distribution's version, as the manifest's toolchain records it (a module's
    __version__ may say more: OpenVINO's carries its build number), else the module's own."""
    try:
        from importlib import metadata

        return metadata.version(package)
    except Exception:
        return getattr(module, "__version__", "unknown")


def version_findings(manifest: dict, versions: dict, runtime) -> tuple:
    """(warnings, errors) when the runtime's version differs from the one that made the bundle:
    an error for a version-bound runtime (a serialized engine loads only where it was built)."""
    warnings, errors = [], []
    package = runtime.RUNTIME[1]
    made_with = manifest.get("toolchain", {})
    if package in versions and package in made_with and versions[package] != made_with[package]:
        line = f"{package} here is {versions[package]}, the bundle was made and checked with {made_with[package]}"
        (errors if getattr(runtime, "VERSION_BOUND", False) else warnings).append(line)
    return warnings, errors


@contextlib.contextmanager
def native_stderr_silenced():
    """A runtime's C++ side (LiteRT: an "INFO: Created ... delegate" and a deprecation line tagged
    "ERROR:" on every load) writes to file descriptor 2; neither is an error. Load failures still
    raise in Python."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):
        yield
        return
    sys.stderr.flush()
    saved, devnull = os.dup(fd), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    try:
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


def open_model(folder, manifest: dict, threads, runtime) -> tuple:
    """(infer(batch) -> outputs, the runtime's providers) for the bundle's model on this device."""
    path = Path(folder) / manifest["model_file"]
    quiet = native_stderr_silenced() if getattr(runtime, "SILENCE_NATIVE_LOAD", False) else contextlib.nullcontext()
    with quiet:
        infer = runtime.open_model(path, manifest, threads)
    return infer, list(getattr(infer, "providers", []))


# --- which host this is: budgets are judged only on a device of the profile's kind ----------


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace").replace("\x00", " ").strip()
    except OSError:
        return ""


def gpu_names() -> list:
    """NVIDIA GPUs as the driver names them (no CUDA import needed)."""
    names = []
    for info in sorted(Path("/proc/driver/nvidia/gpus").glob("*/information")):
        for line in _read(str(info)).splitlines():
            if line.startswith("Model:"):
                names.append(line.split(":", 1)[1].strip())
    return names


def host_matches(name: str, machines, device_model=None, gpu=None):
    """(whether this host is a device of the profile's kind, why): budgets are judged only there."""
    machine = platform.machine().lower()
    if not machines:
        return False, f"{name} is a device evitdeploy does not run on; measure latency on it with verify.py or the vendor's tools"
    if machine not in machines:
        return False, f"this host is {machine}; profile {name} is for {'/'.join(machines)}"
    if device_model:
        board = _read("/proc/device-tree/model")
        if device_model.lower() not in board.lower():
            return False, f"this host is {board or 'not a device-tree board'}; profile {name} is for a {device_model}"
    if gpu:
        gpus = gpu_names()
        if not any(gpu.lower() in found.lower() for found in gpus):
            return False, f"this host has {', '.join(gpus) or 'no NVIDIA GPU'}; profile {name} is for {gpu} GPUs"
    return True, f"this host matches profile {name} ({machine})"
