"""PyTorch -> Core ML mlprogram (.mlpackage) for iPhone/iPad/Mac: FP32, FP16, INT8 weights.

- Conversion: coremltools from `torch.export` (the deployment formulation); minimum deployment
  target iOS 17 / macOS 14 (mlprogram with per-op FP16/FP32 and int8 weight compression ops).
- Inputs are TensorType, not ImageType: the parity references and every other target take the
  ModelSpec's normalized NCHW float32 tensor, and an ImageType would hide the normalization in the
  package where a check cannot see it. An app feeds a normalized MLMultiArray (README.txt says how).
  Input and output names come from the ModelSpec; both stay float32 at the boundary.
- FP16 follows the shared precision plan: coremltools' FP16ComputePrecision op selector keeps every
  op of a module the plan keeps FP32 (the LiteMLA core; overflowing ranges) in FP32. torch.export
  records each node's module, and the converter names MIL ops after the nodes.
- INT8 = int8 weights (linear symmetric, per channel; W8A16) on every convolution and linear layer
  the plan does not keep FP32, computing in FP16 with the plan's FP32 islands (the FP16 plan's
  ranges decide those: the compute is FP16, not integer). Activation quantization
  (coremltools.optimize's linear_quantize_activations) calibrates by running the model, which
  needs macOS: it is not done on Linux and the manifest says so.
- Validation here (Linux): the package loads as a spec; input/output names, shapes and types;
  op counts by type and precision; every op the plan keeps FP32 is FP32 in the saved program.
  On macOS the package also predicts and is compared with PyTorch.
- A promptable (SAM) model is two packages: `encoder.mlpackage` (the precision asked) and
  `decoder.mlpackage`, FP32 and static, so built for DECODER_POINTS points; the runner pads a
  prompt to that count and the decoder masks the padding out of its attention, so its masks are
  the unpadded decoder's (models.prompt.PromptDecoder says why it must).
"""

from __future__ import annotations

import contextlib
import platform
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Optional

from evitdeploy.artifact import Artifact, build_manifest, package_versions
from evitdeploy.files import staged_folder, write_json
from evitdeploy.errors import EXIT_CHECK_FAILED, UserError, first_line
from evitdeploy.backends.coreml.plan import WEIGHTED_OPS, make_fp16_plan, module_of, quantize_weights
from evitdeploy.backends.coreml.runner import import_coremltools
from evitdeploy.backends.options import ExportOptions
from evitdeploy.spec import ModelSpec

MODEL_DIR = "model.mlpackage"
PROMPTABLE_DIRS = {"encoder": "encoder.mlpackage", "decoder": "decoder.mlpackage"}  # a SAM artifact's two packages
DECODER_POINTS = 8  # prompt points the decoder is built for: 7 clicks, or a box and 6 (recorded as export.decoder_points)
DEPLOYMENT_TARGET = "iOS17"


def exported_program(model, spec: ModelSpec):
    """torch.export of the deployment formulation, and each graph node's PyTorch module path."""
    import torch

    model.set_formulation("deploy")
    with torch.no_grad():
        program = torch.export.export(model.eval(), (torch.zeros(spec.input_shape, dtype=torch.float32),)).run_decompositions({})
    modules = {}
    for node in program.graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if stack:
            modules[node.name] = list(stack.values())[-1][0]
    return program, modules


def convert(model, spec: ModelSpec, precision: str, plan=None):
    """The mlprogram, and the names of the ops the plan keeps FP32 (FP16/INT8)."""
    ct = import_coremltools()

    from evitdeploy.precision.plan import FloatScopes

    program, modules = exported_program(model, spec)
    kept_fp32: dict[str, str] = {}
    if precision == "fp32":
        compute = ct.precision.FLOAT32
    else:
        scopes = FloatScopes(plan) if plan is not None else None

        def fp16(op) -> bool:
            module = module_of(op, modules)
            if scopes is not None and scopes.keeps(module, op.op_type in WEIGHTED_OPS):
                kept_fp32[op.outputs[0].name if op.outputs else op.name] = module  # the name the saved program shows
                return False
            return True

        compute = ct.transform.FP16ComputePrecision(op_selector=fp16)
    mlmodel = to_mlprogram(program, io=({spec.input_name: spec.input_shape}, (spec.output_name,)), compute=compute, what=spec.name)
    if plan is not None:
        missing = FloatScopes(plan).unmatched(kept_fp32.values())
        if missing:
            raise UserError(
                f"the precision plan keeps {missing[0]} in FP32 but no Core ML op carries that module",
                "nothing was written; torch.export's module metadata changed: report it with `evitdeploy doctor` output",
                EXIT_CHECK_FAILED,
            )
    return mlmodel, sorted(kept_fp32)


