"""Bounds of every count, time, seed and threshold a user may pass: one place, read by the CLI
options (Click shows the range in `--help` and refuses what is outside it, exit 2) and by the API
checks (a Python caller gets a UserError too). A value beyond these would run until killed or
overflow a library; NaN and ±inf (Click's float takes "nan" and "inf") pass every comparison or
none, so they are refused by name.
"""

from __future__ import annotations

import math
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


# A parity gate a user may set (check's flags, CheckRequest.tolerance_overrides): its flag and range.
TOLERANCE_FLAGS = {
    "max_abs": "--atol",
    "min_cosine": "--min-cosine",
    "min_top1": "--min-top1",
    "min_pixel_agreement": "--min-pixel-agreement",
    "min_mask_iou": "min_mask_iou",
    "max_iou_error": "max_iou_error",
}


def check_finite(flag: str, value, low=None, high: Optional[float] = None) -> None:
    """UserError (exit 2) unless `value` is a finite number (NaN and ±inf are not); None passes.
    `low`/`high` only word the hint: check_range enforces them."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{flag} {value!r} is not a number", f"use a value {_where(low, high)}")
    if isinstance(value, float) and not math.isfinite(value):  # not math.isfinite(int): a huge int overflows it
        raise UserError(f"{flag} {value} is not a finite number", f"use a value {_where(low, high)}")


def check_range(flag: str, value, low, high: Optional[float] = None) -> None:
    """UserError (exit 2) unless `value` is finite and low <= value <= high; None passes (the default applies)."""
    check_finite(flag, value, low, high=high)
    if value is not None and (value < low or (high is not None and value > high)):
        raise UserError(f"{flag} {value} is out of range", f"use a value {_where(low, high)}")


def check_tolerances(overrides: Optional[dict]) -> None:
    """Parity gates given by the user: a maximum of 0 or more, a minimum from 0 to 1; None turns
    a gate off. Unknown names are left to Tolerances.override, which lists the known ones."""
    for name, value in (overrides or {}).items():
        if name in TOLERANCE_FLAGS:
            check_range(TOLERANCE_FLAGS[name], value, 0, high=None if name.startswith("max_") else 1)


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


def _where(low, high) -> str:
    if low is None:
        return "that is a finite number"
    return f"from {_fmt(low)} to {_fmt(high)}" if high is not None else f"of {_fmt(low)} or more"


def _fmt(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
