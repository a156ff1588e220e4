"""Latency: warm-up, then a fixed count or a minimum duration; raw samples kept.

Results are JSON first (every sample in ms, host, threads, runtime versions); tables and gates
render from the JSON. On a shared, noisy host quote medians and ratios measured in one run.
"""

from __future__ import annotations

import os
import platform
import time
from typing import Callable, Optional

import numpy as np


def measure(
    infer: Callable[[], object],
    warmup: int = 10,
    iterations: Optional[int] = None,
    min_duration_s: float = 0.0,
    max_iterations: int = 100_000,
) -> list[float]:
    """Latency samples in ms: at least `iterations` runs (default 50) and at least `min_duration_s`."""
    for _ in range(warmup):
        infer()
    wanted = 50 if iterations is None and not min_duration_s else (iterations or 1)
    samples: list[float] = []
    started = time.perf_counter()
    while len(samples) < max_iterations:
        t0 = time.perf_counter()
        infer()
        samples.append((time.perf_counter() - t0) * 1e3)
        if len(samples) >= wanted and time.perf_counter() - started >= min_duration_s:
            break
    return samples


def summarize(latency_samples_ms: list[float], batch: int = 1) -> dict:
    samples = np.asarray(latency_samples_ms, dtype=np.float64)
    median = float(np.median(samples))
    return {
        "count": int(samples.size),
        "median_ms": median,
        "p90_ms": float(np.percentile(samples, 90)),
        "p99_ms": float(np.percentile(samples, 99)),
        "mean_ms": float(samples.mean()),
        "std_ms": float(samples.std(ddof=1)) if samples.size > 1 else 0.0,
        "min_ms": float(samples.min()),
        "max_ms": float(samples.max()),
        "throughput_per_s": batch * 1e3 / median if median > 0 else float("inf"),
    }


def host_info(threads: Optional[int]) -> dict:
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "threads": threads,
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
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


def bench_runner(
    runner,
    feed: dict,
    label: str,
    warmup: int = 10,
    iterations: Optional[int] = None,
    min_duration_s: float = 0.0,
) -> dict:
    """Benchmark one loaded runner on one feed; a JSON-ready result with its raw samples."""
    batch = int(next(iter(feed.values())).shape[0])
    samples = measure(lambda: runner.infer(feed), warmup, iterations, min_duration_s)
    shape = list(next(iter(feed.values())).shape)
    megapixels = batch * shape[2] * shape[3] / 1e6
    stats = summarize(samples, batch)
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
