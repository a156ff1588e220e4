"""Latency: warm-up, then a fixed count or a minimum duration; every raw sample kept.

Results are JSON first (every timed iteration in ms, the host fingerprint, runtime versions, the
artifact's sha256, a schema version); tables, plots and the CI gate all render from that JSON.
On a shared, noisy host quote medians and ratios measured in one run.
"""

from __future__ import annotations

import os
import platform
from typing import Callable, Optional

from evitdeploy.device.metrics import latency_stats as summarize
from evitdeploy.device.metrics import time_turns
from evitdeploy.device import cpu

BENCH_SCHEMA = 2  # 2: host fingerprint, artifact identity and raw samples on every result


def measure(
    infer: Callable[[], object],
    warmup: int = 10,
    count: Optional[int] = None,
    min_time_s: float = 0.0,
    max_count: int = 100_000,
) -> list[float]:
    """Latency samples in ms: at least `count` runs (default 50, or 1 with a min time) and at least
    `min_time_s`; the device's timing loop (device.metrics.time_turns), so both time alike."""
    return time_turns([infer], warmup, count, min_time_s=min_time_s, max_count=max_count)[0]


def measure_interleaved(
    infer_a: Callable[[], object],
    infer_b: Callable[[], object],
    warmup: int = 10,
    count: Optional[int] = None,
    min_time_s: float = 0.0,
    block: int = 1,
    max_count: int = 100_000,
) -> tuple[list[float], list[float]]:
    """Samples of A and B taken in alternating turns (A B, then B A, ...), `block` runs per turn.

    Drift of a shared machine (another job starting, thermal throttling, frequency changes) then
    lands on both sides alike instead of on whichever ran second, and the A B / B A order cancels
    any cache advantage of going first.
    """
    a, b = time_turns([infer_a, infer_b], warmup, count, min_time_s=min_time_s, block=block, max_count=max_count)
    return a, b


def host_info(threads: Optional[int]) -> dict:
    """The host fingerprint: what must match before two latencies may be compared."""
    return {
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "threads": threads,
        "os": platform.system(),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "int8_kernels": cpu.kernel_class(),  # INT8 speed and accuracy depend on it (evitdeploy.device.cpu)
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def latency_result(runner, feed: dict, label: str, samples: list[float], warmup: int) -> dict:
    """One JSON-ready result: summary statistics plus every raw sample."""
    shape = list(next(iter(feed.values())).shape)
    batch = shape[0]
    stats = summarize(samples, batch)
    megapixels = batch * shape[2] * shape[3] / 1e6
    return {
        "label": label,
        "backend": runner.backend,
        "input_shape": shape,
        "warmup": warmup,
        "stats": stats,
        "ms_per_megapixel": stats["median_ms"] / megapixels,
        "latency_samples_ms": [round(s, 4) for s in samples],
        "versions": runner.versions(),
    }


def bench_runner(
    runner,
    feed: dict,
    label: str,
    warmup: int = 10,
    count: Optional[int] = None,
    min_time_s: float = 0.0,
) -> dict:
    """Benchmark one loaded runner on one feed; a JSON-ready result with its raw samples."""
    samples = measure(lambda: runner.infer(feed), warmup, count, min_time_s=min_time_s)
    return latency_result(runner, feed, label, samples=samples, warmup=warmup)