def decoder_io(spec: ModelSpec, points: int) -> tuple[dict, tuple]:
    """A promptable model's decoder package: its inputs' names and shapes, its outputs' names."""
    from evitdeploy.device.prompts import DECODER_OUTPUTS, decoder_input_shapes

    return decoder_input_shapes(spec.embedding, points, point_count=True), DECODER_OUTPUTS


def convert_decoder(decoder, spec: ModelSpec):
    """A fixed-points prompt decoder (models.prompt.PromptDecoder) as an FP32 mlprogram."""
    ct = import_coremltools()
    import torch

    inputs, outputs = decoder_io(spec, decoder.fixed_points)
    sample = {name: torch.zeros(shape) for name, shape in inputs.items()}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.export.export(decoder.eval(), (), kwargs=sample).run_decompositions({})
    return to_mlprogram(program, io=(inputs, outputs), compute=ct.precision.FLOAT32, what=f"{spec.name}'s prompt decoder")


def to_mlprogram(program, *, io: tuple, compute, what: str):
    """coremltools' conversion of an exported program with named float32 inputs ({name: shape})
    and outputs (names); any converter failure is one line."""
    ct = import_coremltools()
    import numpy as np

    inputs, outputs = io
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
            warnings.simplefilter("ignore")
            return ct.convert(
                program,
                inputs=[ct.TensorType(name=name, shape=shape, dtype=np.float32) for name, shape in inputs.items()],
                outputs=[ct.TensorType(name=name, dtype=np.float32) for name in outputs],
                convert_to="mlprogram",
                compute_precision=compute,
                minimum_deployment_target=getattr(ct.target, DEPLOYMENT_TARGET),
            )
    except Exception as exc:  # coremltools raises many types; each means "this model does not convert"
        raise UserError(
            f"coremltools cannot convert {what}: {type(exc).__name__}: {first_line(exc, 240)}",
            "an op without a Core ML lowering; --target onnx or tflite take this model",
        ) from exc


def program_ops(package: Path) -> list[tuple[str, str, int]]:
    """(type, first output name, output data type) of every op in the saved package's main function."""
    ct = import_coremltools()
    spec = ct.models.MLModel(str(package), skip_model_load=True).get_spec()
    function = spec.mlProgram.functions["main"]
    block = function.block_specializations[function.opset]
    ops = []
    for op in block.operations:
        output = op.outputs[0] if op.outputs else None
        dtype = output.type.tensorType.dataType if output is not None and output.type.WhichOneof("type") == "tensorType" else 0
        ops.append((op.type, output.name if output is not None else "", dtype))
    return ops


