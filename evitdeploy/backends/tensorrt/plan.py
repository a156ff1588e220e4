"""The shared precision plan as TensorRT layer precisions, and the recipe to build on the device.

Engines are tied to the GPU model and the TensorRT version, so for a Jetson the deliverable is the
ONNX + the plan + a recipe run there. Nothing here imports TensorRT.

TensorRT >= 10 (strongly typed, the default; the only way TensorRT 11 has): the plan travels in the
ONNX graph's types (precision.fp16: FP16 tensors but the plan's FP32 islands; INT8: the plan's Q/DQ
in the TensorRT scheme, symmetric int8 with zero point 0, its float remainder typed the same way),
and the recipe says `--stronglyTyped`. TensorRT < 10 (JetPack 5, weakly typed): the FP32 or Q/DQ
graph, the FP16/INT8 flags, and the plan's FP32 nodes as layer precisions under "obey" (the build
fails rather than silently run them in FP16); the device module maps layers to nodes.

A promptable (SAM) model is two engines: the encoder, built like any model from its ONNX and the
plan, and the prompt decoder, FP32, with its own optimization profile over the number of prompt
points (`decoder_shapes`).
"""

from __future__ import annotations

import shlex
from typing import Optional, Sequence

from evitdeploy.backends.tensorrt.device import STRONG, plan_fp32_nodes
from evitdeploy.device.prompts import DECODER_INPUTS
from evitdeploy.precision.plan import PrecisionPlan
from evitdeploy.errors import UserError
from evitdeploy.spec import ModelSpec

ENGINE_FILE = "model.engine"
PROMPTABLE_ENGINES = {"encoder": "encoder.engine", "decoder": "decoder.engine"}  # a SAM artifact's two engines
TIMING_CACHE_FILE = "timing.cache"
DEFAULT_WORKSPACE_MIB = 4096
# The decoder's profile over prompt rows (N of point_coords (1, N, 2)): a prompt is its points plus
# SAM's padding point, or plus a box's two corners, so up to 16 points with a box is 18 rows (and
# `bench`'s 16-point prompt is 17). opt 2: one click (+ padding) or one box, the commonest prompt
# (5 of the 8 parity prompts); TensorRT tunes its kernels for opt and runs the others with them.
DECODER_ROWS = {"min": 1, "opt": 2, "max": 18}


def fp32_nodes(plan: PrecisionPlan) -> list[str]:
    """The nodes the plan pins to FP32 (rules, ranges, the search); layout ops follow their neighbours."""
    return plan_fp32_nodes(plan.to_dict())


def shapes(spec: ModelSpec, profile=None) -> dict[str, tuple[int, ...]]:
    """min/opt/max input shapes for the optimization profile: opt is the spec's shape; a profile's
    `[input] min`/`max` give the dynamic axes' range (static axes stay fixed)."""
    opt = tuple(spec.input_shape)
    low, high = list(opt), list(opt)
    if profile is not None and profile.dynamic:
        axes = {"batch": 0, "height": 2, "width": 3}
        for i, axis in enumerate(profile.dynamic):
            if profile.shape_min:
                low[axes[axis]] = profile.shape_min[i]
            if profile.shape_max:
                high[axes[axis]] = profile.shape_max[i]
    if any(lo > o or o > hi for lo, o, hi in zip(low, opt, high)):
        raise UserError(f"input {list(opt)} is outside the profile's range {low} .. {high}", "choose --height/--width/--batch inside it")
    return {"min": tuple(low), "opt": opt, "max": tuple(high)}


