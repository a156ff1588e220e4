"""The shared precision plan as TensorRT layer precisions, and the recipe to build on the device.

Engines are tied to the GPU model and the TensorRT version, so for a Jetson the deliverable is the
ONNX + the plan + a recipe run there. Nothing here imports TensorRT.

Names: TensorRT's ONNX parser names each layer after the ONNX node it came from; a node that
becomes several layers gives "NODE", "NODE_1", ... or "NODE_output"-style suffixes, and the parser's
own constants are "(Unnamed Layer* N) [Constant]". So a layer belongs to the ONNX node whose name is
the layer's name or its longest prefix ending at a "_", "/" or " " boundary; unnamed layers follow
no node and keep the builder's choice.

FP16: the plan's FP32 nodes become layer precision FP32 with FP32 output types, under
OBEY_PRECISION_CONSTRAINTS (the build fails rather than silently run them in FP16). INT8: the ONNX
carries Q/DQ in the TensorRT scheme (symmetric int8, zero point 0, per-channel weights), which is
explicit quantization; the plan's float nodes have no Q/DQ and run in FP16/FP32 (FP16 flag on, plan
FP32 nodes pinned as above).
"""

from __future__ import annotations

import shlex
from typing import Iterable, Optional

from evitdeploy.precision.plan import PrecisionPlan
from evitdeploy.errors import UserError
from evitdeploy.spec import ModelSpec

ENGINE_FILE = "model.engine"
TIMING_CACHE_FILE = "timing.cache"
DEFAULT_WORKSPACE_MIB = 4096
BOUNDARIES = ("_", "/", " ", ":")


def node_of_layer(layer: str, nodes: Iterable[str]) -> Optional[str]:
    """The ONNX node a TensorRT layer came from (see the module docstring), or None."""
    if layer.startswith("(Unnamed Layer"):
        return None
    best = None
    for node in nodes:
        if layer == node:
            return node
        if layer.startswith(node) and layer[len(node)] in BOUNDARIES and (best is None or len(node) > len(best)):
            best = node
    return best


def fp32_nodes(plan: PrecisionPlan) -> list[str]:
    """The nodes the plan pins to FP32 (rules, ranges, the search); layout ops follow their neighbours."""
    return [d.node for d in plan.decisions if d.precision == "fp32" and not d.reason.startswith("layout")]


def layer_precisions(plan: PrecisionPlan, layers: Iterable[str]) -> dict[str, str]:
    """Layer name -> "fp32" for every TensorRT layer of a node the plan pins to FP32."""
    pinned = set(fp32_nodes(plan))
    nodes = [d.node for d in plan.decisions]
    result = {}
    for layer in layers:
        node = node_of_layer(layer, nodes)
        if node in pinned:
            result[layer] = "fp32"
    return result


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


def _dims(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def trtexec_command(
    spec: ModelSpec, precision: str, plan: Optional[PrecisionPlan], shape_range: dict, onnx_file: str = "model.onnx",
    workspace_mib: int = DEFAULT_WORKSPACE_MIB,
) -> list[str]:
    """The trtexec build of this ONNX with this plan, timed the way published figures were
    (`--separateProfileRun --iterations=100 --duration=0`)."""
    command = [
        "trtexec", f"--onnx={onnx_file}", f"--saveEngine={ENGINE_FILE}", f"--timingCacheFile={TIMING_CACHE_FILE}",
        f"--memPoolSize=workspace:{workspace_mib}M",
        f"--minShapes={spec.input_name}:{_dims(shape_range['min'])}",
        f"--optShapes={spec.input_name}:{_dims(shape_range['opt'])}",
        f"--maxShapes={spec.input_name}:{_dims(shape_range['max'])}",
    ]
    if precision in ("fp16", "int8"):
        command.append("--fp16")
    if precision == "int8":
        command.append("--int8")  # explicit quantization: the Q/DQ in the ONNX decide the int8 layers
    pinned = fp32_nodes(plan) if plan is not None and precision != "fp32" else []
    if pinned:
        spec_list = ",".join(f"{node}:fp32" for node in pinned)
        command += ["--precisionConstraints=obey", f"--layerPrecisions={spec_list}", f"--layerOutputTypes={spec_list}"]
    command += ["--separateProfileRun", "--iterations=100", "--duration=0"]
    return command


def build_script(command: list[str], bundle_command: str) -> str:
    """build_engine.sh: the trtexec build, and the equivalent evitdeploy command."""
    return (
        "#!/bin/sh\n"
        "# Build the TensorRT engine on the device it will run on (engines are tied to the GPU and the\n"
        "# TensorRT version). The same build, with parity against reference.npz, from evitdeploy:\n"
        f"#   {bundle_command}\n"
        "set -e\ncd \"$(dirname \"$0\")\"\n"
        + " \\\n    ".join(shlex.quote(part) for part in command)
        + "\n"
    )
