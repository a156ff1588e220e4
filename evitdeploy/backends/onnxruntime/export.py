"""ONNX Runtime's artifact: the hub graph (evitdeploy.graph), reduced by the shared precision plan
where asked, validated by ONNX Runtime against PyTorch on real photos."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from evitdeploy.artifact import Artifact, build_manifest, package_versions
from evitdeploy.files import staged_folder, write_json
from evitdeploy.backends.options import ExportOptions
from evitdeploy.backends.onnxruntime.plan import apply_plan
from evitdeploy.backends.reference import against_reference, inputs_for
from evitdeploy.graph import default_opset, with_dynamic_axes, write_decoder_graph, write_graph
from evitdeploy.spec import ModelSpec

MODEL_FILE = "model.onnx"
PROMPTABLE_FILES = {"encoder": "encoder.onnx", "decoder": "decoder.onnx"}  # a SAM artifact's two models
# Distributions whose installed versions the manifest's toolchain records.
TOOLCHAIN = ("torch", "onnx", "onnxruntime", "onnxslim", "numpy")


def export(model, spec: ModelSpec, options: ExportOptions) -> Artifact:
    timings = {}
    spec = with_dynamic_axes(spec, options.dynamic_axes)
    opset = options.opset or default_opset(spec)
    reduced = options.precision != "fp32"
    model_file = PROMPTABLE_FILES["encoder"] if spec.promptable else MODEL_FILE
    with staged_folder(options.output) as staging, tempfile.TemporaryDirectory(prefix="evitdeploy-fp32-") as scratch:
        path = staging / model_file
        fp32_path = Path(scratch) / "fp32.onnx" if reduced else path
        timings.update(write_graph(model, spec, fp32_path, opset=opset, simplify=options.simplify, step=options.step))
        precision_sections = {}
        if reduced:
            started = time.perf_counter()
            precision_sections = apply_plan(fp32_path, path, staging, spec=spec, options=options)
            timings["precision_s"] = time.perf_counter() - started
        if spec.promptable:  # the prompt decoder stays FP32: 4M parameters, milliseconds per prompt
            options.step("exporting the prompt decoder (dynamic number of points)")
            timings.update(
                write_decoder_graph(model.decoder(spec.decoder_masks), spec, staging / PROMPTABLE_FILES["decoder"], opset=opset, simplify=options.simplify)
            )
            precision_sections["models"] = dict(PROMPTABLE_FILES)
        started = time.perf_counter()
        options.step("validating (checker, shape inference, ONNX Runtime vs PyTorch on real images)")
        validation = (validate_promptable if spec.promptable else validate)(model, spec, path, options=options)
        timings["validate_s"] = time.perf_counter() - started
        manifest = build_manifest(
            staging,
            "onnx",
            options.precision,
            spec=spec,
            model_file=model_file,
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
            toolchain=package_versions(*TOOLCHAIN),
        )
        write_json(staging / "manifest.json", manifest)
    folder = Path(options.output)
    return Artifact(folder, folder / model_file, "onnx", precision=options.precision, spec=spec, manifest=manifest)


def validate(model, spec: ModelSpec, path: Path, options: ExportOptions) -> dict:
    """Checker, strict shape inference, a load in ONNX Runtime and outputs against PyTorch running
    the textbook formulation: every export re-proves that the deployment rewrites are exact."""
    import onnx

    from evitdeploy.backends.onnxruntime.runner import OnnxRuntimeRunner

    onnx.checker.check_model(str(path), full_check=True)
    inferred = onnx.shape_inference.infer_shapes(onnx.load(str(path)), strict_mode=True)
    output_dims = [d.dim_value or d.dim_param for d in inferred.graph.output[0].type.tensor_type.shape.dim]
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

    hint = (
        "report this model/size, or retry with --no-simplify"
        if options.precision == "fp32"
        else "calibrate on images like your deployment's (--calib DIR), raise --search-budget, or check with looser tolerances"
    )
    with OnnxRuntimeRunner(path, threads=None) as candidate:
        checks = against_reference(
            model,
            spec,
            candidate,
            batches=[inputs_for(inputs, shape) for shape in shapes],
            precision=options.precision,
            what="exported ONNX",
            hint=hint,
            enforce=options.enforces_parity,
        )
        providers = candidate.providers
    return {
        "checker": "passed",
        "output_dims": output_dims,
        "onnxruntime_providers": providers,
        "data": options.validation_source,
        "checks": checks,
    }


def validate_promptable(model, spec: ModelSpec, path: Path, options: ExportOptions) -> dict:
    """Both models through the checker, then encoder + decoder in ONNX Runtime against PyTorch on
    the parity prompts (mask IoU, IoU-prediction error, low-res logit cosine)."""
    import onnx

    from evitdeploy.backends.onnxruntime.runner import OnnxRuntimeRunner
    from evitdeploy.backends.promptable import validate_export_pair

    decoder_path = path.parent / PROMPTABLE_FILES["decoder"]
    for file in (path, decoder_path):
        onnx.checker.check_model(str(file), full_check=True)
    hint = "report this model, or retry with --no-simplify" if options.precision == "fp32" else "calibrate on images like your deployment's (--calib DIR)"
    with OnnxRuntimeRunner(path) as encoder, OnnxRuntimeRunner(decoder_path) as decoder:
        check = validate_export_pair(model, spec, (encoder, decoder), options=options, what="exported ONNX", hint=hint)
        providers = encoder.providers
    return {"checker": "passed", "onnxruntime_providers": providers, "data": options.validation_source, "checks": [check]}
