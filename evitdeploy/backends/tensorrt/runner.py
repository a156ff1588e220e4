"""A TensorRT engine as a runner: numpy in and out, CUDA buffers held by torch.

The engine must match this host: its manifest's TensorRT version and GPU are compared before
loading, and a mismatch is refused with one line (engines do not move between GPUs or versions).
Latency for bench/gate is the host-side wall time around copy-in + enqueue + synchronize + copy-out,
like every runner's; `gpu_times_ms` gives GPU compute time per run from CUDA events with the
buffers bound once, the figure trtexec reports ("GPU Compute Time"), in its own loop after a warm-up.
Any number of named float32 inputs (a SAM decoder's five, with a dynamic number of points): each
call sets every input's shape from the feed and returns every output by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from evitdeploy.errors import EXIT_BACKEND_UNAVAILABLE, UserError
from evitdeploy.backends.runner import Runner
from evitdeploy.spec import ModelSpec

# Every TensorRT name used here ("Class.member"); tests check them against tensorrt-stubs.
TRT_NAMES = (
    "Logger",
    "Logger.WARNING",
    "Runtime",
    "Runtime.deserialize_cuda_engine",
    "ICudaEngine.create_execution_context",
    "ICudaEngine.num_io_tensors",
    "ICudaEngine.get_tensor_name",
    "ICudaEngine.get_tensor_mode",
    "TensorIOMode",
    "TensorIOMode.INPUT",
    "ICudaEngine.get_tensor_dtype",
    "ICudaEngine.get_tensor_shape",
    "ICudaEngine.get_tensor_profile_shape",
    "DataType",
    "DataType.FLOAT",
    "IExecutionContext.set_input_shape",
    "IExecutionContext.get_tensor_shape",
    "IExecutionContext.set_tensor_address",
    "IExecutionContext.execute_async_v3",
    "__version__",
)


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
        self.engine = self.context = self.stream = None

    def load(self) -> None:
        from evitdeploy.backends.tensorrt.runtime import gpu_identity, import_tensorrt

        trt = import_tensorrt()
        import torch

        check_engine_host(self.manifest, trt.__version__, gpu_identity()["gpu"])
        if not self.engine_path.is_file():
            raise UserError(f"no engine at {self.engine_path}", "build it first: sh build_engine.sh, or `evitdeploy build BUNDLE`", EXIT_BACKEND_UNAVAILABLE)
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self.engine is None:
            raise UserError(f"TensorRT cannot load {self.engine_path}", "rebuild it on this device: sh build_engine.sh")
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        other = [n for n in names if self.engine.get_tensor_dtype(n) != trt.DataType.FLOAT]
        if other:  # every evitdeploy graph takes and gives float32; the buffers below are float32
            raise UserError(f"{self.engine_path.name}: tensor {other[0]!r} is not float32", "build the engine from evitdeploy's ONNX: sh build_engine.sh")

    @property
    def providers(self) -> list[str]:
        return ["TensorRT"] if self.engine else []

    def _bind(self, feed: dict[str, np.ndarray]) -> dict:
        """Device buffers for this feed (every input copied in on the engine's stream, its shape
        set), then the outputs' buffers at the shapes those give; every address set."""
        import torch

        missing = [name for name in self.inputs if name not in feed]
        if missing:
            raise UserError(f"{self.engine_path.name} takes {', '.join(self.inputs)}; the feed has no {missing[0]!r}", "feed every input by name")
        buffers = {}
        with torch.cuda.stream(self.stream):
            for name in self.inputs:
                buffers[name] = torch.from_numpy(np.ascontiguousarray(feed[name], dtype=np.float32)).cuda(non_blocking=False)
                shape = tuple(buffers[name].shape)
                if not self.context.set_input_shape(name, shape):
                    low, _, high = (tuple(d) for d in self.engine.get_tensor_profile_shape(name, 0))
                    raise UserError(
                        f"{self.engine_path.name} takes {name} from {low} to {high}, not {shape}",
                        "stay inside the engine's optimization profile (build_engine.sh), or rebuild it with a wider one",
                    )
                self.context.set_tensor_address(name, buffers[name].data_ptr())
            for name in self.outputs:
                buffers[name] = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=torch.float32, device="cuda")
                self.context.set_tensor_address(name, buffers[name].data_ptr())
        return buffers

    def _execute(self) -> None:
        self.context.execute_async_v3(self.stream.cuda_stream)

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every output by its name (the ONNX graph's: the spec's output_name, or a decoder's two)."""
        buffers = self._bind(feed)
        self._execute()
        self.stream.synchronize()
        return {name: buffers[name].cpu().numpy() for name in self.outputs}

    def gpu_times_ms(self, batch, warmup: int = 20, count: int = 100) -> list[float]:
        """GPU compute time per run: CUDA events around each enqueue on the engine's stream, the
        buffers bound once (trtexec's "GPU Compute Time"; host<->device copies excluded). `batch`:
        the one input's array, or a feed of every named input (a SAM decoder's)."""
        from evitdeploy.backends.tensorrt.runtime import cuda_times_ms

        buffers = self._bind(batch if isinstance(batch, dict) else {self.inputs[0]: batch})
        times = cuda_times_ms(self._execute, warmup, count, stream=self.stream)
        del buffers
        return times

    def close(self) -> None:
        self.engine = self.context = self.stream = None

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
