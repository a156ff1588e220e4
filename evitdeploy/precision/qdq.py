"""INT8 QDQ ONNX following a precision plan (onnxruntime.quantization with our measured ranges).

The plan says *where* (backend-neutral); the scheme says *how* for a runtime:
- "asymmetric-u8" (ONNX Runtime, OpenVINO): uint8 asymmetric activations and int8 per-channel symmetric weights, the u8s8
  path ONNX Runtime's CPU kernels (VNNI) are fastest on;
- "symmetric-s8" (TensorRT): int8 symmetric activations (zero point 0) and per-channel symmetric weights, the
  only form TensorRT accepts, with Q/DQ placed as NVIDIA's explicit-quantization guide recommends:
  on the inputs of weighted ops (Conv) and of residual Adds, not on a Conv's output that feeds its
  activation or a residual Add. A Q/DQ pair there would split the Conv from the HardSwish/Add that
  TensorRT otherwise fuses into the convolution's epilogue (one kernel, int8 out); the plan's
  HardSwish nodes therefore run fused rather than as their own int8 kernels.

Why naive INT8 EfficientViT is slower than FP32 on ONNX Runtime CPU (measured, B1 at 224): the
convolutions do get 2x faster as QLinearConv, but every HardSwish has no integer kernel, so each
one becomes DequantizeLinear -> HardSigmoid -> Mul -> QuantizeLinear in float, plus layout
transposes between ONNX Runtime's NHWC integer and NCHWc float kernels: about half the time. For
the asymmetric scheme we therefore rewrite Q/DQ around HardSwish into integer ops: with
x = s*(q - z), hardsigmoid(x) = clip(x/6 + 1/2, 0, 1) is exactly q itself read with scale s/6 and
zero point z - 3/s and clipped, so HardSwish = QLinearMul(q, Clip(q)): two passes over uint8 data,
no float round trip. The activation range before a HardSwish is widened to include -3 so that zero
point is representable (at most a few levels of resolution).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from evitdeploy.precision.plan import INT8_OPS, PrecisionPlan
from evitdeploy.precision.ranges import Ranges

ASYMMETRIC, SYMMETRIC = "asymmetric-u8", "symmetric-s8"  # ONNX Runtime's u8 activations / s8 weights; TensorRT's s8 with zero point 0
SCHEMES = (ASYMMETRIC, SYMMETRIC)
HARDSWISH_KNEE = 3.0  # hardswish(x) = x * clip(x + 3, 0, 6) / 6


def quantize(
    fp32_path: Path,
    plan: PrecisionPlan,
    ranges: Ranges,
    output: Path,
    scheme: str = ASYMMETRIC,
    integer_hardswish_ops: bool = True,
    weight_bits: int = 8,
) -> dict:
    """Write the QDQ model for `plan` to `output`; returns what was done, for the manifest.
    `integer_hardswish_ops=False` leaves Q/DQ around HardSwish (the benchmark's comparison point).
    `weight_bits=7` (the asymmetric scheme): the weights of every convolution that runs as a GEMM
    in [-64, 64], so x86 kernels without VNNI, whose u8 x s8 pair sums saturate in int16, compute
    them exactly (evitdeploy.device.cpu). Depthwise convolutions keep 8 bits: their kernel widens
    each product to int32 (measured under QEMU's AVX2: identical outputs), and on the trained
    digits B0 that halves the 7-bit loss (min cosine 0.9899 -> 0.9941, full 8-bit 0.9953)."""
    import onnx
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer
    from onnxruntime.quantization.quant_utils import load_model_with_shape_infer

    if scheme not in SCHEMES or weight_bits not in (7, 8):
        raise ValueError(f"scheme must be one of {SCHEMES}, weight_bits 7 or 8")
    model = load_model_with_shape_infer(Path(fp32_path))
    int8_nodes = plan.nodes_in("int8")
    rewrite = scheme == ASYMMETRIC and integer_hardswish_ops
    widened = _hardswish_inputs(model, set(int8_nodes)) if rewrite else set()
    intervals = {}
    for name in ranges.tensors:
        low, high = ranges.interval(name, plan.method)
        if name in widened:
            low = min(low, -HARDSWISH_KNEE)
        intervals[name] = TensorData(lowest=np.float32(min(low, 0.0)), highest=np.float32(max(high, 0.0)))
    symmetric = scheme == SYMMETRIC
    reduce_range = weight_bits == 7 and not symmetric  # TensorRT's GPU kernels sum int8 products in int32
    seven_bit = gemm_conv_weights(model, set(int8_nodes)) if reduce_range else []
    op_types = [op for op in INT8_OPS if not (symmetric and op == "HardSwish")]  # TensorRT fuses it into the Conv
    quantizer = QDQQuantizer(
        model,
        True,  # per-channel weights
        False,  # reduce_range: per weight, below
        QuantType.QInt8,
        QuantType.QInt8 if symmetric else QuantType.QUInt8,
        TensorsData(CalibrationMethod.MinMax, intervals),
        int8_nodes,
        [],
        op_types,
        {
            "ActivationSymmetric": symmetric,
            "WeightSymmetric": True,
            **({"OpTypesToExcludeOutputQuantization": ["Conv"]} if symmetric else {}),
            "TensorQuantOverrides": {name: [{"reduce_range": True}] for name in seven_bit},
        },
    )
    quantizer.quantize_model()
    quantized = quantizer.model.model
    rewritten = integer_hardswish(quantized) if rewrite else 0
    epilogues = conv_epilogues(quantized) if symmetric else 0
    quantizer.model.topological_sort()  # the quantizer and the rewrite append nodes out of order
    onnx.save(quantized, str(output))
    return {
        "scheme": scheme,
        "activations": "int8 symmetric" if symmetric else "uint8 asymmetric",
        "weights": "int8 per-channel symmetric"
        + (f", 7-bit range [-64, 64] on the {len(seven_bit)} GEMM convolutions (exact on x86 without VNNI), 8-bit on depthwise ones" if reduce_range else ""),
        "quantized_nodes": len(int8_nodes),
        "integer_hardswish": rewritten,
        **({"fusable_conv_epilogues": epilogues, "placement": "inputs of Conv and residual Add (TensorRT's recommendation)"} if symmetric else {}),
        "tool": "onnxruntime.quantization.QDQQuantizer (ranges from evitdeploy calibration)",
    }


def gemm_conv_weights(model, int8_nodes: set[str]) -> list[str]:
    """Weights of the INT8 convolutions x86 runs as u8 x s8 GEMMs: every Conv but the depthwise ones."""
    shapes = {i.name: list(i.dims) for i in model.graph.initializer}
    names = []
    for node in model.graph.node:
        if node.op_type != "Conv" or node.name not in int8_nodes or node.input[1] not in shapes:
            continue
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        out_channels, per_group = shapes[node.input[1]][:2]
        if not (per_group == 1 and group == out_channels):
            names.append(node.input[1])
    return names


def _hardswish_inputs(model, int8_nodes: set[str]) -> set[str]:
    return {n.input[0] for n in model.graph.node if n.op_type == "HardSwish" and n.name in int8_nodes}


def integer_hardswish(model) -> int:
    """Replace DQ -> HardSwish -> Q with Clip(uint8) and DQ,DQ -> Mul -> Q (fused to QLinearMul).

    Returns how many HardSwish nodes were rewritten; a node whose input scale cannot give a
    representable zero point for the clip is left as it was (still correct, just float).
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    producer = {output: node for node in graph.node for output in node.output}

    def scalar(name: str):
        return numpy_helper.to_array(initializers[name]) if name in initializers else None

    rewritten = 0
    for node in list(graph.node):
        if node.op_type != "HardSwish":
            continue
        dequantize = producer.get(node.input[0])
        if dequantize is None or dequantize.op_type != "DequantizeLinear" or len(dequantize.input) < 3:
            continue
        scale, zero_point = scalar(dequantize.input[1]), scalar(dequantize.input[2])
        if scale is None or zero_point is None or scale.size != 1 or zero_point.dtype != np.uint8:
            continue
        scale, zero_point = float(scale), int(zero_point)
        gate_zero = round(zero_point - HARDSWISH_KNEE / scale)  # the uint8 level that means x = -3
        if not 0 <= gate_zero <= 255:
            continue
        gate_one = min(255, gate_zero + round(2 * HARDSWISH_KNEE / scale))  # x = +3
        prefix = node.name or node.output[0]
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.array(gate_zero, np.uint8), f"{prefix}_gate_low"),
                numpy_helper.from_array(np.array(gate_one, np.uint8), f"{prefix}_gate_high"),
                numpy_helper.from_array(np.array(scale / (2 * HARDSWISH_KNEE), np.float32), f"{prefix}_gate_scale"),
            ]
        )
        replacement = [
            helper.make_node(
                "Clip",
                [dequantize.input[0], f"{prefix}_gate_low", f"{prefix}_gate_high"],
                [f"{prefix}_gate_q"],
                name=f"{prefix}_gate_clip",
            ),
            helper.make_node(
                "DequantizeLinear",
                [f"{prefix}_gate_q", f"{prefix}_gate_scale", f"{prefix}_gate_low"],
                [f"{prefix}_gate"],
                name=f"{prefix}_gate_dq",
            ),
            helper.make_node("Mul", [node.input[0], f"{prefix}_gate"], list(node.output), name=f"{prefix}_mul"),
        ]
        position = list(graph.node).index(node)
        graph.node.remove(node)
        for offset, new_node in enumerate(replacement):
            graph.node.insert(position + offset, new_node)
        rewritten += 1
    return rewritten


