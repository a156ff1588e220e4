"""ONNX + precision plan -> TensorRT engine, on the real TensorRT 10 Python API (imported lazily).

FP16: the FP32 ONNX graph, FP16 flag, the plan's FP32 nodes pinned as layer precision + output type
FP32 under OBEY_PRECISION_CONSTRAINTS. INT8: the plan's QDQ ONNX in the TensorRT scheme (symmetric
int8, zero point 0) with the FP16 flag for the float remainder. One optimization profile from
the spec/profile shapes; workspace limit; timing cache read and written. Engine + build recipe +
manifest (TensorRT version, GPU name and compute capability) are written atomically.

Not run on this project's CI host: TensorRT cannot be installed there. `TRT_NAMES` lists every
TensorRT name used here; a test checks each against the tensorrt-stubs API listing.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Optional

from evitdeploy.artifact import Artifact, build_manifest, package_versions, staged_folder, write_bytes, write_json, write_text
from evitdeploy.errors import EXIT_CHECK_FAILED, UserError
from evitdeploy.backends.options import ExportOptions
from evitdeploy.backends.tensorrt.runtime import gpu_identity, import_tensorrt
from evitdeploy.backends.tensorrt.plan import DEFAULT_WORKSPACE_MIB, ENGINE_FILE, TIMING_CACHE_FILE, build_script, layer_precisions, shapes, trtexec_command
from evitdeploy.spec import ModelSpec

ONNX_FILE = "model.onnx"
RECIPE_FILE = "build_engine.sh"
# Distributions whose installed versions the manifest's toolchain records.
TOOLCHAIN = ("torch", "onnx", "onnxruntime", "numpy")

# Every TensorRT class, enum member and method this module uses ("Class.member").
TRT_NAMES = (
    "Logger", "Logger.WARNING", "Builder", "Builder.create_network", "Builder.create_builder_config",
    "Builder.create_optimization_profile", "Builder.build_serialized_network", "OnnxParser", "OnnxParser.parse_from_file", "OnnxParser.num_errors",
    "OnnxParser.get_error", "INetworkDefinition.num_layers", "INetworkDefinition.get_layer", "ILayer.name", "ILayer.precision",
    "ILayer.num_outputs", "ILayer.set_output_type", "DataType", "DataType.FLOAT", "BuilderFlag", "BuilderFlag.FP16", "BuilderFlag.INT8",
    "BuilderFlag.OBEY_PRECISION_CONSTRAINTS", "IBuilderConfig.set_flag", "IBuilderConfig.set_memory_pool_limit",
    "MemoryPoolType", "MemoryPoolType.WORKSPACE", "IBuilderConfig.add_optimization_profile", "IOptimizationProfile.set_shape",
    "IBuilderConfig.create_timing_cache", "IBuilderConfig.set_timing_cache", "IBuilderConfig.get_timing_cache",
    "ITimingCache.serialize", "__version__",
)


def build_engine(trt, onnx_path: Path, spec: ModelSpec, precision: str, plan, shape_range: dict,
                 workspace_mib: int = DEFAULT_WORKSPACE_MIB, timing_cache: Optional[Path] = None) -> tuple[bytes, dict]:
    """The serialized engine and what the build did (pinned layers, seconds)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UserError(f"TensorRT cannot parse {onnx_path.name}: {errors[:300]}", "report the model and TensorRT version", EXIT_CHECK_FAILED)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
    pinned = {}
    if plan is not None and precision != "fp32":
        layers = [network.get_layer(i) for i in range(network.num_layers)]
        pinned = layer_precisions(plan, [layer.name for layer in layers])
        for layer in layers:
            if layer.name in pinned:
                layer.precision = trt.DataType.FLOAT
                for k in range(layer.num_outputs):
                    layer.set_output_type(k, trt.DataType.FLOAT)
        if pinned:
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    profile = builder.create_optimization_profile()
    profile.set_shape(spec.input_name, shape_range["min"], shape_range["opt"], shape_range["max"])
    config.add_optimization_profile(profile)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache and timing_cache.is_file() else b"")
    config.set_timing_cache(cache, False)
    started = time.perf_counter()
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise UserError("TensorRT could not build the engine (see its log above)", "check the workspace limit and the plan's constraints", EXIT_CHECK_FAILED)
    info = {"pinned_fp32_layers": len(pinned), "build_s": round(time.perf_counter() - started, 2)}
    return bytes(engine), {**info, "timing_cache": bytes(config.get_timing_cache().serialize())}


