"""The precision plan: which node runs in which precision, and why, decided from measured ranges.

The plan is backend-neutral. Every decision names the ONNX node (TensorRT layers and ONNX Runtime
nodes carry these names), its module path in the PyTorch model (for converters that start from
PyTorch: LiteRT, Core ML) and its block ("group"), so each backend applies the same plan with its
own mechanism: FP16 block lists, Q/DQ placement, layer precisions, op selection.

Rules (EfficientViT's numerics, DESIGN.md):
- FP16: the LiteMLA linear-attention core (k^T v and the normalizer sum over every token; the
  reference eps 1e-15 rounds to 0 in FP16, so 0/0 = NaN wherever relu(q) is all zero) stays
  FP32, and so does every node whose measured |max| x margin exceeds FP16's 65504 (and every
  LayerNormalization whose input squared would: the variance overflows first).
- INT8: Q/DQ only where an integer kernel does the work (convolutions, residual adds, HardSwish
  rewritten to integer ops); the LiteMLA core, the classifier's LayerNorm/GEMM and the layout ops
  stay float; blocks the sensitivity search moves out stay float as a whole.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Iterable, Optional

from evitdeploy.spec import CLASSIFICATION

PLAN_FORMAT = 1
FP16_MAX = 65504.0
DEFAULT_FP16_MARGIN = 4.0  # headroom over the largest calibration value (other images, other scenes)
ATTENTION_SCOPE = "context_module.main"  # LiteMLA's own ops (not its qkv/aggreg/proj convolutions)
INT8_OPS = ("Conv", "Add", "HardSwish")  # integer kernels: QLinearConv, QLinearAdd, Clip + QLinearMul
# A normalization's own math (a LayerNorm2d written out: mean, power, root, division) stays float by
# rule, not merely as "between Q/DQ": converters that quantize every op the plan does not keep
# (LiteRT's recipe) would otherwise make its divisor int8, where it can round to the zero point
# (LiteRT's DIV then refuses to run: SAM's neck, measured).
NORMALIZATION_OPS = ("Div", "Sqrt", "Pow", "ReduceMean", "Reciprocal")
BF16_REASON_ATTENTION = (
    "rule: LiteMLA linear-attention core in FP32 (k^T v and the normalizer sum over all tokens: BF16's 8-bit significand loses the small terms of those sums)"
)
FP16_REASON_ATTENTION = "rule: LiteMLA linear-attention core in FP32 (k^T v and the normalizer sum over all tokens; eps {eps:g} {eps_note} in FP16)"


def module_path(node_name: str) -> str:
    """'/stages/stages.2/blocks/blocks.1/context_module/main/qkv/conv/Conv' ->
    'stages.2.blocks.1.context_module.main.qkv.conv' (the TorchScript exporter's scope names)."""
    parts: list[str] = []
    for scope in node_name.strip("/").split("/")[:-1]:
        if parts and scope.startswith(parts[-1] + "."):
            parts[-1] = scope
        elif scope:
            parts.append(scope)
    return ".".join(parts)


def group_of(path: str) -> str:
    """The block a module belongs to: the unit the sensitivity search moves between precisions.
    A SAM image encoder's modules (`image_encoder.backbone.stages...`, `image_encoder.neck...`)
    group as a classifier's backbone and a segmenter's head do, under their prefix."""
    if not path:
        return "graph"
    for prefix in ("image_encoder.backbone.", "image_encoder."):
        if path.startswith(prefix) and len(path) > len(prefix):
            return prefix + group_of(path[len(prefix) :])
    parts = path.split(".")
    if parts[0] == "stages" and len(parts) >= 4:
        depth = 5 if len(parts) > 4 and parts[4] in ("context_module", "local_module") else 4
        return ".".join(parts[:depth])
    if parts[0] in ("head", "neck") and len(parts) >= 3 and parts[1] in ("input_ops", "upsamples", "middle"):
        return ".".join(parts[:3])
    return ".".join(parts[:2])


def is_attention_core(path: str) -> bool:
    return path.endswith(ATTENTION_SCOPE)


@dataclass(frozen=True)
class NodeDecision:
    node: str
    op: str
    module: str
    group: str
    precision: str  # "fp32" | "fp16" | "bf16" | "int8"
    reason: str


@dataclass
class PrecisionPlan:
    precision: str  # the artifact's precision: "fp16" | "bf16" | "int8"
    model: str
    input_shape: list
    method: str  # range method the plan and Q/DQ scales used
    decisions: list[NodeDecision]
    calibration: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    sensitivity: list[dict] = field(default_factory=list)  # ranking, most harmful first
    search: dict = field(default_factory=dict)  # what the greedy search did and why it stopped

    def nodes_in(self, precision: str) -> list[str]:
        return [d.node for d in self.decisions if d.precision == precision]

    def groups(self) -> list[dict]:
        """Per block: how many nodes run in each precision, and the reasons for float nodes."""
        summary: dict[str, dict] = {}
        for d in self.decisions:
            entry = summary.setdefault(d.group, {"group": d.group, "counts": {}, "reasons": []})
            entry["counts"][d.precision] = entry["counts"].get(d.precision, 0) + 1
            if d.precision == "fp32" and d.reason not in entry["reasons"] and not d.reason.startswith("layout"):
                entry["reasons"].append(d.reason)
        return list(summary.values())

    def with_float_groups(self, groups: Iterable[str], reason: str) -> "PrecisionPlan":
        """The same plan with whole blocks moved to FP32 (what the sensitivity search does)."""
        moved = set(groups)
        decisions = [replace(d, precision="fp32", reason=reason) if d.group in moved and d.precision != "fp32" else d for d in self.decisions]
        return replace(self, decisions=decisions)

    def naive(self) -> "PrecisionPlan":
        """Every node at the plan's precision, no float island: what a stock quantizer's defaults do
        (`--int8-plan naive` on converters that apply the plan per op: LiteRT, ExecuTorch)."""
        return replace(self, decisions=[replace(d, precision=self.precision, reason="naive: no plan") for d in self.decisions])

    def only_groups(self, groups: Iterable[str]) -> "PrecisionPlan":
        """Reduced precision only inside `groups` (to measure one block's contribution alone)."""
        keep = set(groups)
        return self.with_float_groups({d.group for d in self.decisions if d.group not in keep}, "isolated")

    def to_dict(self) -> dict:
        data = {
            "format": PLAN_FORMAT,
            "precision": self.precision,
            "model": self.model,
            "input_shape": list(self.input_shape),
            "method": self.method,
            "calibration": self.calibration,
            "settings": self.settings,
            "summary": self.summary(),
            "groups": self.groups(),
            "sensitivity": self.sensitivity,
            "search": self.search,
            "nodes": [asdict(d) for d in self.decisions],
        }
        return data

    def summary(self) -> dict:
        counts: dict[str, int] = {}
        for d in self.decisions:
            counts[d.precision] = counts.get(d.precision, 0) + 1
        return {"nodes": counts, "float_groups": sorted({d.group for d in self.decisions if d.reason.startswith("sensitivity")})}

    @classmethod
    def from_dict(cls, data: dict) -> "PrecisionPlan":
        from evitdeploy.errors import UserError

        if data.get("format") != PLAN_FORMAT or "nodes" not in data:
            raise UserError("not an evitdeploy precision plan (format 1)", "make one with `evitdeploy plan ... --save plan.json`")
        return cls(
            data["precision"],
            data["model"],
            data["input_shape"],
            data["method"],
            [NodeDecision(**n) for n in data["nodes"]],
            data.get("calibration", {}),
            data.get("settings", {}),
            data.get("sensitivity", []),
            data.get("search", {}),
        )


def _nodes(model) -> list[tuple[object, str]]:
    return [(node, module_path(node.name)) for node in model.graph.node]


def _in_fp32_core(node, path: str) -> bool:
    """The LiteMLA core's sums and their layout: k^T v, the normalizer, the division."""
    return is_attention_core(path) and node.op_type in ("MatMul", "ReduceSum", "Add", "Div", "Transpose")


def fp16_plan(model, ranges, spec, margin: float = DEFAULT_FP16_MARGIN, method: str = "minmax") -> PrecisionPlan:
    """FP16 everywhere except the LiteMLA core and whatever the measured ranges say overflows."""
    import numpy as np

    eps = spec.attention_eps
    eps_fp16 = float(np.float16(eps))
    eps_note = "rounds to 0" if eps_fp16 == 0.0 else f"is {eps_fp16:.3g}"
    attention_reason = FP16_REASON_ATTENTION.format(eps=eps, eps_note=eps_note)
    # A tensor past FP16's range must be stored in FP32: its producer and all its consumers stay FP32.
    wide = {name for name, stats in ranges.tensors.items() if stats["absmax"] * margin > FP16_MAX}
    nodes = _nodes(model)
    core = {output for node, path in nodes if _in_fp32_core(node, path) for output in node.output}
    decisions = []
    for node, path in nodes:
        peak = max((ranges.absmax(o) or 0.0) for o in node.output) if node.output else 0.0
        touching = sorted(t for t in list(node.input) + list(node.output) if t in wide)
        peak_in = (ranges.absmax(node.input[0]) or 0.0) if node.input else 0.0
        # A Transpose entering the core (of relu(k), written in FP16) moves FP16 data; the Cast follows it.
        entering = node.op_type == "Transpose" and not any(name in core for name in node.input)
        if _in_fp32_core(node, path) and not entering:
            precision, reason = "fp32", attention_reason + f"; measured |max| {peak:.3g}"
        elif touching:
            worst = max(ranges.absmax(t) for t in touching)
            precision, reason = "fp32", f"range: a tensor it reads or writes reaches |max| {worst:.3g}, x margin {margin:g} exceeds FP16's {FP16_MAX:.0f}"
        elif node.op_type == "LayerNormalization" and peak_in * peak_in * margin > FP16_MAX:
            precision, reason = "fp32", f"range: LayerNorm input |max| {peak_in:.3g}; its square x{margin:g} exceeds {FP16_MAX:.0f}"
        else:
            precision, reason = "fp16", f"range: |max| {peak:.3g}, headroom x{FP16_MAX / max(peak, 1e-30):.3g}"
        decisions.append(NodeDecision(node.name, node.op_type, path, group=group_of(path), precision=precision, reason=reason))
    return PrecisionPlan(
        "fp16",
        spec.name,
        list(spec.input_shape),
        method=method,
        decisions=decisions,
        calibration=ranges.calibration,
        settings={"fp16_margin": margin, "attention_eps": eps},
    )


def bf16_plan(model, ranges, spec, method: str = "minmax") -> PrecisionPlan:
    """BF16 everywhere except the LiteMLA core. BF16 has FP32's exponent range, so no measured
    range forces a node to FP32 (the ranges are still recorded); its short significand does, where
    a sum runs over every token."""
    decisions = []
    for node, path in _nodes(model):
        peak = max((ranges.absmax(o) or 0.0) for o in node.output) if node.output else 0.0
        if is_attention_core(path) and node.op_type in ("MatMul", "ReduceSum", "Add", "Div", "Transpose"):
            precision, reason = "fp32", BF16_REASON_ATTENTION + f"; measured |max| {peak:.3g}"
        else:
            precision, reason = "bf16", f"range: |max| {peak:.3g} (BF16 keeps FP32's range)"
        decisions.append(NodeDecision(node.name, node.op_type, path, group=group_of(path), precision=precision, reason=reason))
    return PrecisionPlan(
        "bf16",
        spec.name,
        list(spec.input_shape),
        method=method,
        decisions=decisions,
        calibration=ranges.calibration,
        settings={"attention_eps": spec.attention_eps},
    )


def int8_plan(model, spec, method: str = "minmax") -> PrecisionPlan:
    """INT8 wherever an integer kernel does the work; the LiteMLA core and the classifier float."""
    decisions = []
    for node, path in _nodes(model):
        group = group_of(path)
        if is_attention_core(path):
            precision, reason = "fp32", "rule: LiteMLA normalizer and division stay float (no integer kernel keeps them accurate)"
        elif group.startswith("head.classifier") and spec.task == CLASSIFICATION:
            precision, reason = "fp32", "rule: classifier LayerNorm/GEMM stay float (last layers, tiny cost)"
        elif node.op_type in INT8_OPS:
            precision, reason = "int8", f"integer kernel for {node.op_type}"
        elif node.op_type in NORMALIZATION_OPS:
            precision, reason = "fp32", f"rule: normalization math ({node.op_type}) stays float (an int8 divisor can round to zero)"
        else:
            precision, reason = "fp32", "layout or float-only op (runs between Q/DQ)"
        decisions.append(NodeDecision(node.name, node.op_type, path, group=group, precision=precision, reason=reason))
    return PrecisionPlan("int8", spec.name, list(spec.input_shape), method=method, decisions=decisions, calibration={}, settings={})


class FloatScopes:
    """What a plan keeps in FP32, by PyTorch module: for converters that start from PyTorch and name
    each op by its module (LiteRT, Core ML) rather than by ONNX node.

    A module is float when the plan keeps it FP32 by rule or range, or its block was moved to FP32
    by the sensitivity search. Weightless ops a converter scopes under a float module's child
    (LiteMLA's kernel_func ReLU) belong to it; the child convolutions (qkv, aggregation, proj) keep
    their own decision.
    """

    def __init__(self, plan: PrecisionPlan):
        self.modules = {d.module for d in plan.decisions if d.precision == "fp32" and d.reason.startswith(("rule", "range"))}
        self.groups = set(plan.summary()["float_groups"])
        self.reasons: dict[str, str] = {}
        for d in plan.decisions:
            if d.precision == "fp32" and (d.module in self.modules or d.group in self.groups):
                self.reasons.setdefault(d.module, d.reason)

    def keeps(self, module: str, weighted: bool) -> bool:
        if module in self.modules or (module and group_of(module) in self.groups):
            return True
        return not weighted and any(module.startswith(m + ".") and module[len(m) + 1 :].split(".")[0] == "kernel_func" for m in self.modules)

    def reason(self, module: str) -> str:
        return self.reasons.get(module) or next((r for m, r in self.reasons.items() if module.startswith(m) or group_of(m) == group_of(module)), "plan: fp32")

    def unmatched(self, modules_seen: Iterable[str]) -> list[str]:
        """Plan FP32 modules no converted op carries: the converter's naming drifted."""
        seen = set(modules_seen)
        return sorted(m for m in self.modules if m and m not in seen)


def find_plan_groups(plan: PrecisionPlan, precision: Optional[str] = None) -> list[str]:
    """Blocks holding reduced-precision nodes, in graph order."""
    precision = precision or plan.precision
    seen: dict[str, None] = {}
    for d in plan.decisions:
        if d.precision == precision:
            seen.setdefault(d.group, None)
    return list(seen)
