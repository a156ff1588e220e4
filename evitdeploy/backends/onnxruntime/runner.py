"""ONNX Runtime: CPU here; the CUDA execution provider when present (device.ONNX_PROVIDERS)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from evitdeploy.backends.onnxruntime import BACKEND
from evitdeploy.backends.onnxruntime.device import onnx_providers, onnx_session
from evitdeploy.backends.runner import Runner, import_runtime
from evitdeploy.errors import UserError, first_line

_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def import_onnxruntime():
    return import_runtime("onnxruntime", "onnxruntime", BACKEND.install)


def worker_affinities(threads: Optional[int]) -> str:
    """ONNX Runtime's intra-op worker pinning, "2;3;..." (1-based logical CPUs; the caller's thread
    is the pool's first and stays unpinned); "" where it cannot apply.

    Two sessions timed in turns each own a thread pool; unpinned, the scheduler can leave one
    pool's worker sharing a core with a neighbour process and the other's not, which measured
    here as a steady 14% difference between two copies of the same model. Pinned, both pools use
    the same cores and see the same neighbours (measured: within 2.3%).
    """
    cpus = os.cpu_count() or 1
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus
    if not threads or threads < 2 or threads > cpus or usable != cpus:
        return ""
    return ";".join(str(cpu) for cpu in range(2, threads + 1))


class OnnxRuntimeRunner(Runner):
    backend = "onnxruntime"

    def __init__(
        self,
        model_path: Path,
        threads: Optional[int] = None,
        providers: Optional[Sequence[str]] = None,
        optimization: str = "all",
        spinning: bool = True,
        pin_threads: bool = False,
    ):
        self.model_path = Path(model_path)
        self.threads = threads
        self.requested_providers = providers
        self.optimization = optimization
        self.spinning = spinning  # off when two sessions take turns: an idle pool's spinning threads steal the cores
        self.pin_threads = pin_threads  # two sessions taking turns: same cores for both (see worker_affinities)
        self.applied_affinities = ""
        self.session = None

    def load(self) -> None:
        ort = import_onnxruntime()
        options = ort.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
        if not self.spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.applied_affinities = worker_affinities(self.threads) if self.pin_threads else ""
        if self.applied_affinities:
            options.add_session_config_entry("session.intra_op_thread_affinities", self.applied_affinities)
        levels = {
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        }
        options.graph_optimization_level = levels[self.optimization]
        available = ort.get_available_providers()
        providers = [p for p in self.requested_providers if p in available] if self.requested_providers else onnx_providers(available)
        if not self.model_path.is_file():
            raise UserError(f"ONNX model not found: {self.model_path}", "pass an artifact folder or a .onnx file")
        try:
            self.session = onnx_session(ort, str(self.model_path), options, providers=providers)
        except Exception as exc:
            first = first_line(exc)
            raise UserError(
                f"ONNX Runtime cannot load {self.model_path}: {first}",
                "the file is empty, truncated or not an ONNX model; re-run `evitdeploy export`",
            ) from exc

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers()) if self.session else []

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Inputs are cast to the types the model declares (an --fp16-io model takes float16)."""
        wanted = {i.name: _NUMPY_TYPES.get(i.type) for i in self.session.get_inputs()}
        feed = {k: v.astype(wanted[k], copy=False) if wanted.get(k) else v for k, v in feed.items()}
        names = [o.name for o in self.session.get_outputs()]
        try:
            return dict(zip(names, self.session.run(names, feed)))
        except Exception as exc:  # onnxruntime's own error types (InvalidArgument, Fail, ...)
            shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in feed.items())
            raise UserError(
                f"ONNX Runtime refused the input ({shapes}) of {self.model_path.name}: {first_line(exc)}",
                "the model file and its manifest disagree; re-run `evitdeploy export`",
            ) from exc

    def check_spec(self, spec) -> None:
        """The model file takes and gives what its manifest's spec says (names, static dims)."""
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        wanted = tuple(spec.input_shape) if spec.layout == "NCHW" else None
        problems = []
        if [i.name for i in inputs] != [spec.input_name]:
            problems.append(f"inputs {[i.name for i in inputs]} (the spec says {spec.input_name!r})")
        elif wanted and len(inputs[0].shape) == 4 and any(isinstance(d, int) and d != w for d, w in zip(inputs[0].shape, wanted)):
            problems.append(f"input shape {list(inputs[0].shape)} (the spec says {list(wanted)})")
        if spec.output_name not in [o.name for o in outputs]:
            problems.append(f"outputs {[o.name for o in outputs]} (the spec says {spec.output_name!r})")
        if problems:
            raise UserError(f"{self.model_path.name} does not match its manifest: it has {'; '.join(problems)}", "re-run `evitdeploy export`")

    def close(self) -> None:
        self.session = None

    def versions(self) -> dict[str, str]:
        return {"onnxruntime": import_onnxruntime().__version__}


def for_artifact(artifact, threads: Optional[int] = None, taking_turns: bool = False) -> OnnxRuntimeRunner:
    # Two sessions taking turns: no thread-pool spinning (an idle pool's spinning threads steal the
    # busy one's cores) and workers pinned to the same cores (both see the same neighbours).
    return OnnxRuntimeRunner(artifact.model_file, threads=threads, spinning=not taking_turns, pin_threads=taking_turns)


def available_providers() -> list[str]:
    """The execution providers this ONNX Runtime build offers (doctor lists them); [] when it does not import."""
    try:
        import onnxruntime
    except Exception:
        return []
    return list(onnxruntime.get_available_providers())