def check_package(package: Path, spec: ModelSpec, precision: str, kept_fp32: list[str], io: Optional[tuple] = None) -> dict:
    """What the package must be, read back from disk: names, shapes, types, op precisions, the plan.
    `io`: ({input name: shape}, (output names)) where they are not the spec's (a SAM decoder)."""
    ct = import_coremltools()
    from coremltools.proto import FeatureTypes_pb2, MIL_pb2

    float32 = MIL_pb2.DataType.Value("FLOAT32")
    try:
        model_spec = ct.models.MLModel(str(package), skip_model_load=True).get_spec()
    except Exception as exc:
        raise UserError(f"{package} does not load as a Core ML spec: {first_line(exc)}", "re-run the export", EXIT_CHECK_FAILED) from exc
    failures = []
    expected_inputs, expected_outputs = io or ({spec.input_name: spec.input_shape}, (spec.output_name,))
    inputs = {i.name: i.type.multiArrayType for i in model_spec.description.input}
    outputs = {o.name: o.type.multiArrayType for o in model_spec.description.output}
    if list(inputs) != list(expected_inputs) or list(outputs) != list(expected_outputs):
        failures.append(f"inputs {list(inputs)} / outputs {list(outputs)}, expected {list(expected_inputs)} / {list(expected_outputs)}")
    else:
        failures += [
            f"input {name} has shape {list(inputs[name].shape)}, expected {list(shape)}"
            for name, shape in expected_inputs.items()
            if list(inputs[name].shape) != list(shape)
        ]
    for name, array in {**inputs, **outputs}.items():
        if array.dataType != FeatureTypes_pb2.ArrayFeatureType.FLOAT32:
            failures.append(f"{name} is not float32 at the boundary")
    ops = program_ops(package)
    compute = [(t, n, d) for t, n, d in ops if t not in ("const", "constexpr_affine_dequantize", "constexpr_blockwise_shift_scale", "cast")]
    counts = Counter(MIL_pb2.DataType.Name(d) for _, _, d in compute)
    if precision in ("fp16", "int8") and not counts.get("FLOAT16"):
        failures.append(f"asked for {precision} but no op computes in FP16")
    if precision == "fp32" and counts.get("FLOAT16"):
        failures.append(f"asked for fp32 but {counts['FLOAT16']} ops compute in FP16")
    written = {n: d for _, n, d in ops}
    # An op cast to FP16 is saved as NAME_cast_fp16; one in neither form was folded away (a transpose into its matmul).
    present = [name for name in kept_fp32 if name in written or f"{name}_cast_fp16" in written]
    not_fp32 = [name for name in present if written.get(name) != float32]
    if not_fp32:
        failures.append(f"{len(not_fp32)} ops the plan keeps FP32 are not FP32 in the package (first: {not_fp32[0]})")
    compressed = sum(1 for t, _, _ in ops if t.startswith("constexpr_"))
    if precision == "int8" and not compressed:
        failures.append("asked for int8 weights but the package holds no compressed (constexpr) weights")
    return {
        "passed": not failures,
        "failures": failures,
        "ops_by_type": dict(Counter(t for t, _, _ in compute)),
        "ops_by_precision": dict(counts),
        "plan_fp32_ops": len(present),
        "plan_fp32_ops_folded_away": len(kept_fp32) - len(present),
        "compressed_weight_ops": compressed,
    }


