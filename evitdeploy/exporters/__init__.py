"""Exporters: one module per target behind `export(model, spec, options) -> Artifact`.

Adding a target = one exporter module + one runner + a line in TARGETS.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from evitdeploy.errors import UserError


@dataclass(frozen=True)
class ExportOptions:
    output: Path
    precision: str = "fp32"
    opset: Optional[int] = None  # None: the exporter's default for the model
    dynamic_axes: tuple[str, ...] = ()  # any of "batch", "height", "width"
    simplify: bool = True
    validation_inputs: Optional[object] = None  # (N, 3, H, W) float32 array of real, preprocessed photos
    validation_source: str = ""
    source: dict = field(default_factory=dict)  # where the weights came from, for the manifest
    progress: Optional[Callable[[str], None]] = None  # called with a step name as each step starts

    def step(self, name: str) -> None:
        if self.progress:
            self.progress(name)


@dataclass(frozen=True)
class Target:
    name: str
    module: str  # evitdeploy.exporters.<module>, imported only when used
    precisions: tuple[str, ...]
    aliases: tuple[str, ...] = ()


TARGETS = {
    "onnx": Target("onnx", "onnx", ("fp32",)),
}
PLANNED = {"trt": "tensorrt", "tensorrt": "tensorrt", "coreml": "coreml", "tflite": "tflite", "litert": "tflite"}


def get_target(name: str, precision: str) -> Target:
    if name not in TARGETS:
        if name in PLANNED:
            raise UserError(
                f"target {name!r} is not available in this version of evitdeploy",
                f"available targets: {', '.join(TARGETS)}",
            )
        raise UserError(f"unknown target {name!r}", f"choose one of: {', '.join(TARGETS)}")
    target = TARGETS[name]
    if precision not in target.precisions:
        raise UserError(
            f"precision {precision!r} is not supported for target {name!r}",
            f"choose one of: {', '.join(target.precisions)}",
        )
    return target


def export(model, spec, target_name: str, options: ExportOptions):
    """Export `model` to the target; the artifact exists only if every validation passed."""
    target = get_target(target_name, options.precision)
    module = importlib.import_module(f"evitdeploy.exporters.{target.module}")
    return module.export(model, spec, options)
