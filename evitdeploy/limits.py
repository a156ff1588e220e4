"""Bounds of every count, time and seed a user may pass: one place, read by the CLI options (Click
shows the range in `--help` and refuses what is outside it, exit 2) and by the API checks (a Python
caller gets a UserError too). A value beyond these would run until killed or overflow a library.
"""

from __future__ import annotations

from typing import Optional

from evitdeploy.errors import UserError

COUNT_MAX = 100_000  # timed runs (bench.measure stops at 100 000 samples anyway)
WARMUP_MAX = 10_000  # untimed runs
SAMPLES_MAX = 1_000  # parity inputs (check, deploy, sweep)
CALIB_COUNT_MAX = 10_000  # calibration images
MIN_TIME_MAX_S = 3_600.0  # an hour of timing per artifact
THREADS_MAX = 1_024  # intra-op threads
BLOCK_MAX = 1_000  # timed runs per turn of an interleaved gate
SEARCH_BUDGET_MAX = 1_000  # blocks the INT8 search may move to FP32 (models have < 100)
# torch.manual_seed takes -2**63 .. 2**64-1 (2**64 raises ValueError "Overflow when unpacking long
# long"); numpy's legacy seeding takes 0 .. 2**32-1. The seed only reaches torch today; the
# narrower range keeps it valid for numpy too and exact in any JSON reader.
SEED_MAX = 2**32 - 1


def check_range(flag: str, value, low, high: Optional[float] = None) -> None:
    """UserError (exit 2) unless low <= value <= high; None passes (the default applies)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise UserError(f"{flag} {value!r} is not a number", f"use a value from {_fmt(low)} to {_fmt(high)}")
    if value < low or (high is not None and value > high):
        where = f"from {_fmt(low)} to {_fmt(high)}" if high is not None else f"of {_fmt(low)} or more"
        raise UserError(f"{flag} {value} is out of range", f"use a value {where}")


def check_seed(seed) -> None:
    check_range("--seed", seed, 0, high=SEED_MAX)
    if not isinstance(seed, int):
        raise UserError(f"--seed {seed!r} is not an integer", f"use an integer from 0 to {SEED_MAX}")


def check_timing(warmup, count, min_time_s, threads=None, count_min: int = 1) -> None:
    """The timing options of bench, gate --interleave, sweep and verify."""
    check_range("--warmup", warmup, 0, high=WARMUP_MAX)
    check_range("--count", count, count_min, high=COUNT_MAX)
    check_range("--min-time", min_time_s, 0, high=MIN_TIME_MAX_S)
    check_range("--threads", threads, 1, high=THREADS_MAX)


def _fmt(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
