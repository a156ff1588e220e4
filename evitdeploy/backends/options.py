"""What an export needs beyond the model and its spec: one record every backend's export takes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from evitdeploy.precision.options import PrecisionOptions


@dataclass(frozen=True)
class ExportOptions:
    output: Path
    precision: str = "fp32"
    opset: Optional[int] = None  # None: the exporter's default for the model
    dynamic_axes: tuple[str, ...] = ()  # any of "batch", "height", "width"
    simplify: bool = True
    validation_inputs: Optional[object] = None  # (N, 3, H, W) float32 array of real, preprocessed photos
    validation_source: str = ""
    validation_sizes: tuple = ()  # each validation photo's original (height, width): SAM's prompts are placed in it
    source: dict = field(default_factory=dict)  # where the weights came from, for the manifest
    progress: Optional[Callable[[str], None]] = None  # called with a step name as each step starts
    reduced: PrecisionOptions = field(default_factory=PrecisionOptions)  # calibration and plan for fp16/int8
    profile: Optional[object] = None  # the deploy profile (TensorRT: optimization-profile shape range)
    backend_options: Mapping[str, Any] = field(default_factory=dict)  # every option the backend declares, checked (backends.check_options)

    @property
    def enforces_parity(self) -> bool:
        """Validation refuses a miss (nothing written), except for a naive INT8 baseline: recorded."""
        return not (self.precision == "int8" and self.reduced.naive)

    def step(self, name: str) -> None:
        if self.progress:
            self.progress(name)
