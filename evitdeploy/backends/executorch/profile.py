"""Where a .pte's time goes: the delegate vs the ops left on ExecuTorch's portable kernels.

The pip runtime is built with ExecuTorch's event tracer: a program loaded with `enable_etdump`
records every delegate call, every portable kernel call ("native_call_<op>.out") and the whole
`Method::execute`; ExecuTorch's own Inspector reads the ETDump. This answers what the ops outside
the delegate (the partition in the manifest) cost, per op type, on this host.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np


def op_profile(path: Path, batch: np.ndarray, runs: int = 20, threads=None) -> dict:
    """Per-event medians over `runs` traced executions, in ms: the delegate calls, each portable op
    type, and the whole execute (which the tracer's own bookkeeping inflates: read the portable
    share of delegate + portable time, not the traced total)."""
    import torch

    from evitdeploy.backends.executorch.device import use_threads
    from evitdeploy.backends.executorch.runner import import_executorch, quiet_runtime

    runtime = import_executorch()
    with quiet_runtime():
        from executorch.devtools import Inspector

        use_threads(threads)
        program = runtime.Runtime.get().load_program(str(path), enable_etdump=True)
        method = program.load_method("forward")
        feed = [torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))]
        for _ in range(runs):
            method.execute(feed)
        with tempfile.TemporaryDirectory(prefix="evitdeploy-etdump-") as scratch:
            dump = Path(scratch) / "run.etdp"
            program.write_etdump_result_to_file(str(dump), str(Path(scratch) / "debug.bin"))
            events = Inspector(etdump_path=str(dump)).to_dataframe()
    executed = events[events.event_block_name == "Execute"]
    median = "p50 (ms)"
    total = float(executed[executed.event_name == "Method::execute"][median].sum())
    delegate = float(executed[executed.event_name == "DELEGATE_CALL"][median].sum())
    portable: dict[str, float] = defaultdict(float)
    for name, ms in zip(executed.event_name, executed[median]):
        if name.startswith("native_call_"):
            portable[name[len("native_call_") :].split(".")[0]] += float(ms)
    outside = sum(portable.values())
    return {
        "traced_execute_ms": total,
        "delegate_ms": delegate,
        "portable_ms": outside,
        "portable_share": outside / (outside + delegate) if outside + delegate else 0.0,
        "portable_by_op_ms": dict(sorted(portable.items(), key=lambda item: -item[1])),
        "runs": runs,
    }
