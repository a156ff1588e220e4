"""The shared precision plan, applied to a .tflite through ai-edge-quantizer's recipe.

The plan is made on the ONNX FP32 graph (ranges, rules, the INT8 sensitivity search) and names
every decision by its PyTorch module path. litert-torch writes the same module path into each
TFLite tensor name ("...EfficientViTClassifier/...Sequential_stages/...Stage_2/..." ->
"stages.2"), so each TFLite op finds its module, then its block, then the plan's decision:

- an op whose module the plan keeps in FP32 by rule or range (the LiteMLA core, the classifier's
  LayerNorm/GEMM for INT8, overflowing tensors for FP16), or whose block the sensitivity search
  moved to FP32, stays float: a NO_QUANTIZE entry for its exact scope in the recipe;
- every other op gets the precision's recipe: static int8 weights and activations (INT8, full
  integer where the runtime has a kernel) or float16 weights (FP16, FLOAT_CASTING).

A plan FP32 module that matches no TFLite op means the names drifted: the export stops rather
than silently quantizing what the plan kept in float.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Optional

from evitdeploy.precision.plan import FloatScopes, PrecisionPlan
from evitdeploy.errors import EXIT_CHECK_FAILED, UserError


# Ops XNNPACK (LiteRT's CPU delegate) has no int8 kernel for: quantized, each one falls back to
# TFLite's reference kernel and splits the delegated graph (measured on B0 at 224, 2 threads: 36
# XNNPACK partitions and 8.3 ms with int8 HARD_SWISH, 12 partitions and 1.15 ms with it float).
FLOAT_ON_XNNPACK = {"int8": ("HARD_SWISH",)}


WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")


@dataclass(frozen=True)
class TfliteOp:
    index: int
    op: str  # TFLite builtin name, e.g. CONV_2D
    scope: str  # what ai-edge-quantizer's recipe regex is matched against
    module: str  # PyTorch module path, "" where the tensor names carry none
    precision: str  # "fp32" | the plan's reduced precision
    reason: str


def module_path_of(tensor_name: str, modules: Optional[dict] = None) -> str:
    """'pkg.EfficientViTClassifier/torch...Sequential_stages/pkg.Stage_2/pkg.LiteMLA_main;3' -> 'stages.2.main'.

    Each segment is `Class_leaf`: the module's class and the last part of its name. A container
    whose forward is not called (a model that loops over `self.stages` itself) has no segment, so
    with `modules` (qualified name -> class name, from the PyTorch model) each segment is resolved
    to the nearest descendant of the previous one with that class and leaf name."""
    first = tensor_name.split(";")[0]
    if "/" not in first:
        return ""
    path = ""
    for segment in first.split("/")[1:]:  # the root module has no attribute name
        leaf_class = segment.rsplit(".", 1)[-1]
        if "_" not in leaf_class:
            continue
        cls, leaf = leaf_class.split("_", 1)
        if modules is None:
            path = f"{path}.{leaf}" if path else leaf
            continue
        prefix = path + "." if path else ""
        found = [q for q, c in modules.items() if c == cls and q.startswith(prefix) and (q == prefix + leaf or q.endswith("." + leaf))]
        if found:  # else a wrapper's segment (--nhwc's channels-last wrapper holds the model)
            path = min(found, key=lambda q: q.count("."))
    return path


def module_classes(model) -> dict:
    """Qualified module name -> class name, for resolving TFLite tensor names."""
    return {name: type(module).__name__ for name, module in model.named_modules() if name}


def read_ops(model_bytes: bytes, modules: Optional[dict] = None) -> list[tuple[int, str, str, str]]:
    """(index, op name, scope, module path) for every op of the first subgraph."""
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as flatbuffers

    from ai_edge_quantizer.qtyping import BuiltinOperator

    builtin_names = {code: name for name, code in vars(BuiltinOperator).items() if not name.startswith("_")}
    model = flatbuffers.read_model(model_bytes)
    subgraph = model.subgraphs[0]
    ops = []
    for index, op in enumerate(subgraph.operators):
        scope = flatbuffers.get_op_scope(op, subgraph.tensors)
        # The output names the op's module; the model's final op has its output renamed to the
        # signature's, so then its weights (inputs 1..) name it, and its data input last.
        inputs = list(op.inputs)
        tensor_names = [flatbuffers.get_tensor_name(subgraph.tensors[i]) for i in list(op.outputs) + inputs[1:] + inputs[:1] if i >= 0]
        module = next((path for path in (module_path_of(n, modules) for n in tensor_names) if path), "")
        code = model.operatorCodes[op.opcodeIndex]
        ops.append((index, builtin_names.get(max(code.builtinCode, code.deprecatedBuiltinCode), str(code.builtinCode)), scope, module))
    return ops


def decide(plan: PrecisionPlan, ops: list[tuple[int, str, str, str]]) -> list[TfliteOp]:
    scopes = FloatScopes(plan)
    decisions = []
    for index, op, scope, module in ops:
        if scopes.keeps(module, op in WEIGHTED_OPS):
            decisions.append(TfliteOp(index, op, scope, module=module, precision="fp32", reason=scopes.reason(module)))
        elif op in FLOAT_ON_XNNPACK.get(plan.precision, ()):
            decisions.append(TfliteOp(index, op, scope, module=module, precision="fp32", reason=f"backend: XNNPACK has no {plan.precision} {op} kernel"))
        else:
            decisions.append(TfliteOp(index, op, scope, module=module, precision=plan.precision, reason=f"plan: {plan.precision}"))
    missing = scopes.unmatched(d.module for d in decisions if d.precision == "fp32")
    if missing:
        raise UserError(
            f"the precision plan keeps {missing[0]} in FP32 but no TFLite op carries that module path",
            "nothing was written; litert-torch's tensor naming changed: report it with `evitdeploy doctor` output",
            EXIT_CHECK_FAILED,
        )
    return decisions


def recipe(precision: str, decisions: list[TfliteOp]):
    """ai-edge-quantizer's recipe manager: the precision's rule for every op, then NO_QUANTIZE per
    float op (later entries win)."""
    from ai_edge_quantizer import qtyping, recipe_manager
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    every = qtyping.TFLOperationName.ALL_SUPPORTED
    manager = recipe_manager.RecipeManager()
    if precision == "int8":
        manager.add_static_config(regex=".*", operation_name=every, activation_num_bits=8, weight_num_bits=8)
    else:
        manager.add_weight_only_config(regex=".*", operation_name=every, num_bits=16, algorithm_key=AlgorithmName.FLOAT_CASTING)
    for scope in dict.fromkeys(d.scope for d in decisions if d.precision == "fp32"):
        manager.add_quantization_config(regex=f"^{re.escape(scope)}$", operation_name=every, algorithm_key=AlgorithmName.NO_QUANTIZE)
    return manager


def summary(decisions: list[TfliteOp]) -> dict:
    return {
        "ops": dict(Counter(d.precision for d in decisions)),
        "float_ops_by_type": dict(Counter(d.op for d in decisions if d.precision == "fp32")),
        "float_modules": sorted({d.module for d in decisions if d.precision == "fp32"}),
        "mapping": "TFLite tensor names carry the PyTorch module path; ops in modules/blocks the plan keeps FP32 get NO_QUANTIZE",
    }
