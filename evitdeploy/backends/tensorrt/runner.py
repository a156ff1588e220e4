"""A TensorRT engine as a runner: numpy in and out, through the device module's Engine (CUDA
memory and streams from libcudart by ctypes, as on a Jetson; no PyTorch).

The engine must match this host: its manifest's TensorRT version and GPU are compared before
loading, and a mismatch is refused with one line (engines do not move between GPUs or versions).
Latency for bench/gate is the host-side wall time around copy-in + enqueue + synchronize + copy-out,
like every runner's; `gpu_times_ms` gives GPU compute time per run from CUDA events with the
buffers bound once, the figure trtexec reports ("GPU Compute Time"), in its own loop after a warm-up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from evitdeploy.errors import EXIT_BACKEND_UNAVAILABLE, UserError
from evitdeploy.backends.runner import Runner
from evitdeploy.spec import ModelSpec


def check_engine_host(manifest: dict, trt_version: str, gpu: str) -> None:
    """Refuse an engine built for another TensorRT version or GPU model (it would not load, or
    would load and run slower than it was measured)."""
    built_with = manifest.get("toolchain", {}).get("tensorrt")
    built_on = manifest.get("export", {}).get("gpu")
    if built_with and built_with != trt_version:
        raise UserError(
            f"this engine was built with TensorRT {built_with}; this host has {trt_version}",
            "rebuild it here: sh build_engine.sh, or `evitdeploy build BUNDLE`",
        )
    if built_on and built_on != gpu:
        raise UserError(f"this engine was built on {built_on}; this host has {gpu}", "rebuild it here: sh build_engine.sh, or `evitdeploy build BUNDLE`")


class TensorRTRunner(Runner):
    backend = "tensorrt"

    def __init__(self, engine_path: Path, spec: ModelSpec, manifest: Optional[dict] = None):
        self.engine_path = Path(engine_path)
        self.spec = spec
        self.manifest = manifest or {}
        self.loaded = None

    def load(self) -> None:
        from evitdeploy.backends.tensorrt import device
        from evitdeploy.backends.tensorrt.runtime import cuda, import_tensorrt

        trt = import_tensorrt()
        gpu = cuda()
        check_engine_host(self.manifest, trt.__version__, gpu.identity()["gpu"])
        if not self.engine_path.is_file():
            raise UserError(f"no engine at {self.engine_path}", "build it first: sh build_engine.sh, or `evitdeploy build BUNDLE`", EXIT_BACKEND_UNAVAILABLE)
        try:
            self.loaded = device.Engine(trt, gpu, self.engine_path.read_bytes(), name=self.engine_path.name)
        except device.BuildError as exc:
            raise UserError(exc.message, "rebuild it on this device: sh build_engine.sh") from None

    @property
    def providers(self) -> list[str]:
        return ["TensorRT"] if self.loaded else []

    @property
    def inputs(self) -> list[str]:
        return self.loaded.inputs

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every output by its name (the ONNX graph's: the spec's output_name, or a decoder's two)."""
        try:
            return self.loaded.infer(feed)
        except ValueError as exc:
            raise UserError(str(exc), "feed every input by name, inside the engine's optimization profile (build_engine.sh)") from None

    def gpu_times_ms(self, batch, warmup: int = 20, count: int = 100) -> list[float]:
        """GPU compute time per run (trtexec's "GPU Compute Time"; copies excluded). `batch`: the
        one input's array, or a feed of every named input (a SAM decoder's)."""
        return self.loaded.gpu_times_ms(batch if isinstance(batch, dict) else {self.loaded.inputs[0]: batch}, warmup, count)

    def close(self) -> None:
        if self.loaded is not None:
            self.loaded.close()
        self.loaded = None

    def versions(self) -> dict[str, str]:
        from evitdeploy.backends.tensorrt.runtime import import_tensorrt

        return {"tensorrt": import_tensorrt().__version__}


def for_artifact(artifact, threads=None, taking_turns: bool = False):
    """The engine on the GPU; a recipe artifact (engine built on the device) is its ONNX, run by ONNX Runtime."""
    if artifact.model_file.suffix == ".onnx":
        from evitdeploy.backends.onnxruntime.runner import OnnxRuntimeRunner

        return OnnxRuntimeRunner(artifact.model_file, threads=threads)
    return TensorRTRunner(artifact.model_file, artifact.spec, artifact.manifest)


def cannot_time_here(artifact) -> Optional[str]:
    if artifact.model_file.suffix == ".onnx":
        return "TensorRT engines are built and timed on the device (`evitdeploy build BUNDLE` there); parity here is the ONNX on ONNX Runtime"
    return None
