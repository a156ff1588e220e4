"""PyTorch -> ONNX, the hub every other target builds on.

Opset: 17 by default, the lowest opset with LayerNormalization as a single op (the classifier
head's LN stays one node that ONNX Runtime and TensorRT fuse), accepted by TensorRT >= 8.6
(JetPack 5/6), ONNX Runtime >= 1.14 and the mobile converters. L models default to 20, where
GELU (tanh) is one `Gelu` op instead of eight elementwise nodes: 1.5x faster for L1 on ONNX Runtime
CPU; it needs TensorRT >= 10 / ONNX Runtime >= 1.17, so `--opset 17` remains for older targets.
The TorchScript-based exporter (dynamo=False) is used: it is fast (seconds for B1), folds
BatchNorm into convolutions in eval mode and handles dynamic batch/height/width.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from evitdeploy.artifact import Artifact, build_manifest, package_versions, staged_folder, write_json
from evitdeploy.errors import UserError
from evitdeploy.exporters import ExportOptions
from evitdeploy.spec import ModelSpec

MODEL_FILE = "model.onnx"
PLAN_FILE = "precision_plan.json"
RANGES_FILE = "ranges.json"
MAX_OPSET = 20


def default_opset(spec: ModelSpec) -> int:
    return 20 if spec.family.startswith("l") else 17


def export(model, spec: ModelSpec, options: ExportOptions) -> Artifact:
    timings = {}
    spec = with_dynamic_axes(spec, options.dynamic_axes)
    opset = options.opset or default_opset(spec)
    reduced = options.precision != "fp32"
    with staged_folder(options.output) as staging, tempfile.TemporaryDirectory(prefix="evitdeploy-fp32-") as scratch:
        path = staging / MODEL_FILE
        fp32_path = Path(scratch) / "fp32.onnx" if reduced else path
        timings.update(write_graph(model, spec, fp32_path, opset, options.simplify, options.step))
        precision_sections = {}
        if reduced:
            started = time.perf_counter()
            precision_sections = _reduce(fp32_path, path, staging, spec, options)
            timings["precision_s"] = time.perf_counter() - started
        started = time.perf_counter()
        options.step("validating (checker, shape inference, ONNX Runtime vs PyTorch on real images)")
        validation = validate(model, spec, path, options)
        timings["validate_s"] = time.perf_counter() - started
        manifest = build_manifest(
            staging,
            "onnx",
            options.precision,
            spec,
            MODEL_FILE,
            source=options.source,
            export={
                "opset": opset,
                "dynamic_axes": list(spec.dynamic_axes),
                "simplified": options.simplify,
                "exporter": "torch.onnx.export (TorchScript)",
                "seconds": {k: round(v, 3) for k, v in timings.items()},
            },
            validation=validation,
            **precision_sections,
            toolchain=package_versions("torch", "onnx", "onnxruntime", "onnxslim", "numpy"),
        )
        write_json(staging / "manifest.json", manifest)
    folder = Path(options.output)
    return Artifact(folder, folder / MODEL_FILE, "onnx", options.precision, spec, manifest)


def _reduce(fp32_path: Path, path: Path, staging: Path, spec: ModelSpec, options: ExportOptions) -> dict:
    """Calibrate, plan and write the FP16/INT8 model; the plan and ranges travel with the artifact."""
    from evitdeploy.exporters.onnx_precision import make_plan, write_reduced

    result = make_plan(fp32_path, spec, options.precision, options.reduced, options.progress)
    options.step(f"writing the {options.precision.upper()} model following the plan")
    conversion = write_reduced(fp32_path, result.plan, result.ranges, path, options.reduced)
    storage = None
    if options.precision == "fp16":
        from evitdeploy.exporters.onnx_fp16 import require_finite_storage

        storage = require_finite_storage(fp32_path, result.plan, validation_batch(options, spec), spec)
    write_json(staging / PLAN_FILE, result.plan.to_dict())
    write_json(staging / RANGES_FILE, result.ranges.to_dict())
    return {
        "calibration": result.plan.calibration,
        "precision_plan": {
            "file": PLAN_FILE,
            "ranges_file": RANGES_FILE,
            "method": result.plan.method,
            "summary": result.plan.summary(),
            "search": {k: v for k, v in result.plan.search.items() if k != "steps"},
            **({"fp16_storage_check": storage} if storage else {}),
            "conversion": conversion,
            "seconds": result.seconds,
        },
    }


def write_graph(model, spec: ModelSpec, path: Path, opset: int, simplify: bool, step=None) -> dict:
    """The FP32 ONNX graph (deployment formulation), simplified; returns the seconds each step took."""
    step = step or (lambda name: None)
    timings = {}
    started = time.perf_counter()
    step(f"exporting to ONNX (opset {opset})")
    _torch_export(model, spec, path, opset)
    timings["export_s"] = time.perf_counter() - started
    if simplify:
        started = time.perf_counter()
        step("simplifying with onnxslim")
        _simplify(path)
        timings["simplify_s"] = time.perf_counter() - started
    return timings


def with_dynamic_axes(spec: ModelSpec, axes) -> ModelSpec:
    """The spec with these dynamic axes (exact names; an unknown one is refused, not ignored)."""
    from dataclasses import replace

    from evitdeploy.spec import parse_dynamic_axes

    return replace(spec, dynamic_axes=parse_dynamic_axes(axes))


def _torch_export(model, spec: ModelSpec, path: Path, opset: int) -> None:
    import torch

    dims = {"batch": 0, "height": 2, "width": 3}
    input_axes = {dims[a]: a for a in spec.dynamic_axes}
    output_axes = {0: "batch"} if "batch" in spec.dynamic_axes else {}
    if spec.task == "segmentation":
        output_axes.update({dims[a]: f"{a}_out" for a in spec.dynamic_axes if a != "batch"})
    dummy = torch.zeros(spec.input_shape, dtype=torch.float32)
    model.set_formulation("deploy")
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings and the exporter's deprecation notice
        torch.onnx.export(
            model.eval(),
            (dummy,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=[spec.input_name],
            output_names=[spec.output_name],
            dynamic_axes={spec.input_name: input_axes, spec.output_name: output_axes} if input_axes else None,
            do_constant_folding=True,
        )


def _simplify(path: Path) -> None:
    import onnx
    import onnxslim

    slim = onnxslim.slim(onnx.load(str(path)))
    if slim is None:  # onnxslim returns None when it could not process the model
        raise UserError(f"onnxslim failed on {path.name}", "re-run with --no-simplify")
    onnx.save(slim, str(path))


def validate(model, spec: ModelSpec, path: Path, options: ExportOptions) -> dict:
    """Checker, strict shape inference, a load in ONNX Runtime and outputs against PyTorch running
    the textbook formulation: every export re-proves that the deployment rewrites are exact."""
    import onnx

    from evitdeploy.runners.onnxruntime import OnnxRuntimeRunner

    onnx.checker.check_model(str(path), full_check=True)
    inferred = onnx.shape_inference.infer_shapes(onnx.load(str(path)), strict_mode=True)
    output_dims = [
        d.dim_value or d.dim_param for d in inferred.graph.output[0].type.tensor_type.shape.dim
    ]
    inputs = options.validation_inputs
    if inputs is None:
        raise ValueError("validation_inputs are required")
    shapes = [spec.input_shape]
    if spec.dynamic_axes:  # prove the dynamic dims really are: one more, different shape
        n, c, h, w = spec.input_shape
        shapes.append(
            (
                n + 1 if "batch" in spec.dynamic_axes else n,
                c,
                h + 2 * spec.size_multiple if "height" in spec.dynamic_axes else h,
                w + spec.size_multiple if "width" in spec.dynamic_axes else w,
            )
        )
    from evitdeploy.exporters import against_reference

    hint = (
        "report this model/size, or retry with --no-simplify" if options.precision == "fp32"
        else "calibrate on images like your deployment's (--calib DIR), raise --search-budget, or check with looser tolerances"
    )
    with OnnxRuntimeRunner(path, threads=None) as candidate:
        checks = against_reference(model, spec, candidate, [_inputs_for(inputs, shape) for shape in shapes], options.precision, "exported ONNX", hint)
        providers = candidate.providers
    return {
        "checker": "passed",
        "output_dims": output_dims,
        "onnxruntime_providers": providers,
        "data": options.validation_source,
        "checks": checks,
    }


def validation_batch(options: ExportOptions, spec: ModelSpec) -> np.ndarray:
    """The validation photos, one per batch, at the spec's input size."""
    return _inputs_for(options.validation_inputs, (1, *spec.input_shape[1:]))


def _inputs_for(inputs: np.ndarray, shape: tuple) -> np.ndarray:
    """Real photos cropped/tiled to `shape` (validation needs the exact shape, not the content)."""
    import torch
    import torch.nn.functional as F

    n, _, h, w = shape
    picked = np.concatenate([inputs] * (n // len(inputs) + 1))[:n]
    if picked.shape[2:] != (h, w):
        picked = F.interpolate(torch.from_numpy(picked), size=(h, w), mode="bilinear", align_corners=False).numpy()
    return np.ascontiguousarray(picked, dtype=np.float32)
