"""FP16 ONNX following a precision plan: FP16 everywhere but the plan's FP32 islands.

onnxruntime's own converter (onnxruntime.transformers.float16) does the rewrite; the plan's FP32
nodes become its block list, so Cast nodes surround each island. I/O stay float32 unless asked
(a camera pipeline hands float32; `--fp16-io` halves the input copy for pipelines that do not).

The result is a typed graph: every tensor's type says the precision it is computed and stored in.
ONNX Runtime's FP16 artifact is this graph, and so is TensorRT's (>= 10), which builds it strongly
typed instead of guessing precisions from builder flags; an INT8 plan's Q/DQ graph gets the same
treatment for its float remainder (`convert_quantized`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from evitdeploy.precision.plan import PrecisionPlan

TYPED_QDQ_OPSET = 19  # QuantizeLinear / DequantizeLinear take FP16 scales from opset 19


def convert(fp32_path: Path, plan: Optional[PrecisionPlan], output: Path, fp16_io: bool = False) -> dict:
    """Write the FP16 model; `plan=None` is the naive conversion (no islands), kept for comparisons.
    The graph is typed: TensorRT >= 10 builds it strongly typed, ONNX Runtime runs it as it is."""
    import onnx

    blocked = plan.nodes_in("fp32") if plan else []
    return {
        **_write_typed(onnx.load(str(fp32_path)), blocked, output, fp16_io=fp16_io),
        "tool": "onnxruntime.transformers.float16.convert_float_to_float16 (block list from the plan)",
    }


def convert_quantized(qdq_path: Path, plan: PrecisionPlan, output: Path, fp16_io: bool = False) -> dict:
    """The INT8 plan's Q/DQ graph with its float remainder typed FP16 except the plan's FP32 nodes:
    what TensorRT builds strongly typed. Q/DQ scales become FP16 where their neighbours are, so a
    DequantizeLinear writes FP16 straight into its FP16 consumer (no Cast between the DQ and the
    convolution TensorRT fuses with it); FP16 scales need opset 19, so older graphs are converted."""
    import onnx
    from onnx import version_converter

    model = onnx.load(str(qdq_path))
    opset = next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))
    if opset < TYPED_QDQ_OPSET:
        model = version_converter.convert_version(model, TYPED_QDQ_OPSET)
    return {
        **_write_typed(model, plan.nodes_in("fp32"), output, fp16_io=fp16_io),
        "opset": max(opset, TYPED_QDQ_OPSET),
        "tool": "onnxruntime.transformers.float16.convert_float_to_float16 over the Q/DQ graph (block list from the plan)",
    }


def _write_typed(model, blocked: list, output: Path, fp16_io: bool) -> dict:
    import onnx
    from onnxruntime.quantization.onnx_model import ONNXModel
    from onnxruntime.transformers.float16 import convert_float_to_float16

    converted = convert_float_to_float16(model, keep_io_types=not fp16_io, node_block_list=blocked)
    dropped = drop_cast_round_trips(converted)
    ONNXModel(converted).topological_sort()  # the converter appends its Cast nodes at the end
    onnx.save(converted, str(output))
    return {"fp32_nodes": len(blocked), "fp16_round_trips_removed": dropped, "fp16_io": fp16_io}


def cancelling_casts(model) -> list[str]:
    """Casts whose only readers cast straight back to the type they read: a round trip that only
    loses precision (and costs two kernels). A typed graph must have none."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.input, *graph.output]}
    types.update({i.name: i.data_type for i in graph.initializer})
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    found = []
    for node in graph.node:
        if node.op_type != "Cast" or node.output[0] in outputs or not readers.get(node.output[0]):
            continue
        source = types.get(node.input[0])
        if source and all(r.op_type == "Cast" and r.attribute[0].i == source for r in readers[node.output[0]]):
            found.append(node.name)
    return found


