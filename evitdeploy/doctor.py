"""Which backends are installed, their versions, and how to install what is missing.

Versions come from package metadata, so the doctor never imports a heavy backend.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from importlib import metadata


@dataclass(frozen=True)
class Backend:
    name: str
    packages: tuple[str, ...]  # distribution names; all must be present
    purpose: str
    install: str
    core: bool = False


BACKENDS = (
    Backend("torch", ("torch",), "reference model and export", "pip install torch==2.13.0", core=True),
    Backend("onnx", ("onnx", "onnxslim"), "ONNX export, checking, simplification", "pip install onnx onnxslim", core=True),
    Backend("onnxruntime", ("onnxruntime",), "ONNX runner (CPU; CUDA/TensorRT EPs when present)", "pip install onnxruntime", core=True),
    Backend("sample-photos", ("scikit-image",), "real photos for parity and calibration", "pip install scikit-image", core=True),
    Backend("tensorrt", ("tensorrt",), "TensorRT engines (NVIDIA GPUs, Jetson)", "pip install 'evitdeploy[tensorrt]' (needs NVIDIA's index)"),
    Backend("polygraphy", ("polygraphy",), "TensorRT tooling", "pip install 'evitdeploy[tensorrt]'"),
    Backend("coreml", ("coremltools",), "Core ML packages (prediction on macOS only)", "pip install 'evitdeploy[coreml]'"),
    Backend("litert-export", ("litert-torch",), "PyTorch -> .tflite", "pip install 'evitdeploy[tflite]'"),
    Backend("litert-runtime", ("ai-edge-litert",), "TFLite/LiteRT runner", "pip install 'evitdeploy[tflite]'"),
    Backend("litert-quantizer", ("ai-edge-quantizer",), "full-integer INT8 .tflite", "pip install 'evitdeploy[tflite]'"),
)


def _version(package: str):
    with contextlib.suppress(metadata.PackageNotFoundError):
        return metadata.version(package)
    return None


def installed(package: str) -> bool:
    return _version(package) is not None


def diagnose() -> dict:
    """JSON-ready: one entry per backend, and whether the core is complete."""
    entries = []
    for backend in BACKENDS:
        versions = {p: _version(p) for p in backend.packages}
        installed = all(versions.values())
        entry = {**asdict(backend), "installed": installed, "versions": versions}
        if backend.name == "onnxruntime" and installed:
            entry["providers"] = _ort_providers()
        entries.append(entry)
    core_ok = all(e["installed"] for e in entries if e["core"])
    return {"core_ok": core_ok, "backends": entries}


def _ort_providers() -> list[str]:
    try:
        import onnxruntime
    except Exception:
        return []
    return list(onnxruntime.get_available_providers())
