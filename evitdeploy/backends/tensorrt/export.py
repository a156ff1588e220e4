"""ONNX + precision plan -> TensorRT engine(s), built by the device module's `build_engine` (the
code a bundle's verify.py runs on a Jetson), here only where TensorRT and a GPU are.

The graph carries the plan: strongly typed (TensorRT >= 10, the default, the only way TensorRT 11
has) it is the typed FP16 graph ONNX Runtime's FP16 artifact is too (precision.fp16: FP16 but the
plan's FP32 islands), or the plan's Q/DQ graph in the TensorRT scheme (symmetric int8, zero point
0) with its float remainder typed the same way. Weakly typed (TensorRT < 10, JetPack 5): the FP32
or Q/DQ graph, with builder flags and the plan's FP32 nodes pinned as layer precisions. Which one
is chosen from the TensorRT found here, else the profile's expected TensorRT, else >= 10; the
choice and the flags it means are recorded in the manifest (`export.typing`).

One optimization profile from the spec/profile shapes; workspace limit; timing cache read and
written. A promptable (SAM) model is two engines: its encoder as above, its prompt decoder FP32
(`engine_builds`). TensorRT cannot be installed on this project's CI host: the device module's
`TRT_NAMES` are checked against TensorRT 10's and 11's APIs instead.
"""

from __future__ import annotations

import tempfile
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
    fp32_nodes,
    shapes,
    trtexec_command,
)
from evitdeploy.precision.plan import PrecisionPlan
from evitdeploy.spec import ModelSpec

ONNX_FILE = "model.onnx"
RECIPE_FILE = "build_engine.sh"
# Distributions whose installed versions the manifest's toolchain records.
TOOLCHAIN = ("torch", "onnx", "onnxruntime", "numpy")


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


def build_engines(
    trt,
    folder: Path,
    builds: list[EngineBuild],
    *,
    mode: str,
    gpu: str,
    workspace_mib: int = DEFAULT_WORKSPACE_MIB,
    step: Optional[Callable[[str], None]] = None,
    on_dla: Optional[dict] = None,
) -> dict[str, dict]:
    """Each engine built from its ONNX in `folder` by the device module's build_engine and
    written beside it, one timing cache shared; {role: what its build did}."""
    from evitdeploy.backends.tensorrt import device

    done = {}
    for build in builds:
        if step:
            step(f"building the {build.precision.upper()} {build.what} ({mode}) on {gpu} with TensorRT {trt.__version__}")
        try:
            serialized, info = device.build_engine(
                trt,
                folder / build.onnx,
                shapes=build.shapes,
                mode=mode,
                precision=build.precision,
                plan=build.plan.to_dict() if build.plan else None,
                workspace_mib=workspace_mib,
                timing_cache=folder / TIMING_CACHE_FILE,
                dla_core=(on_dla or {}).get(build.role),
            )
        except device.BuildError as exc:
            raise UserError(exc.message, exc.hint, EXIT_CHECK_FAILED) from None
        write_bytes(folder / build.engine, serialized)
        done[build.role] = info
    return done


def tensorrt_expected(device_profile) -> dict:
    """The TensorRT range a device profile's JetPack has (its `[tensorrt]` table), as the manifest
    records it and the device checks it; {} for a profile that names none."""
    table = getattr(device_profile, "tensorrt", None) or {}
    if not table:
        return {}
    text = f">= {table['min']}" + (f", < {table['below']}" if table.get("below") else "")
    return {
        **table,
        "range": text,
        "profile": device_profile.name,
        "hint": f"install JetPack {table['jetpack']} (TensorRT {text}), or deploy again with the profile of this device's JetPack",
    }


def typing_choice(trt, expected: dict) -> dict:
    """Strongly or weakly typed, and why: the TensorRT found here, else the one the profile
    expects (a JetPack 5 profile: < 10), else TensorRT >= 10 (JetPack 6/7, current servers)."""
    from evitdeploy.backends.tensorrt.device import STRONG, typing_for

    if trt is not None:
        return {"mode": typing_for(trt.__version__), "chosen_from": f"TensorRT {trt.__version__} found here"}
    if expected:
        return {"mode": typing_for(expected["min"]), "chosen_from": f"profile {expected['profile']} expects TensorRT {expected['range']}"}
    return {"mode": STRONG, "chosen_from": "default: TensorRT >= 10 (JetPack 6 and 7, servers); a JetPack 5 profile gives the weakly typed graph"}