def conv_epilogues(model) -> int:
    """Drop each Q -> DQ pair between a Conv's output and the residual Add(s) reading it, so the Add
    takes the Conv's float output (TensorRT fuses Conv + Add + the Add's output Q into one int8
    kernel; the Add's other, skip input keeps its Q/DQ). Returns how many pairs were dropped."""
    graph = model.graph
    producer = {output: node for node in graph.node for output in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    removed = []
    for quantize in [n for n in graph.node if n.op_type == "QuantizeLinear"]:
        source = producer.get(quantize.input[0])
        dequantizes = consumers.get(quantize.output[0], [])
        if source is None or source.op_type != "Conv" or not dequantizes or quantize.output[0] in outputs:
            continue
        if not all(d.op_type == "DequantizeLinear" and d.output[0] not in outputs for d in dequantizes):
            continue
        readers = [r for d in dequantizes for r in consumers.get(d.output[0], [])]
        if not readers or not all(r.op_type == "Add" for r in readers):
            continue
        for d in dequantizes:
            for reader in consumers.get(d.output[0], []):
                reader.input[:] = [quantize.input[0] if name == d.output[0] else name for name in reader.input]
        removed += [quantize, *dequantizes]
    for node in removed:
        graph.node.remove(node)
    return sum(1 for node in removed if node.op_type == "QuantizeLinear")


NAIVE_QUANTIZER = (
    "onnxruntime.quantization.quantize_static (QDQ, per-channel full 8-bit s8 weights, u8 activations, every op type it knows, MinMax; "
    "on x86 without VNNI its u8 x s8 sums saturate)"
)


def naive_quantize(fp32_path: Path, output: Path, calibration: np.ndarray, method: str = "minmax", conv_only: bool = False, input_name: str = "image") -> Path:
    """The baseline plans are measured against: onnxruntime's `quantize_static` as most people
    call it (QDQ, per-channel, every op type it knows or only Conv), its own calibration."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{input_name: calibration[i : i + 1]} for i in range(len(calibration))])

        def get_next(self):
            return next(self.items, None)

    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice ("consider pre-processing") goes to the root logger, onto our output
    try:
        _quantize_static(fp32_path, output, Reader(), method=method, conv_only=conv_only)
    finally:
        root.setLevel(level)
    return Path(output)


def _quantize_static(fp32_path: Path, output: Path, reader, *, method: str, conv_only: bool) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantize_static(
        str(fp32_path),
        str(output),
        reader,
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax if method == "minmax" else CalibrationMethod.Percentile,
        op_types_to_quantize=["Conv"] if conv_only else None,
    )
