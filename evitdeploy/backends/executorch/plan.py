"""The shared precision plan, applied through PT2E with ExecuTorch's XNNPACKQuantizer.

The plan is made on the ONNX FP32 graph (ranges, rules, the INT8 sensitivity search) and names
every decision by its PyTorch module path. torch.export records each node's module stack, so the
quantizer's op-level filter can ask, for every op it would annotate, whether the plan keeps that
op's module (or its block) in float: those ops are left unannotated and run FP32 (in XNNPACK's
float kernels where it has them), every other annotated op gets static int8 weights (per
channel) and activations, calibrated on the plan's own calibration images.

Why not the quantizer's defaults: everything quantized, the trained digits B0 keeps 95.2% top-1
(FP32 98.3%) and a worst per-image cosine of 0.05; the plan's FP32 LiteMLA cores and classifier
head keep 98.3% and 0.994 (measured here, see benchmarks/executorch_cpu.py).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from evitdeploy.errors import EXIT_CHECK_FAILED, UserError
from evitdeploy.precision.plan import FloatScopes, PrecisionPlan

WEIGHTED_OPS = ("conv2d", "convolution", "linear", "conv_transpose2d")


@dataclass(frozen=True)
class NodeDecision:
    node: str  # the exported graph's node name
    op: str  # aten op, e.g. conv2d
    module: str  # PyTorch module path, "" for nodes outside any submodule
    precision: str  # "fp32" | "int8"
    reason: str


def module_of(node) -> str:
    """The innermost module a torch.export node was traced in ("stages.2.blocks.1.context_module.main")."""
    stack = node.meta.get("nn_module_stack")
    return list(stack.values())[-1][0] if stack else ""


def op_name(node) -> str:
    target = getattr(node.target, "__name__", str(node.target))
    return target.split(".")[0]


class PlanFilter:
    """XNNPACKQuantizer's filter function: True quantizes the op, False keeps it float.
    Records each decision (the quantizer asks once per op of every pattern it tries)."""

    def __init__(self, plan: PrecisionPlan):
        self.scopes = FloatScopes(plan)
        self.precision = plan.precision
        self.decisions: dict[str, NodeDecision] = {}

    def __call__(self, node) -> bool:
        if node.op != "call_function":  # weights and inputs of a pattern: the op they feed decides
            return True
        module, op = module_of(node), op_name(node)
        if self.scopes.keeps(module, op in WEIGHTED_OPS):
            self.decisions[node.name] = NodeDecision(node.name, op, module, precision="fp32", reason=self.scopes.reason(module))
            return False
        self.decisions.setdefault(node.name, NodeDecision(node.name, op, module, precision=self.precision, reason=f"plan: {self.precision}"))
        return True

    def check_names(self, graph) -> None:
        """A plan FP32 module no exported node carries means the names drifted: stop rather than
        quantize what the plan kept in float."""
        missing = self.scopes.unmatched(module_of(node) for node in graph.nodes)
        if missing:
            raise UserError(
                f"the precision plan keeps {missing[0]} in FP32 but no exported node carries that module path",
                "nothing was written; torch.export's module metadata changed: report it with `evitdeploy doctor` output",
                EXIT_CHECK_FAILED,
            )

    def summary(self) -> dict:
        decisions = list(self.decisions.values())
        return {
            "ops": dict(Counter(d.precision for d in decisions)),
            "float_ops_by_type": dict(Counter(d.op for d in decisions if d.precision == "fp32")),
            "float_modules": sorted({d.module for d in decisions if d.precision == "fp32"}),
            "mapping": "torch.export's nn_module_stack names each op's module; ops in modules/blocks the plan keeps FP32 are left out of "
            "XNNPACKQuantizer's annotation (its filter function)",
        }


def quantized_program(model, sample, plan: PrecisionPlan, calibration) -> tuple:
    """(the INT8 exported program, the filter's record) for `model` at `sample`'s shape: PT2E
    prepare -> calibrate on every calibration image -> convert -> torch.export again."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer, get_symmetric_quantization_config
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    with torch.no_grad():
        graph_module = torch.export.export(model, (sample,)).module()
    chooser = PlanFilter(plan)
    chooser.check_names(graph_module.graph)
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True)).set_filter_function(chooser)
    prepared = prepare_pt2e(graph_module, quantizer)
    import numpy as np

    batch = sample.shape[0]  # the program is static: calibrate in batches of its own size
    with torch.no_grad():
        for start in range(0, max(len(calibration) - batch + 1, 1), batch):
            chunk = np.resize(calibration[start : start + batch], (batch, *calibration.shape[1:]))
            prepared(torch.from_numpy(np.ascontiguousarray(chunk, dtype=np.float32)))
        converted = convert_pt2e(prepared)
        return torch.export.export(converted, (sample,)), chooser
