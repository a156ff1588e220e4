"""Core ML prediction: macOS only (coremltools' MLModel.predict); elsewhere a clear exit 3.

A promptable model's decoder package takes its inputs by name and a fixed number of points: a
prompt is padded to it here (backends.promptable.fixed_points_feed)."""

from __future__ import annotations

import contextlib
import platform
import warnings
from pathlib import Path
from typing import Optional

import numpy as np

from evitdeploy.backends.coreml import BACKEND
from evitdeploy.backends.runner import Runner, import_runtime
from evitdeploy.errors import EXIT_BACKEND_UNAVAILABLE, UserError
from evitdeploy.spec import ModelSpec


def import_coremltools():
    with warnings.catch_warnings(), contextlib.redirect_stderr(_Sink()):
        warnings.simplefilter("ignore")
        return import_runtime("coremltools", "coremltools (Core ML packages)", BACKEND.install)


class _Sink:
    """coremltools prints its version warnings (torch, scikit-learn) on import; the manifest records versions."""

    def write(self, _text: str) -> int:
        return 0

    def flush(self) -> None:
        pass


class CoreMLRunner(Runner):
    backend = "coreml"

    def __init__(self, package: Path, spec: ModelSpec, compute_units: str = "ALL"):
        self.package = Path(package)
        self.spec = spec
        self.compute_units = compute_units  # ALL, CPU_ONLY, CPU_AND_GPU, CPU_AND_NE
        self.model = None
        self.decoder_points = None  # a fixed-points prompt decoder's point count; None for an image model

    def load(self) -> None:
        if platform.system() != "Darwin":
            raise UserError(
                "Core ML predicts only on macOS",
                "copy the bundle to a Mac and run `python3 verify.py` (or `evitdeploy check` there); here the export validated the package's spec",
                EXIT_BACKEND_UNAVAILABLE,
            )
        ct = import_coremltools()
        self.model = ct.models.MLModel(str(self.package), compute_units=getattr(ct.ComputeUnit, self.compute_units))
        self.decoder_points = decoder_points(self.model.get_spec())

    @property
    def providers(self) -> list[str]:
        return [f"Core ML ({self.compute_units})"] if self.model else []

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.decoder_points:
            from evitdeploy.backends.promptable import fixed_points_feed
            from evitdeploy.device.prompts import DECODER_OUTPUTS

            fixed = fixed_points_feed(feed, self.decoder_points)
            outputs = self.model.predict({name: np.ascontiguousarray(value, dtype=np.float32) for name, value in fixed.items()})
            return {name: np.asarray(outputs[name], dtype=np.float32) for name in DECODER_OUTPUTS}
        batch = np.ascontiguousarray(feed[self.spec.input_name], dtype=np.float32)
        output = self.model.predict({self.spec.input_name: batch})[self.spec.output_name]
        return {self.spec.output_name: np.asarray(output, dtype=np.float32)}

    def close(self) -> None:
        self.model = None

    def versions(self) -> dict[str, str]:
        from importlib import metadata

        return {"coremltools": metadata.version("coremltools"), "macos": platform.mac_ver()[0]}


def decoder_points(model_spec) -> Optional[int]:
    """The number of prompt points a decoder package is built for (its point_coords (1, N, 2));
    None for a package that is no prompt decoder."""
    shapes = {i.name: list(i.type.multiArrayType.shape) for i in model_spec.description.input}
    return int(shapes["point_coords"][1]) if "point_coords" in shapes else None


def for_artifact(artifact, threads=None, taking_turns: bool = False) -> CoreMLRunner:
    """Core ML picks its own compute units and threads."""
    return CoreMLRunner(artifact.model_file, artifact.spec)


def cannot_predict_here(artifact) -> Optional[str]:
    if platform.system() != "Darwin":
        return "Core ML predicts only on macOS: parity and latency are measured by verify.py on a Mac or the device"
    return None
