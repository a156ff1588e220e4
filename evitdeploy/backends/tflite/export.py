"""PyTorch -> .tflite for LiteRT (phones, Raspberry Pi): FP32, FP16 weights, full-integer INT8.

- Conversion: litert-torch (torch.export -> StableHLO -> TFLite), no TensorFlow. The deployment
  formulation converts as is: LiteMLA's matmuls become BATCH_MATMUL, and the segmentation head's
  bicubic upsampling is already a fixed convolution + pixel shuffle (DEPTH_TO_SPACE) with
  F.interpolate's own taps, so nothing is swapped for bilinear and there is no parity cost.
- Layout: by default the model takes NCHW float32 like every other target; the converter puts one
  TRANSPOSE in front and the ops inside run NHWC on XNNPACK. `--nhwc` makes the input NHWC
  (measured here at 224, FP32, 2 threads: B0 7% faster, B1 2.6%; and a camera frame needs no
  transpose in the app). The ModelSpec's layout says which; runners transpose NCHW data for it.
- FP16 and INT8 follow the shared precision plan (made on the ONNX FP32 graph with the same
  calibration set; see tflite_plan), applied through ai-edge-quantizer: float16 weights
  (FLOAT_CASTING; compute stays float32 unless the runtime opts into FP16), or static int8 weights
  and activations calibrated on the plan's own calibration images (int8 input and output,
  (de)quantized by the runner from the tensors' scales).
- A promptable (SAM) model is two files: `encoder.tflite` (the precision asked) and
  `decoder.tflite`, FP32 and static like every TFLite model here, so built for DECODER_POINTS
  points; the runner pads a prompt to that count, and the decoder masks the padding out of its
  attention, so its masks are the unpadded decoder's (models.prompt.PromptDecoder says why it must).
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

from evitdeploy.artifact import Artifact, build_manifest, package_versions
from evitdeploy.files import staged_folder, write_bytes, write_json
from evitdeploy.errors import BackendUnavailable, UserError, first_line
from evitdeploy.backends.options import ExportOptions
from evitdeploy.backends.tflite import BACKEND
from evitdeploy.backends.reference import check_export
from evitdeploy.spec import ModelSpec

MODEL_FILE = "model.tflite"
PROMPTABLE_FILES = {"encoder": "encoder.tflite", "decoder": "decoder.tflite"}  # a SAM artifact's two models
DECODER_POINTS = 8  # prompt points the decoder is built for: 7 clicks, or a box and 6 (recorded as export.decoder_points)
OPS_FILE = "tflite_plan.json"
SIGNATURE = "serving_default"
# Distributions whose installed versions the manifest's toolchain records.
TOOLCHAIN = ("torch", "litert-torch", "ai-edge-litert", "ai-edge-quantizer", "numpy")


def import_converter():
    try:
        import litert_torch
    except ImportError as exc:
        raise BackendUnavailable("litert-torch (PyTorch -> .tflite)", BACKEND.install) from exc
    litert_torch.config.show_progress = False  # it prints to stdout, which --json owns; we report steps ourselves
    return litert_torch


def import_quantizer():
    try:
        from ai_edge_quantizer import quantizer
    except ImportError as exc:
        raise BackendUnavailable("ai-edge-quantizer (FP16/INT8 .tflite)", BACKEND.install) from exc
    return quantizer


def convert(model, spec: ModelSpec, path: Path, channels_last: bool = False) -> None:
    """The float .tflite of `model` (deployment formulation) at the spec's static input shape;
    `channels_last` makes the input NHWC (no TRANSPOSE in front: 7% of B0's time at 224 here)."""
    import torch

    litert_torch = import_converter()
    model.set_formulation("deploy")
    model.eval()
    n, c, h, w = spec.input_shape
    sample = torch.zeros((n, h, w, c) if channels_last else (n, c, h, w), dtype=torch.float32)
    module = litert_torch.to_channel_last_io(model, args=[0]) if channels_last else model
    write_bytes(path, _converted(lambda: litert_torch.convert(module, (sample,)), what=spec.name))


def _converted(convert_call, what: str) -> bytes:
    """The .tflite bytes litert-torch makes; any converter failure is one line."""
    import torch

    try:
        with contextlib.redirect_stdout(sys.stderr), torch.no_grad():
            return bytes(convert_call().model_content())
    except Exception as exc:  # the converter raises many types; each means "this model does not convert"
        raise UserError(
            f"litert-torch cannot convert {what}: {type(exc).__name__}: {first_line(exc, 240)}",
            "an op without a TFLite lowering; --target onnx takes this model",
        ) from exc


def convert_decoder(decoder, spec: ModelSpec, path: Path) -> None:
    """A promptable model's fixed-points prompt decoder (models.prompt.PromptDecoder) as a .tflite,
    its signature's inputs and outputs named as the ONNX decoder's (plus point_count)."""
    import torch

    from evitdeploy.device.prompts import decoder_input_shapes

    litert_torch = import_converter()
    sample = {name: torch.ones(shape) for name, shape in decoder_input_shapes(spec.embedding, decoder.fixed_points, point_count=True).items()}
    write_bytes(path, _converted(lambda: litert_torch.convert(decoder.eval(), sample_kwargs=sample), what=f"{spec.name}'s prompt decoder"))


def export(model, spec: ModelSpec, options: ExportOptions) -> Artifact:
    import_converter()
    if options.backend_options["nhwc"]:
        spec = replace(spec, layout="NHWC")
    if options.precision != "fp32":
        import_quantizer()
    if options.dynamic_axes:
        raise UserError("the TFLite target exports static shapes", "drop --dynamic; export one artifact per input size")
    timings = {}
    model_file = PROMPTABLE_FILES["encoder"] if spec.promptable else MODEL_FILE
    with staged_folder(options.output) as staging, tempfile.TemporaryDirectory(prefix="evitdeploy-tflite-") as scratch:
        path = staging / model_file
        float_path = Path(scratch) / "fp32.tflite" if options.precision != "fp32" else path
        started = time.perf_counter()
        options.step("converting with litert-torch (PyTorch -> .tflite)")
        convert(model, spec, float_path, channels_last=options.backend_options["nhwc"])
        timings["convert_s"] = time.perf_counter() - started
        sections, promptable = {}, {}
        if options.precision != "fp32":
            started = time.perf_counter()
            sections = _reduce(model, spec, float_path, path=path, staging=staging, scratch=Path(scratch), options=options)
            timings["precision_s"] = time.perf_counter() - started
        if spec.promptable:  # the prompt decoder stays FP32: 4M parameters, milliseconds per prompt
            from evitdeploy.backends.promptable import POINTS_MEANING

            started = time.perf_counter()
            options.step(f"converting the prompt decoder ({DECODER_POINTS} points, FP32)")
            convert_decoder(model.decoder(spec.decoder_masks, fixed_points=DECODER_POINTS), spec, staging / PROMPTABLE_FILES["decoder"])
            timings["decoder_convert_s"] = time.perf_counter() - started
            sections["models"] = dict(PROMPTABLE_FILES)
            promptable = {"decoder_points": DECODER_POINTS, "decoder_points_meaning": POINTS_MEANING}
        started = time.perf_counter()
        options.step("validating (LiteRT on XNNPACK vs PyTorch on real images)")
        validation = (validate_promptable if spec.promptable else validate)(model, spec, path, options=options)
        timings["validate_s"] = time.perf_counter() - started
        manifest = build_manifest(
            staging,
            "tflite",
            options.precision,
            spec=spec,
            model_file=model_file,
            source=options.source,
            export={
                "exporter": "litert-torch (torch.export)",
                "layout": "NHWC input (channels last, as camera frames come)"
                if options.backend_options["nhwc"]
                else "NCHW input (one TRANSPOSE to NHWC inside the model; --nhwc removes it)",
                "io": validation.pop("io"),
                "ops": validation.pop("ops"),
                **{key: validation.pop(key) for key in ("decoder_io", "decoder_ops") if key in validation},
                **promptable,
                "bicubic_upsampling": "exact: fixed depthwise convolution + DEPTH_TO_SPACE with F.interpolate's taps",
                "seconds": {k: round(v, 3) for k, v in timings.items()},
            },
            validation=validation,
            **sections,
            toolchain=package_versions(*TOOLCHAIN),
        )
        write_json(staging / "manifest.json", manifest)
    folder = Path(options.output)
    return Artifact(folder, folder / model_file, "tflite", precision=options.precision, spec=spec, manifest=manifest)


NAIVE_EXCEPT = "HARD_SWISH float: XNNPACK has no int8 kernel for it"


def _reduce(model, spec: ModelSpec, float_path: Path, path: Path, staging: Path, scratch: Path, options: ExportOptions) -> dict:
    """The shared plan (ONNX FP32 graph, same calibration set), applied through ai-edge-quantizer."""
    from evitdeploy.backends.tflite import plan as tflite_plan
    from evitdeploy.graph import default_opset, write_graph
    from evitdeploy.precision.pipeline import make_plan, write_plan

    onnx_path = scratch / "fp32.onnx"
    write_graph(model, spec, onnx_path, opset=default_opset(spec), simplify=True, step=options.step)
    result = make_plan(onnx_path, spec, options.precision, options=options.reduced, progress=options.progress)
    float_model = float_path.read_bytes()
    naive = options.precision == "int8" and options.reduced.naive
    plan = result.plan.naive() if naive else result.plan
    decisions = tflite_plan.decide(plan, tflite_plan.read_ops(float_model, tflite_plan.module_classes(model)))
    options.step(
        f"writing the {options.precision.upper()} .tflite "
        + ("naively: the static int8 recipe on every op, a baseline" if naive else "following the plan (ai-edge-quantizer)")
    )
    manager = tflite_plan.recipe(options.precision, decisions)
    quantizer = import_quantizer().Quantizer(float_model, manager.get_quantization_recipe())
    with contextlib.redirect_stdout(sys.stderr):
        ranges = None
        if options.precision == "int8":
            images = result.calibration.inputs
            ranges = calibrate(float_model, float_path, images.transpose(0, 2, 3, 1) if options.backend_options["nhwc"] else images, manager=manager)
        quantized = quantizer.quantize(ranges)
    write_bytes(path, bytes(quantized.quantized_model))
    write_json(staging / OPS_FILE, {"precision": options.precision, "ops": [d.__dict__ for d in decisions]})
    return write_plan(
        result,
        staging,
        tflite_ops_file=OPS_FILE,
        search_runtime="ONNX Runtime on the plan's QDQ ONNX (a proxy: the same plan, blocks and calibration images)",
        tflite_ranges="exact min/max of every quantized tensor over the calibration images" if options.precision == "int8" else None,
        tflite=tflite_plan.summary(decisions),
        **({"naive": f"ai-edge-quantizer's static int8 recipe on every op ({NAIVE_EXCEPT})"} if naive else {}),
    )


def _union(seen: dict, new: dict) -> dict:
    """Exact min/max over every calibration image (what the plan's `minmax` ranges are)."""
    import numpy as np

    return {"min": np.minimum(seen["min"], new["min"]), "max": np.maximum(seen["max"], new["max"])} if seen else new


def calibrate(float_model: bytes, float_path: Path, images, manager) -> dict:
    """Activation ranges for the recipe's quantized tensors, over the plan's calibration images.

    ai-edge-quantizer's default merges images with an exponential moving average (factor 0.95):
    later images dominate and outliers are clipped. On the trained digits classifier that left the
    worst held-out image at cosine 0.954 to FP32 (median 0.999); exact min/max matches the ranges
    the ONNX plan quantizes with.
    """
    from ai_edge_quantizer import calibrator

    name = _signature_input(float_path)
    tool = calibrator.Calibrator(float_model, qsv_update_func=_union)
    tool.calibrate({SIGNATURE: [{name: images[i : i + 1]} for i in range(len(images))]}, manager)
    return tool.get_model_qsvs()


def _signature_input(path: Path) -> str:
    from evitdeploy.backends.tflite.runner import import_litert

    signatures = import_litert().Interpreter(model_path=str(path)).get_signature_list()
    return signatures[SIGNATURE]["inputs"][0]


def _hint(precision: str) -> str:
    return (
        "report this model/size"
        if precision == "fp32"
        else "calibrate on images like your deployment's (--calib DIR), raise --search-budget, or check with looser tolerances"
    )


def validate(model, spec: ModelSpec, path: Path, options: ExportOptions) -> dict:
    """A load in LiteRT, its tensors' types, and outputs against PyTorch (textbook formulation)."""
    from evitdeploy.backends.tflite.runner import TFLiteRunner

    if options.validation_inputs is None:
        raise ValueError("validation_inputs are required")
    with TFLiteRunner(path, spec) as candidate:
        checks = check_export(model, spec, candidate, options=options, what="the .tflite", hint=_hint(options.precision))
        io = _io(candidate.interpreter)
    return {"runtime": "ai-edge-litert Interpreter (XNNPACK)", "data": options.validation_source, "checks": checks, "io": io, "ops": _ops(path)}


def validate_promptable(model, spec: ModelSpec, path: Path, options: ExportOptions) -> dict:
    """Encoder and decoder in LiteRT against PyTorch on the parity prompts. The reference is SAM's
    own decoder fed each prompt unpadded: the runner pads it, and the decoder's masked attention
    makes the padding exact (models.prompt.PromptDecoder), so there is nothing to forgive."""
    from evitdeploy.backends.promptable import validate_export_pair
    from evitdeploy.backends.tflite.runner import TFLiteRunner

    decoder_path = path.parent / PROMPTABLE_FILES["decoder"]
    with TFLiteRunner(path, spec) as encoder, TFLiteRunner(decoder_path, spec) as decoder:
        check = validate_export_pair(model, spec, (encoder, decoder), options=options, what="the .tflite pair", hint=_hint(options.precision))
        io, decoder_io = _io(encoder.interpreter), _io(decoder.interpreter)
    return {
        "runtime": "ai-edge-litert Interpreter (XNNPACK)",
        "data": options.validation_source,
        "checks": [check],
        "io": io,
        "ops": _ops(path),
        "decoder_io": decoder_io,
        "decoder_ops": _ops(decoder_path),
    }


def _io(interpreter) -> dict:
    """Each input and output tensor: name, shape, type and quantization (the manifest's export.io)."""
    return {
        kind: [
            {
                "name": d["name"],
                "shape": [int(n) for n in d["shape"]],
                "dtype": d["dtype"].__name__,
                "scale": float(d["quantization"][0]),
                "zero_point": int(d["quantization"][1]),
            }
            for d in details
        ]
        for kind, details in (("inputs", interpreter.get_input_details()), ("outputs", interpreter.get_output_details()))
    }


def _ops(path: Path) -> dict:
    """Op counts by type; {} without ai-edge-quantizer (its flatbuffer reader; FP32 exports work without it)."""
    from evitdeploy.backends.tflite.plan import read_ops

    try:
        return dict(Counter(op for _, op, _, _ in read_ops(path.read_bytes())))
    except ImportError:
        return {}