def prepare_onnx(model, spec: ModelSpec, precision: str, folder: Path, scratch: Path, options: ExportOptions, *, mode: str, onnx_file: str = ONNX_FILE):
    """The model's ONNX for TensorRT and the plan. Strongly typed: the typed FP16 graph, or the
    TensorRT-scheme Q/DQ graph with its float remainder typed. Weakly typed: the FP32 graph, or
    the Q/DQ graph with a float32 remainder (the builder flags and pinned layers do the rest)."""
    from dataclasses import replace

    from evitdeploy.graph import default_opset, write_graph

    from evitdeploy.backends.reference import validation_batch
    from evitdeploy.backends.tensorrt.device import STRONG
    from evitdeploy.precision import fp16
    from evitdeploy.precision.qdq import SYMMETRIC, quantize
    from evitdeploy.precision.pipeline import make_plan, write_plan

    output = folder / onnx_file
    fp32_path = output if precision == "fp32" or (precision == "fp16" and mode != STRONG) else scratch / "fp32.onnx"
    write_graph(model, spec, fp32_path, opset=default_opset(spec), simplify=True, step=options.step)
    if precision == "fp32":
        return None, {}
    reduced = replace(options.reduced, scheme=SYMMETRIC)
    result = make_plan(fp32_path, spec, precision, options=reduced, progress=options.progress)
    conversion = {}
    if precision == "int8":
        qdq_path = output if mode != STRONG else scratch / "qdq.onnx"
        conversion = quantize(fp32_path, result.plan, result.ranges, output=qdq_path, scheme=SYMMETRIC)
        if mode == STRONG:
            options.step("typing the Q/DQ graph's float remainder FP16 where the plan allows (strongly typed)")
            conversion["typed"] = fp16.convert_quantized(qdq_path, result.plan, output, fp16_io=reduced.fp16_io)
    elif mode == STRONG:
        options.step("writing the typed FP16 graph following the plan (strongly typed)")
        conversion = fp16.convert(fp32_path, result.plan, output, fp16_io=reduced.fp16_io)
    # FP16: the engine stores what the FP16 layers write in FP16; the same storage emulation as the
    # ONNX FP16 export estimates it here (plan and plain), and a plan that overflows is refused.
    storage = fp16.require_finite_storage(fp32_path, result.plan, validation_batch(options, spec), spec=spec) if precision == "fp16" else None
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

    from evitdeploy.backends.tensorrt.device import flag_choices

    trt = import_tensorrt() if options.backend_options["engine"] else None
    identity = gpu_identity() if options.backend_options["engine"] else {}
    expected = tensorrt_expected(options.profile)
    typing = typing_choice(trt, expected)
    dla_core = None if options.backend_options.get("dla_core", "none") == "none" else int(options.backend_options["dla_core"])
    mode = typing["mode"]
    spec = with_dynamic_axes(spec, options.dynamic_axes)  # the ONNX input's dynamic axes match the profile's range
    shape_range = shapes(spec, options.profile)
    with staged_folder(options.output) as staging, tempfile.TemporaryDirectory(prefix="evitdeploy-trt-") as scratch:
        first_onnx = PROMPTABLE_FILES["encoder"] if spec.promptable else ONNX_FILE
        plan, sections = prepare_onnx(model, spec, options.precision, folder=staging, scratch=Path(scratch), options=options, mode=mode, onnx_file=first_onnx)
        if spec.promptable:
            options.step("exporting the prompt decoder (FP32, dynamic number of points)")
            write_decoder_graph(model.decoder(spec.decoder_masks), spec, staging / PROMPTABLE_FILES["decoder"], opset=default_opset(spec), simplify=True)
        builds = engine_builds(spec, options.precision, plan=plan, shape_range=shape_range)
        on_dla = {b.role: dla_core if b.role != "decoder" else None for b in builds}  # a SAM decoder stays FP32, on the GPU
        commands = [
            trtexec_command(spec, b.precision, plan=b.plan, shape_range=b.shapes, onnx_file=b.onnx, engine_file=b.engine, mode=mode, dla_core=on_dla[b.role])
            for b in builds
        ]
        write_text(staging / RECIPE_FILE, build_script(commands[0], "evitdeploy build .", then=commands[1:]))
        engines = {b.role: {"file": b.engine, "built": False, "recipe": RECIPE_FILE} for b in builds}
        if trt is not None:
            for role, info in build_engines(trt, staging, builds, mode=mode, gpu=identity["gpu"], step=options.step, on_dla=on_dla).items():
                engines[role].update(built=True, **info, **identity)
        models = {b.role: b.engine if trt is not None else b.onnx for b in builds}

        def recorded(build: EngineBuild, command: list[str]) -> dict:
            """What the device's build_engine reads back (engine_for), and the trtexec line."""
            pinned = bool(build.plan and fp32_nodes(build.plan))
            return {
                "engine": engines[build.role],
                "onnx": build.onnx,
                "precision": build.precision,
                "named_shapes": {name: {k: list(v) for k, v in bounds.items()} for name, bounds in build.shapes.items()},
                "workspace_mib": DEFAULT_WORKSPACE_MIB,
                "flags": flag_choices(mode, build.precision, pinned=pinned, dla=on_dla[build.role] is not None),
                "trtexec": command,
                **({"dla_core": on_dla[build.role]} if on_dla[build.role] is not None else {}),
            }

        export_section = {
            **recorded(builds[0], commands[0]),
            "shapes": {k: list(v) for k, v in shape_range.items()},
            "typing": typing,
            **({"tensorrt_expected": expected} if expected else {}),
            **identity,
        }
        if spec.promptable:
            export_section["decoder"] = recorded(builds[1], commands[1])
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
