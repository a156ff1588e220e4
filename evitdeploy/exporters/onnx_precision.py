"""FP16 and INT8 ONNX from the FP32 export: calibrate, collect ranges, plan, search, write.

Used by `export --precision fp16|int8` (which then validates the result against PyTorch) and by
`evitdeploy plan` (which stops at the plan). The FP32 ONNX model is the reference for the search:
held-out images (another deterministic draw than the calibration set) through both.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from evitdeploy.calibration.calibset import CalibrationSet, build_calibration_set
from evitdeploy.calibration.plan import PrecisionPlan, fp16_plan, int8_plan
from evitdeploy.calibration.ranges import Ranges, collect_ranges
from evitdeploy.exporters import PrecisionOptions
from evitdeploy.parity import classification_metrics, cosine_per_sample, segmentation_metrics
from evitdeploy.spec import ModelSpec

HELD_OUT_COUNT = 16
HELD_OUT_SEED_OFFSET = 1000


@dataclass
class PlanResult:
    plan: PrecisionPlan
    ranges: Ranges
    seconds: dict
    calibration: CalibrationSet  # the images the ranges came from: other backends calibrate on the same


def outputs_of(path: Path, inputs: np.ndarray, input_name: str, optimize: bool = True) -> np.ndarray:
    """The model's first output for each input, one at a time (the artifacts have batch 1).
    `optimize=False` keeps every node as written (the FP16 storage emulation's casts must stay)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {input_name: inputs[i : i + 1]})[0] for i in range(len(inputs))])


def score_outputs(spec: ModelSpec, reference: np.ndarray, candidate: np.ndarray) -> dict:
    """Agreement of a candidate with the FP32 outputs: what the search and `plan` report.
    An image with any NaN/Inf output scores cosine -1, whatever its other values."""
    finite_values = np.isfinite(candidate)
    cleaned = np.where(finite_values, candidate, 0.0)
    finite_images = finite_values.reshape(len(candidate), -1).all(axis=1)
    cosine = np.where(finite_images, cosine_per_sample(reference, cleaned), -1.0)
    scores = {
        "cosine_min": float(cosine.min()),
        "cosine_mean": float(cosine.mean()),
        "max_abs_error": float(np.abs(reference.astype(np.float64) - cleaned).max()),
        "nonfinite": int((~finite_values).sum()),
    }
    metrics = classification_metrics if spec.task == "classification" else segmentation_metrics
    scores.update(metrics(reference, cleaned))
    return scores


def write_reduced(fp32_path: Path, plan: PrecisionPlan, ranges: Ranges, output: Path, options: PrecisionOptions) -> dict:
    """The FP16 or INT8 model for `plan`."""
    if plan.precision == "fp16":
        from evitdeploy.exporters.onnx_fp16 import convert

        return convert(fp32_path, plan, output, options.fp16_io)
    from evitdeploy.exporters.onnx_int8 import quantize

    return quantize(fp32_path, plan, ranges, output, options.scheme)


def make_plan(
    fp32_path: Path,
    spec: ModelSpec,
    precision: str,
    options: PrecisionOptions,
    progress: Optional[Callable[[str], None]] = None,
) -> PlanResult:
    """Calibration set -> ranges -> rules -> (INT8) sensitivity search, timed per step."""
    import onnx

    options.check()
    seconds = {}
    started = time.perf_counter()
    count = options.count_for(spec.height, spec.width)
    _step(progress, f"building the calibration set ({count} images)")
    calibration = build_calibration_set(spec, options.calib, count, options.seed)
    ranges = collect_ranges(
        fp32_path, calibration.inputs, spec.input_name, calibration.report, with_entropy=options.method == "entropy",
        progress=progress,
    )
    seconds["calibration_s"] = time.perf_counter() - started
    model = onnx.load(str(fp32_path))
    if precision == "fp16":
        plan = fp16_plan(model, ranges, spec, options.fp16_margin, options.method)
    else:
        plan = int8_plan(model, spec, options.method)
        plan.calibration = calibration.report
        started = time.perf_counter()
        plan = _search_int8(fp32_path, spec, plan, ranges, calibration, options, progress)
        seconds["search_s"] = time.perf_counter() - started
    plan.settings.update({"calib_method": options.method, "calib_count": count})
    return PlanResult(plan, ranges, {k: round(v, 2) for k, v in seconds.items()}, calibration)


def _search_int8(fp32_path, spec, plan, ranges, calibration: CalibrationSet, options, progress) -> PrecisionPlan:
    from evitdeploy.calibration.sensitivity import search

    held_out = build_calibration_set(
        spec, options.calib, min(HELD_OUT_COUNT, len(calibration.inputs)), options.seed + HELD_OUT_SEED_OFFSET,
        held_out_after=len(calibration.inputs),
    ).inputs
    reference = outputs_of(fp32_path, held_out, spec.input_name)
    with tempfile.TemporaryDirectory(prefix="evitdeploy-search-") as scratch:
        candidate_path = Path(scratch) / "candidate.onnx"

        def evaluate(candidate: PrecisionPlan) -> dict:
            write_reduced(fp32_path, candidate, ranges, candidate_path, options)
            return score_outputs(spec, reference, outputs_of(candidate_path, held_out, spec.input_name))

        plan = search(plan, evaluate, options.min_cosine, options.search_budget, options.explain, progress)
    plan.settings.update({"min_cosine": options.min_cosine, "search_budget": options.search_budget, "held_out_images": len(held_out)})
    return plan


def _step(progress, name: str) -> None:
    if progress:
        progress(name)
