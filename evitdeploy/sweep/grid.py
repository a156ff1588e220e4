"""The grid of a sweep: cells (model x target x precision x resolution, optionally of a device
profile) and what every cell runs with, checked up front so a typo does not cost a whole sweep."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Optional

from evitdeploy import memory
from evitdeploy.errors import UserError


@dataclass(frozen=True)
class Cell:
    model: str
    target: str
    precision: str
    height: int
    width: int
    profile: Optional[str] = None  # a device profile: its tolerances and bench threads, and (on a farm) the node that benches

    @property
    def key(self) -> tuple:
        return (self.model, self.target, self.precision, self.height, self.width, self.profile)

    @property
    def name(self) -> str:
        return f"{self.model}-{self.target}-{self.precision}-{self.height}x{self.width}" + (f"@{self.profile}" if self.profile else "")

    @classmethod
    def from_dict(cls, data: dict) -> "Cell":
        return cls(data["model"], data["target"], data["precision"], int(data["height"]), int(data["width"]), data.get("profile"))


@dataclass(frozen=True)
class CellSettings:
    """What every cell runs with (recorded in each line, so cells stay comparable)."""

    samples: int = 8  # parity inputs
    warmup: int = 10
    count: Optional[int] = None
    min_time_s: float = 0.0
    threads: Optional[int] = None
    data: Optional[str] = None
    seed: int = 0
    checkpoint: Optional[str] = None  # the weights every cell exports [default: random init]
    dataset: Optional[str] = None  # labelled data every cell is evaluated on after its bench (labelled.datasets. layouts)
    dataset_limit: Optional[int] = None  # images of it drawn with `seed` [default: all]
    int8_plan: str = "searched"  # precision.options.INT8_PLANS, for the int8 cells
    max_drop: Optional[float] = None  # with dataset: the searched int8 cells' search target (points of the task metric below FP32)
    calib: Optional[str] = None  # calibration images (folder or .npz) for the reduced-precision cells [default: the sample photos]
    backend_options: dict = field(default_factory=dict)  # each to the cells whose target declares it (a profile's cell: the profile's)

    def __post_init__(self) -> None:
        from evitdeploy import limits

        limits.check_range("--samples", self.samples, 1, high=limits.SAMPLES_MAX)
        limits.check_timing(self.warmup, self.count, min_time_s=self.min_time_s, threads=self.threads)
        limits.check_seed(self.seed)
        limits.check_range("--dataset-limit", self.dataset_limit, 1)


def split_list(text: str, what: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise UserError(f"no {what} given", f"pass a comma-separated list of {what}")
    return list(dict.fromkeys(items))


def parse_resolution(text: str) -> tuple[int, int]:
    """'224' -> (224, 224); '1024x2048' -> (1024, 2048) as height x width."""
    parts = text.lower().split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        raise UserError(f"resolution {text!r} is not SIZE or HEIGHTxWIDTH", "e.g. --resolution 224,512x512,1024x2048") from None
    if len(sizes) not in (1, 2) or min(sizes) <= 0:
        raise UserError(f"resolution {text!r} is not SIZE or HEIGHTxWIDTH", "e.g. --resolution 224,512x512,1024x2048")
    return (sizes[0], sizes[-1])


def plan_cells(
    models: list[str],
    targets: list[str],
    precisions: list[str],
    resolutions: list[str],
    *,
    samples: int = 8,
    profiles: Optional[list] = None,
) -> list[Cell]:
    """The grid, with names and sizes checked up front (a typo should not cost a whole sweep), and
    each size's export and check (with `samples` inputs) against this host's memory.

    With `profiles` (Profile objects) the cells are model x profile x precision x resolution, each on
    its profile's target; `targets` is then unused. Precisions a target does not have yet are not
    refused here: those cells record the reason.
    """
    from evitdeploy.backends import canonical_target, find, target_names
    from evitdeploy.models import get_spec

    sizes = [parse_resolution(r) for r in resolutions]
    for model in models:
        spec = get_spec(model)
        for height, width in sizes:
            try:
                memory.with_input(spec, height=height, width=width)
            except UserError as exc:
                raise UserError(exc.message, _resolution_hint(exc.hint, spec), exc.exit_code) from None
            _require_memory(memory.with_input(spec, height=height, width=width), precisions, samples)
    if profiles:
        return [
            Cell(model=m, target=profile.target, precision=p, height=h, width=w, profile=profile.name)
            for m, profile, p, (h, w) in itertools.product(models, profiles, precisions, sizes)
        ]
    for target in targets:
        if find(target) is None:
            raise UserError(f"unknown target {target!r}", f"choose from: {target_names()}")
    # aliases ("litert", "tensorrt") under the target's own name: one cell each, and resume keys match
    targets = list(dict.fromkeys(canonical_target(t) for t in targets))
    return [Cell(model=m, target=t, precision=p, height=h, width=w) for m, t, p, (h, w) in itertools.product(models, targets, precisions, sizes)]


def _resolution_hint(hint: str, spec) -> str:
    """A size hint in sweep's terms: --resolution HxW, not export's --height/--width."""
    hint = re.sub(r"--height (\d+) --width (\d+)", r"--resolution \1x\2", hint)
    if "--height" in hint or "--width" in hint:
        multiple = spec.size_multiple
        hint = f"use --resolution HEIGHTxWIDTH with multiples of {multiple}, at least {2 * multiple}"
    return hint


def _require_memory(spec, precisions: list[str], samples: int) -> None:
    from evitdeploy.precision.options import PrecisionOptions

    where = f"{spec.name} at {spec.height}x{spec.width}"
    for precision in dict.fromkeys(p if p in ("fp16", "int8") else "fp32" for p in precisions):
        calib = PrecisionOptions().count_for(spec.height, spec.width) if precision != "fp32" else None
        memory.require_fits(spec, "export", f"the sweep cell {where} ({precision} export)", precision=precision, calib_count=calib)
    memory.require_fits(spec, "check", f"the sweep cell {where} (check on {samples} inputs)", images=samples)
