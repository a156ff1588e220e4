"""ONNX + precision plan -> TensorRT engine, on the real TensorRT 10 Python API (imported lazily).

FP16: the FP32 ONNX graph, FP16 flag, the plan's FP32 nodes pinned as layer precision + output type
FP32 under OBEY_PRECISION_CONSTRAINTS. INT8: the plan's QDQ ONNX in the TensorRT scheme (symmetric
int8, zero point 0) with the FP16 flag for the float remainder. One optimization profile from
the spec/profile shapes; workspace limit; timing cache read and written. Engine + build recipe +
manifest (TensorRT version, GPU name and compute capability) are written atomically. A promptable
(SAM) model is two of these: its encoder as above, its prompt decoder FP32 (`engine_builds`).

Not run on this project's CI host: TensorRT cannot be installed there. `TRT_NAMES` lists every
TensorRT name used here; a test checks each against the tensorrt-stubs API listing.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from evitdeploy.artifact import Artifact, build_manifest, package_versions
from evitdeploy.files import staged_folder, write_bytes, write_json, write_text
from evitdeploy.errors import EXIT_CHECK_FAILED, UserError
from evitdeploy.backends.onnxruntime.export import PROMPTABLE_FILES
from evitdeploy.backends.options import ExportOptions
from evitdeploy.backends.tensorrt.runtime import gpu_identity, import_tensorrt
from evitdeploy.backends.tensorrt.plan import (
    DEFAULT_WORKSPACE_MIB,
    ENGINE_FILE,
    PROMPTABLE_ENGINES,
    TIMING_CACHE_FILE,
    build_script,
    decoder_shapes,
    layer_precisions,
    named_ranges,
    shapes,
    trtexec_command,
)
from evitdeploy.precision.plan import PrecisionPlan
from evitdeploy.spec import ModelSpec

ONNX_FILE = "model.onnx"
RECIPE_FILE = "build_engine.sh"
# Distributions whose installed versions the manifest's toolchain records.
TOOLCHAIN = ("torch", "onnx", "onnxruntime", "numpy")

# Every TensorRT class, enum member and method this module uses ("Class.member").
TRT_NAMES = (
    "Logger",
    "Logger.WARNING",
    "Builder",
    "Builder.create_network",
    "Builder.create_builder_config",
    "Builder.create_optimization_profile",
    "Builder.build_serialized_network",
    "OnnxParser",
    "OnnxParser.parse_from_file",
    "OnnxParser.num_errors",
    "OnnxParser.get_error",
    "INetworkDefinition.num_layers",
    "INetworkDefinition.get_layer",
    "ILayer.name",
    "ILayer.precision",
    "ILayer.num_outputs",
    "ILayer.set_output_type",
    "DataType",
    "DataType.FLOAT",
    "BuilderFlag",
    "BuilderFlag.FP16",
    "BuilderFlag.INT8",
    "BuilderFlag.OBEY_PRECISION_CONSTRAINTS",
    "IBuilderConfig.set_flag",
    "IBuilderConfig.set_memory_pool_limit",
    "MemoryPoolType",
    "MemoryPoolType.WORKSPACE",
    "IBuilderConfig.add_optimization_profile",
    "IOptimizationProfile.set_shape",
    "IBuilderConfig.create_timing_cache",
    "IBuilderConfig.set_timing_cache",
    "IBuilderConfig.get_timing_cache",
    "ITimingCache.serialize",
    "__version__",
)


@dataclass(frozen=True)
class EngineBuild:
    """One engine of an artifact: the ONNX it is built from, its file, precision, plan and profile."""

    role: str  # "model", or a promptable model's "encoder" / "decoder"
    onnx: str
    engine: str
    precision: str
    plan: Optional[PrecisionPlan]
    shapes: dict  # input name -> {"min", "opt", "max"} (plan.named_ranges)

    @property
    def what(self) -> str:
        return "engine" if self.role == "model" else f"{self.role} engine"


def engine_builds(spec: ModelSpec, precision: str, plan: Optional[PrecisionPlan], shape_range: dict) -> list[EngineBuild]:
    """The engines an export writes and `evitdeploy build` builds: the model, or a promptable
    model's encoder (its plan applied like any model's) and prompt decoder.

    The decoder stays FP32 at every precision: it is ~4M parameters and milliseconds per prompt, the
    precision plan is made for the encoder only (so an FP16 decoder would be plain, unpinned FP16),
    and plain FP16 is what fails on EfficientViT-SAM (mit-han-lab/efficientvit#113: L2 at FP16 gave
    mAP 0.0, 79.1 at FP32; #142: LayerNorm overflows; the decoder has LayerNorms and softmax
    attention over every image token too). Nothing measured here says an FP16 decoder is safe."""
    image = {spec.input_name: shape_range}
    if not spec.promptable:
        return [EngineBuild(role="model", onnx=ONNX_FILE, engine=ENGINE_FILE, precision=precision, plan=plan, shapes=image)]
    return [
        EngineBuild(role="encoder", onnx=PROMPTABLE_FILES["encoder"], engine=PROMPTABLE_ENGINES["encoder"], precision=precision, plan=plan, shapes=image),
        EngineBuild(
            role="decoder", onnx=PROMPTABLE_FILES["decoder"], engine=PROMPTABLE_ENGINES["decoder"], precision="fp32", plan=None, shapes=decoder_shapes(spec)
        ),
    ]


def build_engine(
    trt,
    onnx_path: Path,
    spec: ModelSpec,
    precision: str,
    plan,
    shape_range: dict,
    workspace_mib: int = DEFAULT_WORKSPACE_MIB,
    timing_cache: Optional[Path] = None,
) -> tuple[bytes, dict]:
    """The serialized engine and what the build did (pinned layers, seconds). `shape_range`: the
    spec's input's range, or every named input's (plan.named_ranges), one optimization profile."""
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
    for name, bounds in named_ranges(spec, shape_range).items():
        profile.set_shape(name, bounds["min"], bounds["opt"], bounds["max"])
    config.add_optimization_profile(profile)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache and timing_cache.is_file() else b"")
    config.set_timing_cache(cache, False)
    started = time.perf_counter()
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise UserError("TensorRT could not build the engine (see its log above)", "check the workspace limit and the plan's constraints", EXIT_CHECK_FAILED)
    info = {"pinned_fp32_layers": len(pinned), "build_s": round(time.perf_counter() - started, 2)}
    return bytes(engine), {**info, "timing_cache": bytes(config.get_timing_cache().serialize())}


