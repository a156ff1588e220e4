"""How a reduced-precision export calibrates and plans: one set of options every backend takes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from evitdeploy import limits
from evitdeploy.errors import UserError

SEARCHED, NAIVE = "searched", "naive"
INT8_PLANS = {
    SEARCHED: "the precision plan: rules, then the sensitivity search (the default)",
    NAIVE: "no plan: the backend's stock quantizer with its defaults, a baseline to measure what the plan buys",
}


@dataclass(frozen=True)
class PrecisionOptions:
    calib: Optional[str] = None  # image folder, .npz, "samples" (default) or "synthetic"
    calib_count: Optional[int] = None  # None: 64 images, 16 above a megapixel (see count_for)
    method: str = "minmax"  # range method for Q/DQ scales: minmax | percentile | entropy
    fp16_io: bool = False
    fp16_margin: float = 4.0
    min_cosine: float = 0.99  # INT8 search target: per-image cosine to FP32 on held-out images
    search_budget: int = 6  # at most this many blocks moved to FP32 by the search
    explain: bool = False  # rank every block even when the plan already meets the target
    scheme: str = "asymmetric-u8"  # precision.qdq.SCHEMES: ONNX Runtime's u8/s8 Q/DQ; TensorRT's is symmetric-s8
    int8_kernels: Optional[str] = None  # x86 INT8 kernels the model is for: any | vnni | avx2 (None: the profile's, else any)
    int8_plan: str = SEARCHED  # INT8_PLANS: naive = the stock quantizer's defaults (a baseline; parity recorded, not enforced)
    dataset: Optional[str] = None  # labelled photos the INT8 search judges candidates on (with max_drop)
    dataset_limit: Optional[int] = None  # of them [default: precision.task_target.SEARCH_PHOTOS]
    max_drop: Optional[float] = None  # the INT8 search's target instead of min_cosine: points of top-1 / mIoU below FP32
    seed: int = 0

    def count_for(self, height: int, width: int) -> int:
        """Calibration images: the user's count, else 64, or 16 above a megapixel (one image of
        B1-seg at 1024x2048 costs ~3.5 s of range collection here)."""
        if self.calib_count is not None:
            return self.calib_count
        return 16 if height * width > 1 << 20 else 64

    def check(self) -> None:
        from evitdeploy.precision.ranges import METHODS

        if self.method not in METHODS:
            raise UserError(f"unknown calibration method {self.method!r}", f"choose one of: {', '.join(METHODS)}")
        limits.check_finite("--min-cosine-target", self.min_cosine, 0, high=1)
        if not 0.0 < self.min_cosine <= 1.0:
            raise UserError(f"--min-cosine-target {self.min_cosine} is not valid", "use a value in (0, 1], e.g. 0.99")
        limits.check_range("--fp16-margin", self.fp16_margin, 1)
        if self.calib not in (None, "samples", "synthetic") and not Path(self.calib).exists():
            raise UserError(
                f"calibration data not found: {self.calib}",
                "pass --calib FOLDER, --calib FILE.npz, --calib samples (bundled photos) or --calib synthetic",
            )
        from evitdeploy.device import cpu

        if self.kernels not in cpu.TARGETS:
            raise UserError(f"--int8-kernels {self.int8_kernels!r} is not a kernel class", f"choose one of: {', '.join(cpu.TARGETS)}")
        if self.calib_count is not None and self.calib_count < 1:
            raise UserError(f"--calib-count {self.calib_count} is not valid", "use 1 or more images (64 is a good default)")
        limits.check_range("--calib-count", self.calib_count, 1, high=limits.CALIB_COUNT_MAX)
        limits.check_range("--search-budget", self.search_budget, 0, high=limits.SEARCH_BUDGET_MAX)
        if self.max_drop is not None:
            limits.check_range("--max-drop", self.max_drop, 0, high=100)
            if self.dataset is None:
                raise UserError("--max-drop judges the INT8 search on labelled photos", "add --dataset PATH, or drop --max-drop")
            if not Path(self.dataset).is_dir():
                raise UserError(f"dataset {self.dataset} is not a folder", "pass the labelled data's folder (see `evitdeploy eval --help`)")
        limits.check_range("--dataset-limit", self.dataset_limit, 1)
        if self.int8_plan not in INT8_PLANS:
            raise UserError(f"--int8-plan {self.int8_plan!r} is not a plan", f"choose one of: {', '.join(INT8_PLANS)}")
        if self.naive and self.max_drop is not None:
            raise UserError("--int8-plan naive runs no search for --max-drop to steer", "drop --max-drop, or --int8-plan naive")

    @property
    def naive(self) -> bool:
        """The stock quantizer's defaults instead of the plan: a baseline whose export records its
        parity instead of refusing a miss (what it loses is the point of making it)."""
        return self.int8_plan == NAIVE

    def require_int8_kernels_here(self) -> None:
        """An INT8 plan is searched and validated on this CPU's kernels: refuse a kernel class whose
        numbers this CPU cannot reproduce (full 8-bit weights on a CPU without VNNI), before any work."""
        from evitdeploy.device import cpu
        from evitdeploy.errors import EXIT_BACKEND_UNAVAILABLE

        refusal = cpu.refusal(self.kernels, cpu.kernel_class(), what=f"an INT8 model for --int8-kernels {self.kernels}")
        if refusal:
            raise UserError(*refusal, EXIT_BACKEND_UNAVAILABLE)

    @property
    def kernels(self) -> str:
        """The x86 INT8 kernel class the model is for (evitdeploy.device.cpu.TARGETS)."""
        return self.int8_kernels or "any"

    @property
    def weight_bits(self) -> int:
        """Bits of the INT8 weights' range: 7 where the model must hold on x86 without VNNI."""
        from evitdeploy.device import cpu

        return cpu.WEIGHT_BITS[self.kernels]
