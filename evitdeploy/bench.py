"""Latency: warm-up, then a fixed count or a minimum duration; every raw sample kept.

Results are JSON first (every timed iteration in ms, the host fingerprint, runtime versions, the
artifact's sha256, a schema version); tables, plots and the CI gate all render from that JSON.
On a shared, noisy host quote medians and ratios measured in one run.
"""

from __future__ import annotations

import os
import platform
import time
from typing import Callable, Optional


from evitdeploy.device_verify import latency_stats as summarize  # noqa: F401  (one implementation, also on the device)

BENCH_SCHEMA = 2  # 2: host fingerprint, artifact identity and raw samples on every result


def _timed(infer: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    infer()
    return (time.perf_counter() - t0) * 1e3


def cuda_times_ms(run: Callable[[], object], warmup: int, count: int, stream=None) -> list[float]:
    """GPU time per call of `run`, from CUDA events recorded around it on `stream` (the current
    stream if None), after `warmup` calls: the figure trtexec reports as "GPU Compute Time"."""
    import torch

    for _ in range(warmup):
        run()
    torch.cuda.synchronize()
    times = []
    for _ in range(count):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record(stream)
        run()
        end.record(stream)
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times


def _enough(count: int, wanted: int, started: float, min_time_s: float) -> bool:
    return count >= wanted and time.perf_counter() - started >= min_time_s


def measure(
    infer: Callable[[], object],
    warmup: int = 10,
    count: Optional[int] = None,
    min_time_s: float = 0.0,
    max_count: int = 100_000,
) -> list[float]:
    """Latency samples in ms: at least `count` runs (default 50, or 1 with a min time) and at least `min_time_s`."""
    for _ in range(warmup):
        infer()
    wanted = count if count is not None else (1 if min_time_s else 50)
    samples: list[float] = []
    started = time.perf_counter()
    while len(samples) < max_count:
        samples.append(_timed(infer))
        if _enough(len(samples), wanted, started, min_time_s):
            break
    return samples


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
    for _ in range(warmup):
        infer_a()
        infer_b()
    wanted = count if count is not None else (1 if min_time_s else 50)
    a: list[float] = []
    b: list[float] = []
    started = time.perf_counter()
    turn = 0
    while len(a) < max_count:
        order = ((infer_a, a), (infer_b, b)) if turn % 2 == 0 else ((infer_b, b), (infer_a, a))
        for infer, samples in order:
            samples.extend(_timed(infer) for _ in range(block))
        turn += 1
        if _enough(min(len(a), len(b)), wanted, started, min_time_s):
            break
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
    samples = measure(lambda: runner.infer(feed), warmup, count, min_time_s)
    return latency_result(runner, feed, label, samples, warmup)