def build_engines(
    trt,
    folder: Path,
    spec: ModelSpec,
    builds: list[EngineBuild],
    *,
    gpu: str,
    workspace_mib: int = DEFAULT_WORKSPACE_MIB,
    step: Optional[Callable[[str], None]] = None,
) -> dict[str, dict]:
    """Each engine built from its ONNX in `folder` and written beside it, one timing cache shared
    (read, then rewritten after each); {role: what its build did}."""
    done = {}
    for build in builds:
        if step:
            step(f"building the {build.precision.upper()} {build.what} on {gpu} with TensorRT {trt.__version__}")
        serialized, info = build_engine(
            trt,
            folder / build.onnx,
            spec,
            precision=build.precision,
            plan=build.plan,
            shape_range=build.shapes,
            workspace_mib=workspace_mib,
            timing_cache=folder / TIMING_CACHE_FILE,
        )
        write_bytes(folder / build.engine, serialized)
        write_bytes(folder / TIMING_CACHE_FILE, info.pop("timing_cache"))
        done[build.role] = info
    return done


def prepare_onnx(model, spec: ModelSpec, precision: str, folder: Path, scratch: Path, options: ExportOptions, onnx_file: str = ONNX_FILE):
    """The model's ONNX for TensorRT (FP32 graph, or the QDQ graph in the TensorRT scheme) and the plan."""
    from dataclasses import replace

    from evitdeploy.graph import default_opset, write_graph

    from evitdeploy.backends.reference import validation_batch
    from evitdeploy.precision.fp16 import require_finite_storage
    from evitdeploy.precision.qdq import SYMMETRIC, quantize
    from evitdeploy.precision.pipeline import make_plan, write_plan

    fp32_path = folder / onnx_file if precision != "int8" else scratch / "fp32.onnx"
    write_graph(model, spec, fp32_path, opset=default_opset(spec), simplify=True, step=options.step)
    if precision == "fp32":
        return None, {}
    reduced = replace(options.reduced, scheme=SYMMETRIC)
    result = make_plan(fp32_path, spec, precision, options=reduced, progress=options.progress)
    conversion = quantize(fp32_path, result.plan, result.ranges, output=folder / onnx_file, scheme=SYMMETRIC) if precision == "int8" else {}
    # FP16: the engine stores what the FP16 layers write in FP16; the same storage emulation as the
    # ONNX FP16 export estimates it here (plan and plain), and a plan that overflows is refused.
    storage = require_finite_storage(fp32_path, result.plan, validation_batch(options, spec), spec=spec) if precision == "fp16" else None
    return result.plan, write_plan(
        result,
        folder,
        scheme="tensorrt (symmetric int8, zero point 0)" if precision == "int8" else None,
        conversion=conversion,
        **({"fp16_storage_check": storage} if storage else {}),
    )


