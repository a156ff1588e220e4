"""How the shared precision plan maps onto Core ML: an op selector for FP16 compute that keeps the
plan's FP32 modules (matched through torch.export's module metadata), and int8 weights everywhere
the plan does not keep float."""

from __future__ import annotations

import contextlib
import sys
import warnings
from pathlib import Path

from evitdeploy.backends.coreml.runner import import_coremltools
from evitdeploy.backends.options import ExportOptions
from evitdeploy.spec import ModelSpec

WEIGHTED_OPS = ("conv", "linear", "conv_transpose")


def module_of(op, modules: dict) -> str:
    """A MIL op's module: its own node's, else (ops a converter split from one node, e.g. hardswish
    into thresholded_relu + sigmoid_hard + mul) the nearest input's."""
    pending, seen = [op], set()
    while pending:
        current = pending.pop(0)
        for name in (current.name, *(o.name for o in current.outputs)):  # the op or its output var carries the node's name
            if name in modules:
                return modules[name]
        seen.add(current.name)
        for var in current.inputs.values():
            for v in var if isinstance(var, (list, tuple)) else [var]:
                producer = getattr(v, "op", None)
                if producer is not None and producer.op_type != "const" and producer.name not in seen:
                    pending.append(producer)
    return ""


def quantize_weights(mlmodel, float_ops: list[str]):
    """int8 weights (linear symmetric, per channel) except on the ops the plan keeps float."""
    import_coremltools()
    from coremltools.optimize import coreml as optimize

    config = optimize.OptimizationConfig(
        global_config=optimize.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel"),
        op_name_configs={name: None for name in float_ops},
    )
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        return optimize.linear_quantize_weights(mlmodel, config=config)


def make_fp16_plan(model, spec: ModelSpec, staging: Path, scratch: Path, options: ExportOptions):
    """Core ML's plan (written beside the package; its manifest sections returned). INT8 here is
    int8 weights with FP16 compute: the FP16 plan's ranges decide the FP32 islands for the compute,
    and the same islands keep float weights."""
    from evitdeploy.graph import default_opset, write_graph
    from evitdeploy.precision.pipeline import make_plan, write_plan

    onnx_path = scratch / "fp32.onnx"
    write_graph(model, spec, onnx_path, opset=default_opset(spec), simplify=True, step=options.step)
    result = make_plan(onnx_path, spec, "fp16", options=options.reduced, progress=options.progress)
    return result.plan, write_plan(result, staging)
