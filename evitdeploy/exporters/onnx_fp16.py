"""FP16 ONNX following a precision plan: FP16 everywhere but the plan's FP32 islands.

onnxruntime's own converter (onnxruntime.transformers.float16) does the rewrite; the plan's FP32
nodes become its block list, so Cast nodes surround each island. I/O stay float32 unless asked
(a camera pipeline hands float32; `--fp16-io` halves the input copy for pipelines that do not).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from evitdeploy.calibration.plan import PrecisionPlan


def convert(fp32_path: Path, plan: Optional[PrecisionPlan], output: Path, fp16_io: bool = False) -> dict:
    """Write the FP16 model; `plan=None` is the naive conversion (no islands), kept for comparisons."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(fp32_path))
    blocked = plan.nodes_in("fp32") if plan else []
    from onnxruntime.quantization.onnx_model import ONNXModel

    converted = convert_float_to_float16(model, keep_io_types=not fp16_io, node_block_list=blocked)
    ONNXModel(converted).topological_sort()  # the converter appends its Cast nodes at the end
    onnx.save(converted, str(output))
    return {
        "fp32_nodes": len(blocked),
        "fp16_io": fp16_io,
        "tool": "onnxruntime.transformers.float16.convert_float_to_float16 (block list from the plan)",
    }