def export(model, spec: ModelSpec, options: ExportOptions) -> Artifact:
    """With TensorRT and a GPU: the engine(s). With options.backend_options["engine"] False (deploy for a device, where
    engines must be built): the ONNX, the plan and the recipe, without TensorRT."""
    from evitdeploy.graph import default_opset, with_dynamic_axes, write_decoder_graph

    trt = import_tensorrt() if options.backend_options["engine"] else None
    identity = gpu_identity() if options.backend_options["engine"] else {}
    spec = with_dynamic_axes(spec, options.dynamic_axes)  # the ONNX input's dynamic axes match the profile's range
    shape_range = shapes(spec, options.profile)
    with staged_folder(options.output) as staging, tempfile.TemporaryDirectory(prefix="evitdeploy-trt-") as scratch:
        first_onnx = PROMPTABLE_FILES["encoder"] if spec.promptable else ONNX_FILE
        plan, sections = prepare_onnx(model, spec, options.precision, folder=staging, scratch=Path(scratch), options=options, onnx_file=first_onnx)
        if spec.promptable:
            options.step("exporting the prompt decoder (FP32, dynamic number of points)")
            write_decoder_graph(model.decoder(spec.decoder_masks), spec, staging / PROMPTABLE_FILES["decoder"], opset=default_opset(spec), simplify=True)
        builds = engine_builds(spec, options.precision, plan=plan, shape_range=shape_range)
        commands = [trtexec_command(spec, b.precision, plan=b.plan, shape_range=b.shapes, onnx_file=b.onnx, engine_file=b.engine) for b in builds]
        write_text(staging / RECIPE_FILE, build_script(commands[0], "evitdeploy build .", then=commands[1:]))
        engines = {b.role: {"file": b.engine, "built": False, "recipe": RECIPE_FILE} for b in builds}
        if trt is not None:
            for role, info in build_engines(trt, staging, spec, builds=builds, gpu=identity["gpu"], step=options.step).items():
                engines[role].update(built=True, **info, **identity)
        models = {b.role: b.engine if trt is not None else b.onnx for b in builds}
        export_section = {
            "engine": engines[builds[0].role],
            "onnx": builds[0].onnx,
            "shapes": {k: list(v) for k, v in shape_range.items()},
            "trtexec": commands[0],
            **identity,
        }
        if spec.promptable:
            decoder = builds[1]
            export_section["decoder"] = {
                "engine": engines["decoder"],
                "onnx": decoder.onnx,
                "precision": decoder.precision,
                "trtexec": commands[1],
                "shapes": {name: {k: list(v) for k, v in bounds.items()} for name, bounds in decoder.shapes.items()},
            }
            sections["models"] = models
        manifest = build_manifest(
            staging,
            "trt",
            options.precision,
            spec=spec,
            model_file=models[builds[0].role],
            source=options.source,
            export=export_section,
            validation={"checks": [{"skipped": "the engine is checked where it is built: `evitdeploy build` on the device"}]},
            **sections,
            toolchain={**package_versions(*TOOLCHAIN), **({"tensorrt": trt.__version__} if trt else {})},
        )
        write_json(staging / "manifest.json", manifest)
    folder = Path(options.output)
    return Artifact(folder, folder / manifest["model_file"], "trt", precision=options.precision, spec=spec, manifest=manifest)