def drop_cast_round_trips(model) -> int:
    """Remove Cast(float16) -> Cast(float32) pairs between two FP32 nodes.

    The converter wraps every blocked node in its own casts, so a tensor passing between two FP32
    nodes (k^T v inside the LiteMLA island) would still be stored in FP16 and overflow: an island
    of FP32 nodes must also keep its inner tensors FP32. A pair ending in a graph output (an FP32
    last node, its output cast down and back up for float32 I/O) becomes an Identity.
    """
    from onnx import TensorProto

    graph = model.graph
    outputs = {o.name for o in graph.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def cast_to(node, dtype) -> bool:
        return node.op_type == "Cast" and any(a.name == "to" and a.i == dtype for a in node.attribute)

    removed, pairs = set(), 0
    for down in list(graph.node):
        if not cast_to(down, TensorProto.FLOAT16) or down.output[0] in outputs:
            continue
        ups = consumers.get(down.output[0], [])
        if not ups or not all(cast_to(up, TensorProto.FLOAT) for up in ups):
            continue
        for up in ups:
            if up.output[0] in outputs:
                up.op_type = "Identity"
                del up.attribute[:]
                up.input[:] = [down.input[0]]
                continue
            for reader in consumers.get(up.output[0], []):
                reader.input[:] = [down.input[0] if name == up.output[0] else name for name in reader.input]
            removed.add(id(up))
        removed.add(id(down))
        pairs += 1
    kept = [node for node in graph.node if id(node) not in removed]
    del graph.node[:]
    graph.node.extend(kept)
    return pairs


def storage_emulation(fp32_path: Path, plan: Optional[PrecisionPlan], output: Path) -> dict:
    """An FP32 graph that rounds what FP16 would store: every tensor an FP16 node writes goes
    through Cast(float16) -> Cast(float32), and weights read only by FP16 nodes are rounded.

    Why: ONNX Runtime's CPU provider runs an FP16 model by casting chains of ops it has no FP16
    kernel for back to FP32 *without* the casts in between, so an FP16 overflow inside LiteMLA
    (k^T v past 65504) or eps rounding to 0 never shows there. This graph shows it on any CPU: FP16
    storage with FP32 arithmetic inside an op, which is what GPU FP16 kernels (FP32 accumulation)
    do. `plan=None` emulates plain FP16 (every node FP16).
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from evitdeploy.precision.ranges import float_tensors

    model = onnx.load(str(fp32_path))
    graph = model.graph
    fp32_nodes = set(plan.nodes_in("fp32")) if plan else set()
    written_as_float = float_tensors(model)
    consumers: dict[str, set[str]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, set()).add(node.name)
    rounded = 0
    for initializer in graph.initializer:
        if initializer.data_type == TensorProto.FLOAT and consumers.get(initializer.name) and not consumers[initializer.name] & fp32_nodes:
            values = numpy_helper.to_array(initializer).astype(np.float16).astype(np.float32)
            initializer.CopyFrom(numpy_helper.from_array(values, initializer.name))
            rounded += 1
    nodes, stored = [], 0
    for node in graph.node:
        nodes.append(node)
        if node.name in fp32_nodes:
            continue
        for index, name in enumerate(node.output):
            if name not in written_as_float:
                continue
            node.output[index] = f"{name}__fp32"
            nodes.append(helper.make_node("Cast", [f"{name}__fp32"], [f"{name}__fp16"], to=TensorProto.FLOAT16, name=f"{name}__to_fp16"))
            nodes.append(helper.make_node("Cast", [f"{name}__fp16"], [name], to=TensorProto.FLOAT, name=f"{name}__from_fp16"))
            stored += 1
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(model, str(output))
    return {"rounded_weights": rounded, "fp16_tensors": stored}


def storage_check(fp32_path: Path, plan: PrecisionPlan, inputs, spec) -> dict:
    """FP16 numerics of the plan and of plain FP16 on this CPU (see storage_emulation):
    non-finite outputs and agreement with the FP32 graph on the validation images."""
    import tempfile

    from evitdeploy.precision.evaluate import outputs_of, score_outputs

    reference = outputs_of(fp32_path, inputs, spec.input_name)
    report = {}
    with tempfile.TemporaryDirectory(prefix="evitdeploy-fp16-") as scratch:
        for label, candidate_plan in (("planned", plan), ("plain", None)):
            emulated = Path(scratch) / f"{label}.onnx"
            storage_emulation(fp32_path, candidate_plan, emulated)
            scores = score_outputs(spec, reference, outputs_of(emulated, inputs, spec.input_name, optimize=False))
            report[label] = {k: scores[k] for k in ("nonfinite", "cosine_min", "max_abs_error")}
    return report


def require_finite_storage(fp32_path: Path, plan: PrecisionPlan, inputs, spec) -> dict:
    """storage_check, refusing the export (exit 1, nothing written) if the plan still overflows:
    every FP16 target (ONNX, TensorRT) ships only a plan whose FP16 storage stays finite."""
    from evitdeploy.errors import EXIT_CHECK_FAILED, UserError

    storage = storage_check(fp32_path, plan, inputs, spec=spec)
    if storage["planned"]["nonfinite"]:
        raise UserError(
            f"the FP16 plan still gives {storage['planned']['nonfinite']} NaN/Inf values (FP16 storage emulation)",
            "nothing was written; raise --fp16-margin or calibrate on images like your deployment's (--calib DIR)",
            EXIT_CHECK_FAILED,
        )
    return storage
