"""How the shared precision plan maps onto OpenVINO: NNCF's INT8, told by the plan what to leave alone.

INT8 = `nncf.quantize` of the FP32 IR on the plan's calibration images, with the OpenVINO ops the
plan's FP32 nodes became as its ignored scope, and NNCF's settings moved to what our plan assumes:
global min/max activation ranges (NNCF's default averages per-image extremes and clips the worst
image), no bias correction, PERFORMANCE preset (symmetric), and NNCF's overflow fix (7-bit weights)
on every layer unless the model is for VNNI kernels only: oneDNN's x86 kernels without VNNI sum
u8 x s8 pairs in a saturating int16 (evitdeploy.device.cpu). Measured on the
trained digits references (benchmarks/openvino_cpu.py): per-image min cosine B0 0.996, B1 0.994,
where NNCF's default INT8 keeps 0.53 and 0.74, at NNCF's default's speed (1.00x at B1, 1.03x at
Seg-B1). Our ONNX QDQ read by OpenVINO was as accurate but 0.84-0.88x that speed: its integer
HardSwish rewrite (for ONNX Runtime) runs as separate u8 element-wise kernels in OpenVINO.

Float inference precision: bf16 where the CPU has it, f32 elsewhere, always explicit. BF16's FP32
islands: the plan records them (the attention core), but OpenVINO 2026.4's CPU plugin takes no
per-node precision from the IR (rt_info disable_fp16_compression_0 / precise_0 are ignored at
bf16, measured), so the float graph runs bf16 as a whole and the export's validation against
PyTorch at bf16 tolerances is what proves the artifact.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

from evitdeploy.errors import UserError

FLOAT_PRECISION = {"fp32": "f32", "bf16": "bf16"}
INERT = ("Parameter", "Result", "Constant")


def float_precision(precision: str, cpu_has_bf16: bool, int8_kernels: str = "vnni") -> str:
    """The CPU plugin's inference precision for an artifact of this precision on this CPU. An INT8
    model for any x86 (or AVX2-only) CPU keeps its float remainder at f32: many such CPUs have no
    BF16, and OpenVINO refuses a bf16 model there."""
    if precision == "bf16" and not cpu_has_bf16:
        raise UserError(
            "this CPU has no BF16 (OpenVINO needs AVX512-BF16 or AMX for --precision bf16)",
            "export --precision fp32 or int8 here, or export bf16 on the CPU it will run on",
        )
    if precision == "int8":
        return "bf16" if cpu_has_bf16 and int8_kernels == "vnni" else "f32"
    return FLOAT_PRECISION[precision]


def ops_of_nodes(onnx_path: Path, model, nodes) -> dict[str, list[str]]:
    """For each ONNX node, the OpenVINO ops its frontend made from it. Most keep the node's name;
    a Conv/Gemm with bias becomes `<name>/WithoutBiases` + an Add named `<name>` (or after the graph
    output it feeds); LayerNormalization becomes anonymous MVN/Multiply ops before its Add, which
    belong to the node every consumer of theirs belongs to. Transposes folded into a MatMul leave
    no op of their own."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    names = {node.name for node in graph.node}
    producer = {output: node.name for node in graph.node for output in node.output}
    ops = [op for op in model.get_ordered_ops() if op.get_type_name() not in INERT]
    owner: dict[str, str] = {}
    for op in ops:
        name = op.get_friendly_name()
        parts = name.split("/")
        prefix = next(("/".join(parts[:i]) for i in range(len(parts) - 1, 0, -1) if "/".join(parts[:i]) in names), None)
        tensor = next((t for out in op.outputs() for t in out.get_names() if t in producer), None)
        found = name if name in names else prefix or (producer[tensor] if tensor else None)
        if found:
            owner[name] = found
    for op in reversed(ops):  # anonymous ops: owned by the one node all their consumers belong to
        name = op.get_friendly_name()
        consumers = {owner.get(target.get_node().get_friendly_name()) for out in op.outputs() for target in out.get_target_inputs()}
        if name not in owner and len(consumers) == 1 and None not in consumers:
            owner[name] = consumers.pop()
    wanted = {node: [] for node in nodes}
    for op_name, node in owner.items():
        if node in wanted:
            wanted[node].append(op_name)
    return wanted


def quantize(model, onnx_path: Path, result) -> tuple[object, dict]:
    """The INT8 ov.Model following the plan, and what the manifest records about it."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    kept = [d.node for d in result.plan.decisions if d.precision == "fp32"]
    mapped = ops_of_nodes(onnx_path, model, kept)
    ignored = sorted({name for names in mapped.values() for name in names})
    images = result.calibration.inputs
    seven_bit = result.plan.settings.get("weight_bits", 8) == 7
    advanced = AdvancedQuantizationParameters(
        activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX,
        disable_bias_correction=True,
        overflow_fix=OverflowFix.ENABLE if seven_bit else OverflowFix.DISABLE,
    )
    nncf.set_log_level(logging.ERROR)
    with contextlib.redirect_stdout(sys.stderr):  # its progress bars: stdout is for --json
        quantized = nncf.quantize(
            model,
            nncf.Dataset([images[i : i + 1] for i in range(len(images))]),
            subset_size=len(images),
            preset=nncf.QuantizationPreset.PERFORMANCE,
            ignored_scope=nncf.IgnoredScope(names=ignored, validate=False),
            advanced_parameters=advanced,
        )
    return quantized, {
        "quantizer": "nncf.quantize (PERFORMANCE preset, MINMAX ranges, no bias correction, "
        + ("overflow fix on every layer: 7-bit weights)" if seven_bit else "no overflow fix: full 8-bit weights, for VNNI kernels)"),
        "ignored_ops": len(ignored),
        "plan_fp32_nodes_without_an_op": sum(1 for names in mapped.values() if not names),  # Transposes folded into MatMul
        "calibration_images": int(len(images)),
    }


def quantize_naive(model, result) -> tuple[object, dict]:
    """NNCF's INT8 as most people call it (`nncf.quantize(model, dataset)`, its defaults) on the
    plan's calibration images: the baseline the plan is measured against."""
    import nncf

    images = result.calibration.inputs
    nncf.set_log_level(logging.ERROR)
    with contextlib.redirect_stdout(sys.stderr):
        quantized = nncf.quantize(model, nncf.Dataset([images[i : i + 1] for i in range(len(images))]), subset_size=len(images))
    return quantized, {"naive": "nncf.quantize with its defaults", "calibration_images": int(len(images))}


def fake_quantize_count(model) -> int:
    return sum(1 for op in model.get_ordered_ops() if op.get_type_name() == "FakeQuantize")