def export(model, spec: ModelSpec, options: ExportOptions) -> Artifact:
    import_coremltools()
    if options.dynamic_axes:
        raise UserError("the Core ML target exports static shapes", "drop --dynamic; export one package per input size")
    timings, sections, plan = {}, {}, None
    model_dir = PROMPTABLE_DIRS["encoder"] if spec.promptable else MODEL_DIR
    with staged_folder(options.output) as staging, tempfile.TemporaryDirectory(prefix="evitdeploy-coreml-") as scratch:
        if options.precision != "fp32":
            started = time.perf_counter()
            plan, sections = make_fp16_plan(model, spec, staging, scratch=Path(scratch), options=options)
            timings["precision_s"] = time.perf_counter() - started
        started = time.perf_counter()
        options.step(f"converting with coremltools (mlprogram, {DEPLOYMENT_TARGET}, {'FP32' if options.precision == 'fp32' else 'FP16'} compute)")
        mlmodel, kept_fp32 = convert(model, spec, options.precision, plan=plan)
        if options.precision == "int8":
            options.step("int8 weights (linear symmetric, per channel) on the plan's INT8 layers")
            mlmodel = quantize_weights(mlmodel, kept_fp32)
        with contextlib.redirect_stdout(sys.stderr):
            mlmodel.save(str(staging / model_dir))
        timings["convert_s"] = time.perf_counter() - started
        promptable = {}
        if spec.promptable:  # the prompt decoder stays FP32: 4M parameters, milliseconds per prompt
            from evitdeploy.backends.promptable import POINTS_MEANING

            started = time.perf_counter()
            options.step(f"converting the prompt decoder ({DECODER_POINTS} points, FP32)")
            decoder = convert_decoder(model.decoder(spec.decoder_masks, fixed_points=DECODER_POINTS), spec)
            with contextlib.redirect_stdout(sys.stderr):
                decoder.save(str(staging / PROMPTABLE_DIRS["decoder"]))
            timings["decoder_convert_s"] = time.perf_counter() - started
            sections["models"] = dict(PROMPTABLE_DIRS)
            promptable = {"decoder_points": DECODER_POINTS, "decoder_points_meaning": POINTS_MEANING}
        options.step("validating the package (spec, I/O, op precisions, the plan)")
        checked = check_package(staging / model_dir, spec, options.precision, kept_fp32=kept_fp32)
        if spec.promptable:
            decoder_checked = check_package(staging / PROMPTABLE_DIRS["decoder"], spec, "fp32", kept_fp32=[], io=decoder_io(spec, DECODER_POINTS))
            checked = {
                "encoder": checked,
                "decoder": decoder_checked,
                "passed": checked["passed"] and decoder_checked["passed"],
                "failures": [f"encoder: {f}" for f in checked["failures"]] + [f"decoder: {f}" for f in decoder_checked["failures"]],
            }
        if not checked["passed"]:
            raise UserError(f"the Core ML package is not what was asked: {'; '.join(checked['failures'])}", "nothing was written; report it", EXIT_CHECK_FAILED)
        validation = {"package": checked, "data": options.validation_source, "checks": _predict_checks(model, spec, staging, options=options)}
        manifest = build_manifest(
            staging,
            "coreml",
            options.precision,
            spec=spec,
            model_file=model_dir,
            source=options.source,
            export={
                "exporter": "coremltools (torch.export -> mlprogram)",
                "minimum_deployment_target": DEPLOYMENT_TARGET,
                "inputs": "TensorType, normalized NCHW float32 (the ModelSpec's preprocessing is not folded in)",
                "compute_precision": "FP32" if options.precision == "fp32" else "FP16 with the plan's FP32 ops",
                "weights": "int8 linear symmetric per channel (W8A16)" if options.precision == "int8" else options.precision,
                "activation_quantization": "not done: coremltools calibrates activations by running the model, which needs macOS",
                **promptable,
                "seconds": {k: round(v, 3) for k, v in timings.items()},
            },
            validation=validation,
            **sections,
            toolchain={**package_versions("torch", "coremltools", "numpy"), "coremltools_tested_torch": "2.7 (warned by coremltools)"},
        )
        write_json(staging / "manifest.json", manifest)
    folder = Path(options.output)
    return Artifact(folder, folder / model_dir, "coreml", precision=options.precision, spec=spec, manifest=manifest)


def _predict_checks(model, spec: ModelSpec, staging: Path, options: ExportOptions) -> list:
    """On macOS: the package (or SAM's pair, on the parity prompts) against PyTorch on the
    validation photos. Elsewhere: nothing to run."""
    if platform.system() != "Darwin":
        return [{"skipped": "Core ML predicts only on macOS; run the bundle's verify.py on a Mac"}]
    from evitdeploy.backends.reference import check_export
    from evitdeploy.backends.coreml.runner import CoreMLRunner

    if spec.promptable:
        from evitdeploy.backends.promptable import validate_export_pair

        with CoreMLRunner(staging / PROMPTABLE_DIRS["encoder"], spec) as encoder, CoreMLRunner(staging / PROMPTABLE_DIRS["decoder"], spec) as decoder:
            return [validate_export_pair(model, spec, (encoder, decoder), options=options, what="the Core ML packages", hint="report this model")]
    with CoreMLRunner(staging / MODEL_DIR, spec) as candidate:
        return check_export(model, spec, candidate, options=options, what="the Core ML package", hint="report this model/size")
