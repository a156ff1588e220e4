"""PyTorch -> ONNX (the hub) -> OpenVINO IR, FP32 / BF16 / INT8 following the shared plan.

The artifact's model is a folder, `model.openvino/` (model.xml + model.bin, FP32 weights kept:
compress_to_fp16=False), so its size and identity cover both files like a Core ML package. The
compile settings it was validated with (inference precision, latency hint) are recorded in the
manifest's export.openvino and used by every runner, here and in a bundle's verify.py.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from evitdeploy.artifact import Artifact, build_manifest, package_versions
from evitdeploy.files import staged_folder, write_json
from evitdeploy.backends.openvino import BACKEND
from evitdeploy.backends.openvino.device import IR_FILE, has_bf16
from evitdeploy.backends.openvino.plan import fake_quantize_count, float_precision, quantize, quantize_naive
from evitdeploy.backends.openvino.runner import OpenVINORunner, import_openvino
from evitdeploy.backends.options import ExportOptions
from evitdeploy.backends.reference import check_export
from evitdeploy.errors import UserError
from evitdeploy.graph import default_opset, write_decoder_graph, write_graph
from evitdeploy.spec import ModelSpec

PROMPTABLE_FOLDERS = {"encoder": "encoder.openvino", "decoder": "decoder.openvino"}  # a SAM artifact's two IRs

# Distributions whose installed versions the manifest's toolchain records.
TOOLCHAIN = ("torch", "onnx", "onnxruntime", "openvino", "nncf", "numpy")


def export(model, spec: ModelSpec, options: ExportOptions) -> Artifact:
    ov = import_openvino()
    if options.dynamic_axes:
        raise UserError("the OpenVINO target exports static shapes here", "drop --dynamic; export one IR per input size")
    precision = options.precision
    inference = float_precision(precision, has_bf16(ov.Core()), options.reduced.kernels)  # refuses bf16 on a CPU without it, before any work
    timings, sections = {}, {}
    with staged_folder(options.output) as staging, tempfile.TemporaryDirectory(prefix="evitdeploy-openvino-") as scratch:
        onnx_path = Path(scratch) / "fp32.onnx"
        timings.update(write_graph(model, spec, onnx_path, opset=options.opset or default_opset(spec), simplify=options.simplify, step=options.step))
        started = time.perf_counter()
        options.step(f"converting to OpenVINO IR (inference precision {inference})")
        ir = ov.convert_model(str(onnx_path))
        timings["convert_s"] = time.perf_counter() - started
        if precision != "fp32":
            from evitdeploy.precision.pipeline import int8_kernels_section, make_plan, write_plan

            started = time.perf_counter()
            result = make_plan(onnx_path, spec, precision, options=options.reduced, progress=options.progress)
            details = {
                "openvino": f"the float graph at {inference} (the CPU plugin takes no per-node precision: the plan's FP32 islands are recorded, not enforced)"
            }
            if precision == "int8" and options.reduced.naive:
                options.step("quantizing naively with NNCF's defaults (no plan): a baseline")
                ir, quantized = quantize_naive(ir, result)
                details.update(quantized, openvino=f"INT8 wherever NNCF's defaults put it, the rest at {inference}")
            elif precision == "int8":
                options.step("quantizing with NNCF: the plan's FP32 nodes as its ignored scope, the plan's calibration images")
                ir, quantized = quantize(ir, onnx_path, result)
                details.update(quantized, openvino=f"INT8 where the plan says, the rest at {inference}")
            sections = {**write_plan(result, staging, **details), **int8_kernels_section(result.plan)}
            timings["precision_s"] = time.perf_counter() - started
        model_file = PROMPTABLE_FOLDERS["encoder"] if spec.promptable else BACKEND.model_file
        model_dir = staging / model_file
        model_dir.mkdir()
        ov.save_model(ir, str(model_dir / IR_FILE), compress_to_fp16=False)
        if spec.promptable:  # the prompt decoder: FP32 weights, dynamic number of points
            options.step("exporting the prompt decoder (dynamic number of points) and converting it")
            decoder_onnx = Path(scratch) / "decoder.onnx"
            timings.update(
                write_decoder_graph(
                    model.decoder(spec.decoder_masks), spec, decoder_onnx, opset=options.opset or default_opset(spec), simplify=options.simplify
                )
            )
            (staging / PROMPTABLE_FOLDERS["decoder"]).mkdir()
            ov.save_model(ov.convert_model(str(decoder_onnx)), str(staging / PROMPTABLE_FOLDERS["decoder"] / IR_FILE), compress_to_fp16=False)
            sections["models"] = dict(PROMPTABLE_FOLDERS)
        settings = {"inference_precision": inference, "performance_hint": "LATENCY", "fake_quantize_ops": fake_quantize_count(ir)}
        started = time.perf_counter()
        options.step(f"validating (OpenVINO CPU at {inference} vs PyTorch on real images)")
        checks = (_validate_promptable if spec.promptable else _validate)(model, spec, model_dir, settings=settings, options=options)
        timings["validate_s"] = time.perf_counter() - started
        manifest = build_manifest(
            staging,
            BACKEND.name,
            precision,
            spec=spec,
            model_file=model_file,
            source=options.source,
            export={
                "exporter": "torch.onnx.export (TorchScript) -> openvino.convert_model",
                "openvino": settings,
                "seconds": {k: round(v, 3) for k, v in timings.items()},
            },
            validation={"data": options.validation_source, "checks": checks},
            **sections,
            toolchain=package_versions(*TOOLCHAIN),
        )
        write_json(staging / "manifest.json", manifest)
    folder = Path(options.output)
    return Artifact(folder, folder / model_file, BACKEND.name, precision=precision, spec=spec, manifest=manifest)


def _validate(model, spec: ModelSpec, model_dir: Path, settings: dict, options: ExportOptions) -> list:
    """The IR against PyTorch, compiled as every runner will compile it."""
    hint = "calibrate on images like your deployment's (--calib DIR), or export fp32" if options.precision != "fp32" else "report this model/size"
    with OpenVINORunner(model_dir, spec, {"export": {"openvino": settings}}) as candidate:
        return check_export(model, spec, candidate, options=options, what="the OpenVINO IR", hint=hint, shape=(1, *spec.input_shape[1:]))


def _validate_promptable(model, spec: ModelSpec, model_dir: Path, settings: dict, options: ExportOptions) -> list:
    """Encoder and decoder IRs against PyTorch on the parity prompts, compiled as every runner will."""
    from evitdeploy.backends.promptable import validate_export_pair

    manifest = {"export": {"openvino": settings}}
    hint = "calibrate on images like your deployment's (--calib DIR), or export fp32" if options.precision != "fp32" else "report this model"
    with OpenVINORunner(model_dir, spec, manifest) as encoder, OpenVINORunner(model_dir.parent / PROMPTABLE_FOLDERS["decoder"], spec, manifest) as decoder:
        return [validate_export_pair(model, spec, (encoder, decoder), options=options, what="the OpenVINO IRs", hint=hint)]
