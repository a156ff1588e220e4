"""TensorRT and the GPU it runs on, imported only when used (tensorrt-stubs alone is not TensorRT)."""

from __future__ import annotations

from typing import Callable

from evitdeploy.backends.tensorrt import BACKEND
from evitdeploy.errors import BackendUnavailable, UserError


def import_tensorrt():
    """TensorRT, or exit 3 (the device module's import, which also tells tensorrt-stubs' empty
    namespace package from TensorRT)."""
    from evitdeploy.backends.tensorrt.device import import_tensorrt as device_import

    try:
        return device_import()
    except ImportError as exc:
        found = "TensorRT (only its type stubs, tensorrt-stubs, are present)" if "stubs" in str(exc) else "TensorRT"
        raise BackendUnavailable(found, BACKEND.install) from exc


def hasattr_builder() -> bool:
    """Whether real TensorRT (not just its stubs) is importable here."""
    from evitdeploy.backends.tensorrt.device import import_tensorrt as device_import

    try:
        device_import()
    except ImportError:
        return False
    return True


def cuda():
    """The device module's CUDA (libcudart through ctypes), or exit 3."""
    from evitdeploy.backends.tensorrt.device import Cuda, load_cudart

    lib = load_cudart()
    if lib is None:
        raise UserError("TensorRT needs a CUDA GPU and no CUDA runtime (libcudart) is found here", "run on the NVIDIA device the engine is for", 3)
    return Cuda(lib)


def gpu_identity() -> dict:
    """The GPU an engine is built for: engines load only on the same model and TensorRT version."""
    try:
        return cuda().identity()
    except RuntimeError as exc:
        raise UserError(f"no usable CUDA GPU here ({exc})", "run on the NVIDIA device the engine is for", 3) from None


def cuda_times_ms(run: Callable[[], object], warmup: int, count: int, stream=None) -> list[float]:
    """PyTorch CUDA (the GPU benchmark's eager baseline): GPU time per call of `run`, from CUDA events recorded around it on `stream` (the current
    stream if None), after `warmup` calls: the figure trtexec reports as "GPU Compute Time"."""
    import torch

    for _ in range(warmup):
        run()
    torch.cuda.synchronize()
    times = []
    for _ in range(count):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record(stream)
        run()
        end.record(stream)
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times