def prepare_onnx(model, spec: ModelSpec, precision: str, folder: Path, scratch: Path, options: ExportOptions):
    """model.onnx for TensorRT (FP32 graph, or the QDQ graph in the TensorRT scheme) and the plan."""
    from dataclasses import replace

    from evitdeploy.graph import default_opset, write_graph

    from evitdeploy.backends.reference import validation_batch
    from evitdeploy.precision.fp16 import require_finite_storage
    from evitdeploy.precision.qdq import quantize
    from evitdeploy.precision.pipeline import make_plan, write_plan

    fp32_path = folder / ONNX_FILE if precision != "int8" else scratch / "fp32.onnx"
    write_graph(model, spec, fp32_path, opset=default_opset(spec), simplify=True, step=options.step)
    if precision == "fp32":
        return None, {}
    reduced = replace(options.reduced, scheme="tensorrt")
    result = make_plan(fp32_path, spec, precision, options=reduced, progress=options.progress)
    conversion = quantize(fp32_path, result.plan, result.ranges, output=folder / ONNX_FILE, scheme="tensorrt") if precision == "int8" else {}
    # FP16: the engine stores what the FP16 layers write in FP16; the same storage emulation as the
    # ONNX FP16 export estimates it here (plan and plain), and a plan that overflows is refused.
    storage = require_finite_storage(fp32_path, result.plan, validation_batch(options, spec), spec=spec) if precision == "fp16" else None
    return result.plan, write_plan(
        result, folder, scheme="tensorrt (symmetric int8, zero point 0)" if precision == "int8" else None, conversion=conversion,
        **({"fp16_storage_check": storage} if storage else {}),
    )


def export(model, spec: ModelSpec, options: ExportOptions) -> Artifact:
    """With TensorRT and a GPU: the engine. With options.engine False (deploy for a device, where
    engines must be built): the ONNX, the plan and the recipe, without TensorRT."""
    from evitdeploy.graph import with_dynamic_axes

    trt = import_tensorrt() if options.engine else None
    identity = gpu_identity() if options.engine else {}
    spec = with_dynamic_axes(spec, options.dynamic_axes)  # the ONNX input's dynamic axes match the profile's range
    shape_range = shapes(spec, options.profile)
    with staged_folder(options.output) as staging, tempfile.TemporaryDirectory(prefix="evitdeploy-trt-") as scratch:
        plan, sections = prepare_onnx(model, spec, options.precision, folder=staging, scratch=Path(scratch), options=options)
        command = trtexec_command(spec, options.precision, plan, shape_range=shape_range)
        write_text(staging / RECIPE_FILE, build_script(command, "evitdeploy build ."))
        engine_info = {"file": ENGINE_FILE, "built": False, "recipe": RECIPE_FILE}
        if trt is not None:
            options.step(f"building the TensorRT {options.precision.upper()} engine on {identity['gpu']}")
            serialized, info = build_engine(trt, staging / ONNX_FILE, spec, precision=options.precision, plan=plan, shape_range=shape_range)
            write_bytes(staging / ENGINE_FILE, serialized)
            write_bytes(staging / TIMING_CACHE_FILE, info.pop("timing_cache"))
            engine_info.update(built=True, **info, **identity)
        manifest = build_manifest(
            staging, "trt", options.precision, spec=spec, model_file=ENGINE_FILE if trt is not None else ONNX_FILE, source=options.source,
            export={"engine": engine_info, "onnx": ONNX_FILE, "shapes": {k: list(v) for k, v in shape_range.items()}, "trtexec": command, **identity},
            validation={"checks": [{"skipped": "the engine is checked where it is built: `evitdeploy build` on the device"}]},
            **sections,
            toolchain={**package_versions(*TOOLCHAIN), **({"tensorrt": trt.__version__} if trt else {})},
        )
        write_json(staging / "manifest.json", manifest)
    folder = Path(options.output)
    return Artifact(folder, folder / manifest["model_file"], "trt", precision=options.precision, spec=spec, manifest=manifest)