def decoder_shapes(spec: ModelSpec) -> dict[str, dict[str, tuple[int, ...]]]:
    """The prompt decoder's optimization profile by input name: batch 1, the image embedding and
    the mask input static, the prompt rows over DECODER_ROWS."""
    side = 4 * spec.embedding[-1]  # the low-resolution mask SAM's decoder takes and gives
    static = {"image_embeddings": (1, *spec.embedding), "mask_input": (1, 1, side, side), "has_mask_input": (1,)}
    ranges = {
        **{name: dict.fromkeys(("min", "opt", "max"), shape) for name, shape in static.items()},
        "point_coords": {k: (1, rows, 2) for k, rows in DECODER_ROWS.items()},
        "point_labels": {k: (1, rows) for k, rows in DECODER_ROWS.items()},
    }
    return {name: ranges[name] for name in DECODER_INPUTS}


def named_ranges(spec: ModelSpec, shape_range: dict) -> dict[str, dict]:
    """{input name: {"min", "opt", "max"}}: a model's several named inputs as given, or the range
    of the spec's one input (what `shapes` returns)."""
    return {spec.input_name: shape_range} if set(shape_range) == {"min", "opt", "max"} else shape_range


def _dims(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def trtexec_command(
    spec: ModelSpec,
    precision: str,
    plan: Optional[PrecisionPlan],
    shape_range: dict,
    onnx_file: str = "model.onnx",
    workspace_mib: int = DEFAULT_WORKSPACE_MIB,
    engine_file: str = ENGINE_FILE,
    mode: str = STRONG,
    dla_core: Optional[int] = None,
) -> list[str]:
    """The trtexec build of this ONNX with this plan, timed the way published figures were
    (`--separateProfileRun --iterations=100 --duration=0`). `shape_range`: see `named_ranges`;
    several inputs go in one flag each, comma-separated (`--minShapes=a:1x2,b:1`). STRONG: the
    graph's types are the plan (`--stronglyTyped`); WEAK (TensorRT < 10): builder flags and the
    plan's FP32 nodes as layer precisions. `dla_core`: on that DLA, falling back to the GPU, with
    the layer report (which layers ran where) written beside the engine."""
    ranges = named_ranges(spec, shape_range)
    command = [
        "trtexec",
        f"--onnx={onnx_file}",
        f"--saveEngine={engine_file}",
        f"--timingCacheFile={TIMING_CACHE_FILE}",
        f"--memPoolSize=workspace:{workspace_mib}M",
        *(f"--{which}Shapes=" + ",".join(f"{name}:{_dims(bounds[which])}" for name, bounds in ranges.items()) for which in ("min", "opt", "max")),
    ]
    if mode == STRONG:
        command.append("--stronglyTyped")
    else:
        if precision in ("fp16", "int8"):
            command.append("--fp16")
        if precision == "int8":
            command.append("--int8")  # explicit quantization: the Q/DQ in the ONNX decide the int8 layers
        pinned = fp32_nodes(plan) if plan is not None and precision != "fp32" else []
        if pinned:
            spec_list = ",".join(f"{node}:fp32" for node in pinned)
            command += ["--precisionConstraints=obey", f"--layerPrecisions={spec_list}", f"--layerOutputTypes={spec_list}"]
    if dla_core is not None:
        command += [f"--useDLACore={dla_core}", "--allowGPUFallback", "--profilingVerbosity=detailed", f"--exportLayerInfo={engine_file}.layers.json"]
    command += ["--separateProfileRun", "--iterations=100", "--duration=0"]
    return command


def build_script(command: list[str], bundle_command: str, then: Sequence[list[str]] = ()) -> str:
    """build_engine.sh: the trtexec build (and `then` the others: a promptable model's decoder),
    and the equivalent evitdeploy command."""
    engines = "engines on the device they" if then else "engine on the device it"
    return (
        "#!/bin/sh\n"
        f"# Build the TensorRT {engines} will run on (engines are tied to the GPU and the\n"
        "# TensorRT version). The same build, with parity against reference.npz, from evitdeploy:\n"
        f"#   {bundle_command}\n"
        'set -e\ncd "$(dirname "$0")"\n' + "\n".join(" \\\n    ".join(shlex.quote(part) for part in each) for each in (command, *then)) + "\n"
    )
