"""Core ML prediction: macOS only (coremltools' MLModel.predict); elsewhere a clear exit 3."""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np

from evitdeploy.errors import EXIT_BACKEND_UNAVAILABLE, UserError
from evitdeploy.runners.base import Runner, TensorMeta
from evitdeploy.spec import ModelSpec


class CoreMLRunner(Runner):
    backend = "coreml"

    def __init__(self, package: Path, spec: ModelSpec, compute_units: str = "ALL"):
        self.package = Path(package)
        self.spec = spec
        self.compute_units = compute_units  # ALL, CPU_ONLY, CPU_AND_GPU, CPU_AND_NE
        self.model = None

    def load(self) -> None:
        if platform.system() != "Darwin":
            raise UserError(
                "Core ML predicts only on macOS",
                "copy the bundle to a Mac and run `python3 verify.py` (or `evitdeploy check` there); here the export validated the package's spec",
                EXIT_BACKEND_UNAVAILABLE,
            )
        from evitdeploy.exporters.coreml import import_coremltools

        ct = import_coremltools()
        self.model = ct.models.MLModel(str(self.package), compute_units=getattr(ct.ComputeUnit, self.compute_units))

    @property
    def providers(self) -> list[str]:
        return [f"Core ML ({self.compute_units})"] if self.model else []

    def input_metadata(self) -> list[TensorMeta]:
        return [TensorMeta(self.spec.input_name, tuple(self.spec.input_shape), "float32")]

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = np.ascontiguousarray(feed[self.spec.input_name], dtype=np.float32)
        output = self.model.predict({self.spec.input_name: batch})[self.spec.output_name]
        return {self.spec.output_name: np.asarray(output, dtype=np.float32)}

    def close(self) -> None:
        self.model = None

    def versions(self) -> dict[str, str]:
        from importlib import metadata

        return {"coremltools": metadata.version("coremltools"), "macos": platform.mac_ver()[0]}
