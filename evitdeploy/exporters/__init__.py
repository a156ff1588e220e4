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
class PrecisionOptions:
    calib: Optional[str] = None  # image folder, .npz, "samples" (default) or "synthetic"
    calib_count: Optional[int] = None  # None: 64 images, 16 above a megapixel (see count_for)
    method: str = "minmax"  # range method for Q/DQ scales: minmax | percentile | entropy
    fp16_io: bool = False
    fp16_margin: float = 4.0
    min_cosine: float = 0.99  # INT8 search target: per-image cosine to FP32 on held-out images
    search_budget: int = 6  # at most this many blocks moved to FP32 by the search
    explain: bool = False  # rank every block even when the plan already meets the target
    scheme: str = "onnxruntime"
    seed: int = 0

    def count_for(self, height: int, width: int) -> int:
        """Calibration images: the user's count, else 64, or 16 above a megapixel (one image of
        B1-seg at 1024x2048 costs ~3.5 s of range collection here)."""
        if self.calib_count is not None:
            return self.calib_count
        return 16 if height * width > 1 << 20 else 64

    def check(self) -> None:
        from evitdeploy.calibration.ranges import METHODS

        if self.method not in METHODS:
            raise UserError(f"unknown calibration method {self.method!r}", f"choose one of: {', '.join(METHODS)}")
        if not 0.0 < self.min_cosine <= 1.0:
            raise UserError(f"--min-cosine {self.min_cosine} is not valid", "use a value in (0, 1], e.g. 0.99")
        if self.calib not in (None, "samples", "synthetic") and not Path(self.calib).exists():
            raise UserError(
                f"calibration data not found: {self.calib}",
                "pass --calib FOLDER, --calib FILE.npz, --calib samples (bundled photos) or --calib synthetic",
            )
        from evitdeploy import limits

        if self.calib_count is not None and self.calib_count < 1:
            raise UserError(f"--calib-count {self.calib_count} is not valid", "use 1 or more images (64 is a good default)")
        limits.check_range("--calib-count", self.calib_count, 1, limits.CALIB_COUNT_MAX)
        limits.check_range("--search-budget", self.search_budget, 0, limits.SEARCH_BUDGET_MAX)
        if self.fp16_margin < 1.0:
            raise UserError("--fp16-margin must be >= 1", "fix the value")


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
    reduced: PrecisionOptions = field(default_factory=PrecisionOptions)  # calibration and plan for fp16/int8
    channels_last: bool = False  # NHWC model input (TFLite: a phone camera's frame order)
    profile: Optional[object] = None  # the deploy profile (TensorRT: optimization-profile shape range)
    engine: bool = True  # TensorRT: build the engine here; False writes the ONNX + build recipe for the device

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
    "onnx": Target("onnx", "onnx", ("fp32", "fp16", "int8")),
    "tflite": Target("tflite", "tflite", ("fp32", "fp16", "int8"), aliases=("litert",)),
    "coreml": Target("coreml", "coreml", ("fp32", "fp16", "int8")),
    "trt": Target("trt", "tensorrt", ("fp32", "fp16", "int8"), aliases=("tensorrt",)),
}
PLANNED: dict[str, str] = {}  # targets named in the docs but not built in this version


def canonical_target(name: str) -> str:
    """A target's own name from it or an alias ("litert" -> "tflite"); an unknown name unchanged."""
    return next((t.name for t in TARGETS.values() if name in t.aliases), name)


def target_names() -> str:
    """The targets as a hint lists them, aliases in brackets."""
    return ", ".join(t.name + (f" ({', '.join(t.aliases)})" if t.aliases else "") for t in TARGETS.values())


def get_target(name: str, precision: str) -> Target:
    name = canonical_target(name)
    if name not in TARGETS:
        if name in PLANNED:
            raise UserError(
                f"target {name!r} is not available in this version of evitdeploy",
                f"available targets: {', '.join(TARGETS)}",
            )
        raise UserError(f"unknown target {name!r}", f"choose one of: {target_names()}")
    target = TARGETS[name]
    if precision not in target.precisions:
        raise UserError(
            f"precision {precision!r} is not supported for target {name!r}",
            f"choose one of: {', '.join(target.precisions)}",
        )
    return target


def against_reference(model, spec, candidate, batches, precision: str, what: str, hint: str) -> list[dict]:
    """Each batch through the candidate runner and PyTorch running the textbook formulation (the
    reference's own arithmetic): every export re-proves its rewrites. Raises (exit 1) on a miss."""
    from evitdeploy.errors import EXIT_CHECK_FAILED
    from evitdeploy.parity import compare, tolerances_for
    from evitdeploy.runners.torch import TorchRunner

    checks = []
    model.set_formulation("textbook")
    try:
        with TorchRunner(model, spec) as reference:
            for batch in batches:
                feed = {spec.input_name: batch}
                report = compare(spec, reference.infer(feed)[spec.output_name], candidate.infer(feed)[spec.output_name], precision, tolerances_for(precision))
                checks.append({"input_shape": list(batch.shape), **report})
                if not report["passed"]:
                    raise UserError(
                        f"{what} does not match PyTorch at input {tuple(batch.shape)}: {'; '.join(report['failures'])}",
                        f"nothing was written; {hint}",
                        EXIT_CHECK_FAILED,
                    )
    finally:
        model.set_formulation("deploy")
    return checks


def export(model, spec, target_name: str, options: ExportOptions):
    """Export `model` to the target; the artifact exists only if every validation passed."""
    target = get_target(target_name, options.precision)
    module = importlib.import_module(f"evitdeploy.exporters.{target.module}")
    return module.export(model, spec, options)
