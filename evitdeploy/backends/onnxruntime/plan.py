"""How the shared precision plan maps onto ONNX Runtime: it is the hub's own form of the plan.

INT8 is the QDQ ONNX the plan's search measured (precision.qdq, the onnxruntime scheme: Q/DQ on the
plan's INT8 nodes, HardSwish as integer ops); FP16 is the FP32 graph converted with the plan's FP32
nodes blocked (precision.fp16), refused when its FP16 storage would overflow on the validation
photos. Both writers live in precision/ because the plan's search runs candidates through them.
"""

from __future__ import annotations

from pathlib import Path

from evitdeploy.backends.options import ExportOptions
from evitdeploy.backends.reference import validation_batch
from evitdeploy.spec import ModelSpec


def apply_plan(fp32_path: Path, path: Path, staging: Path, spec: ModelSpec, options: ExportOptions) -> dict:
    """Calibrate, plan and write the FP16/INT8 ONNX to `path`; the plan and ranges travel with the
    artifact (their manifest sections are returned)."""
    from evitdeploy.precision.pipeline import int8_kernels_section, make_plan, write_plan, write_reduced

    result = make_plan(fp32_path, spec, options.precision, options=options.reduced, progress=options.progress)
    if options.precision == "int8" and options.reduced.naive:
        from evitdeploy.precision.qdq import NAIVE_QUANTIZER, naive_quantize

        options.step("quantizing naively (the stock quantizer's defaults, no plan): a baseline")
        naive_quantize(fp32_path, path, result.calibration.inputs, input_name=spec.input_name)
        return write_plan(result, staging, naive=NAIVE_QUANTIZER)
    options.step(f"writing the {options.precision.upper()} model following the plan")
    conversion = write_reduced(fp32_path, result.plan, result.ranges, output=path, options=options.reduced)
    storage = None
    if options.precision == "fp16":
        from evitdeploy.precision.fp16 import require_finite_storage

        storage = require_finite_storage(fp32_path, result.plan, validation_batch(options, spec), spec=spec)
    sections = write_plan(result, staging, **({"fp16_storage_check": storage} if storage else {}), conversion=conversion)
    return {**sections, **int8_kernels_section(result.plan)}
