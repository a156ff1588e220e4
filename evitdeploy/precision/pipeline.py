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

from evitdeploy.precision.calibset import CalibrationSet, build_calibration_set
from evitdeploy.precision.plan import PrecisionPlan, bf16_plan, fp16_plan, int8_plan
from evitdeploy.precision.ranges import Ranges, collect_ranges
from evitdeploy.precision.options import PrecisionOptions
from evitdeploy.precision.evaluate import outputs_of, score_outputs
from evitdeploy.spec import ModelSpec
from evitdeploy.progress import report_step

PLAN_FILE = "precision_plan.json"  # the plan and ranges travel with every reduced-precision artifact
RANGES_FILE = "ranges.json"
HELD_OUT_COUNT = 64  # 16 missed the tail: a plan that met 0.99 on 16 images kept 0.983 over 1078 held-out digits
HELD_OUT_SEED_OFFSET = 1000


@dataclass
class PlanResult:
    plan: PrecisionPlan
    ranges: Ranges
    seconds: dict
    calibration: CalibrationSet  # the images the ranges came from: other backends calibrate on the same


def write_reduced(fp32_path: Path, plan: PrecisionPlan, ranges: Ranges, output: Path, options: PrecisionOptions) -> dict:
    """The FP16 or INT8 ONNX model for `plan` (BF16 has no ONNX Runtime CPU kernels: a backend
    with BF16 applies its plan itself)."""
    if plan.precision == "fp16":
        from evitdeploy.precision.fp16 import convert

        return convert(fp32_path, plan, output, fp16_io=options.fp16_io)
    from evitdeploy.precision.qdq import quantize

    return quantize(fp32_path, plan, ranges, output=output, scheme=options.scheme, weight_bits=options.weight_bits)


def int8_kernels_record(options: PrecisionOptions) -> dict:
    """What an x86 INT8 model was made for and where its plan was judged (the manifest and the plan
    record it; check and verify.py compare it with the CPU they run on)."""
    from evitdeploy.device import cpu

    from evitdeploy.precision.qdq import ASYMMETRIC

    if options.scheme != ASYMMETRIC:  # the symmetric scheme is TensorRT's: its int8 runs on GPU kernels
        return {}
    return {"int8_kernels": options.kernels, "weight_bits": options.weight_bits, "judged_on": cpu.kernel_class()}


def int8_kernels_section(plan: PrecisionPlan) -> dict:
    """The manifest's `int8_kernels` for a backend whose INT8 runs on x86 integer kernels
    (ONNX Runtime, OpenVINO): {} for any other plan."""
    settings = plan.settings
    if plan.precision != "int8" or "int8_kernels" not in settings:
        return {}
    return {"int8_kernels": {"target": settings["int8_kernels"], "weight_bits": settings["weight_bits"], "judged_on": settings["judged_on"]}}


def write_plan(result: PlanResult, folder: Path, **details) -> dict:
    """Write the plan and its ranges beside the model and return the manifest sections every
    backend records for them; `details` are the backend's own (how it applied the plan)."""
    from evitdeploy.files import write_json

    write_json(folder / PLAN_FILE, result.plan.to_dict())
    write_json(folder / RANGES_FILE, result.ranges.to_dict())
    search = {k: v for k, v in result.plan.search.items() if k != "steps"}
    return {
        "calibration": result.calibration.report,
        "precision_plan": {
            "file": PLAN_FILE,
            "ranges_file": RANGES_FILE,
            "method": result.plan.method,
            "summary": result.plan.summary(),
            **({"search": search} if search else {}),
            **details,
            "seconds": result.seconds,
        },
    }


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
    if precision == "int8":
        options.require_int8_kernels_here()
    seconds = {}
    started = time.perf_counter()
    count = options.count_for(spec.height, spec.width)
    report_step(progress, f"building the calibration set ({count} images)")
    calibration = build_calibration_set(spec, options.calib, count, seed=options.seed)
    ranges = collect_ranges(
        fp32_path,
        calibration.inputs,
        spec.input_name,
        calibration=calibration.report,
        with_entropy=options.method == "entropy",
        progress=progress,
    )
    seconds["calibration_s"] = time.perf_counter() - started
    model = onnx.load(str(fp32_path))
    if precision == "fp16":
        plan = fp16_plan(model, ranges, spec, margin=options.fp16_margin, method=options.method)
    elif precision == "bf16":
        plan = bf16_plan(model, ranges, spec, method=options.method)
    else:
        plan = int8_plan(model, spec, options.method)
        plan.calibration = calibration.report
        # naive: the stock quantizer picks its own weight bits, so no kernel class is claimed for it
        plan.settings.update({} if options.naive else int8_kernels_record(options), int8_plan=options.int8_plan)
        if not options.naive:  # naive: the backend's stock quantizer decides; the plan only records the calibration
            started = time.perf_counter()
            plan = _search_int8(fp32_path, spec, plan, ranges=ranges, calibration=calibration, options=options, progress=progress)
            seconds["search_s"] = time.perf_counter() - started
    plan.settings.update({"calib_method": options.method, "calib_count": count})
    return PlanResult(plan, ranges, {k: round(v, 2) for k, v in seconds.items()}, calibration=calibration)


def _search_int8(fp32_path, spec, plan, ranges, calibration: CalibrationSet, options, progress) -> PrecisionPlan:
    from evitdeploy.precision.sensitivity import search

    held_out = build_calibration_set(
        spec,
        options.calib,
        min(HELD_OUT_COUNT, len(calibration.inputs)),
        seed=options.seed + HELD_OUT_SEED_OFFSET,
        held_out_after=len(calibration.inputs),
    ).inputs
    reference = outputs_of(fp32_path, held_out, spec.input_name)
    target = None
    if options.max_drop is not None:  # the task metric on the user's labelled photos decides, not the cosine
        from evitdeploy.precision.task_target import TaskTarget

        report_step(progress, f"scoring the FP32 model on labelled photos of {options.dataset} (the search's target)")
        target = TaskTarget(fp32_path, spec, dataset=options.dataset, limit=options.dataset_limit, max_drop=options.max_drop, seed=options.seed)
    with tempfile.TemporaryDirectory(prefix="evitdeploy-search-") as scratch:
        candidate_path = Path(scratch) / "candidate.onnx"

        def agreement(candidate: PrecisionPlan) -> dict:
            write_reduced(fp32_path, candidate, ranges, output=candidate_path, options=options)
            return score_outputs(spec, reference, outputs_of(candidate_path, held_out, spec.input_name))

        def evaluate(candidate: PrecisionPlan) -> dict:
            scores = agreement(candidate)
            return {**scores, **target.scores(candidate_path)} if target else scores

        plan = search(
            plan, evaluate, options.min_cosine, budget=options.search_budget, rank_all=options.explain, progress=progress, target=target, rank_with=agreement
        )
    plan.settings.update({"min_cosine": options.min_cosine, "search_budget": options.search_budget, "held_out_images": len(held_out)})
    if target:
        plan.settings.update(task_target={"dataset": options.dataset, "photos": len(target.photos), "metric": target.metric, "max_drop_pt": options.max_drop})
    return plan
