"""What Linux can check of a .pte lowered to the Core ML delegate: the Core ML packages inside it.

The delegate's payload is each subgraph's mlpackage, flattened by ExecuTorch's `executorchcoreml`
(the same wheel); unflattened, coremltools reads its spec without loading the model (as the Core ML
target checks its own package): inputs, outputs, and the precision every op computes in.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

from evitdeploy.errors import EXIT_CHECK_FAILED, UserError

BACKEND_ID = "CoreMLBackend"


def packages_of(graph_module) -> list[bytes]:
    """The flattened Core ML payload of every subgraph the delegate took, in graph order."""
    return [module.processed_bytes for _, module in graph_module.named_children() if getattr(module, "backend_id", None) == BACKEND_ID]


def inspect_packages(graph_module) -> list[dict]:
    """Each payload's mlpackage, read back: input/output shapes and types, ops by type and precision."""
    from executorch.backends.apple.coreml import executorchcoreml

    from evitdeploy.backends.coreml.export import program_ops
    from evitdeploy.backends.coreml.runner import import_coremltools

    ct = import_coremltools()
    from coremltools.proto import MIL_pb2

    found = []
    for index, payload in enumerate(packages_of(graph_module)):
        with tempfile.TemporaryDirectory(prefix="evitdeploy-et-coreml-") as scratch:
            if not executorchcoreml.unflatten_directory_contents(payload, scratch):
                raise UserError(f"the Core ML payload of subgraph {index} does not unpack", "nothing was written; report it", EXIT_CHECK_FAILED)
            package = next(Path(scratch).rglob("*.mlpackage"), None)
            if package is None:
                raise UserError(f"the Core ML payload of subgraph {index} holds no .mlpackage", "nothing was written; report it", EXIT_CHECK_FAILED)
            description = ct.models.MLModel(str(package), skip_model_load=True).get_spec().description
            ops = program_ops(package)
        compute = [(t, d) for t, _, d in ops if t not in ("const", "cast")]
        found.append(
            {
                "inputs": {i.name: [int(n) for n in i.type.multiArrayType.shape] for i in description.input},
                "outputs": [o.name for o in description.output],
                "ops_by_type": dict(Counter(t for t, _ in compute)),
                "ops_by_precision": dict(Counter(MIL_pb2.DataType.Name(d) for _, d in compute)),
            }
        )
    return found


def check_packages(packages: list[dict], input_shape: tuple) -> list[str]:
    """Why the Core ML payloads are not an FP32 model of this input, or []."""
    if not packages:
        return ["the .pte holds no Core ML payload"]
    failures = []
    first = list(packages[0]["inputs"].values())
    if first and list(first[0]) != list(input_shape):
        failures.append(f"the first Core ML subgraph takes {first[0]}, expected {list(input_shape)}")
    half = sum(p["ops_by_precision"].get("FLOAT16", 0) for p in packages)
    if half:
        failures.append(f"asked for fp32 but {half} Core ML ops compute in FP16")
    return failures
