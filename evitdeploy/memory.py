"""The memory an export, check, bench or plan will need, estimated from the spec before anything
starts: a size that cannot fit this host is refused with the estimate and the limit, before an
output folder exists or a model is built (an export of Seg-B1 at 99968x99968 would ask for
~2.5 TB and die allocating its first 120 GB tensor).

The model (bytes; P = batch x height x width input pixels, HW = height x width):

    fitted = BASE[op] + WEIGHT_COPIES[op] x 4 x params
           + P x 4 x (PEAK_COPIES[op] x peak_channels + ALL_COPIES[op] x all_channels)
           + photos x HW x PHOTO_BYTES[op]          validation photos, parity samples
           + fp16/int8 (export, plan): P x RANGE_COPIES x 4 x all_channels
                                       + calibration images x HW x PHOTO_BYTES[op]
    estimate = MARGIN x fitted

`peak_channels` is the largest activation's channels / stride^2 (8 for B0: its first MBConv
expands 8 -> 32 channels at stride 2), `all_channels` the same summed over every layer output;
both come from the meta device (shapes, no memory) and are tabulated in PROFILES, so a refusal
imports no torch (tests/test_input_bounds.py keeps the table equal to the code).

Fitted to the peak resident set (ru_maxrss of a child `evitdeploy ...` process) on a 2-core x86
host with 24 GB, torch 2.13 CPU, onnxruntime 1.23; default flags (check: --samples as shown):

    export fp32 b0 224x224:              measured  508 MB, fitted  563, refused above  703
    export fp32 b0 512x512:              measured  526 MB, fitted  597, refused above  746
    export fp32 b0 1024x1024:            measured  629 MB, fitted  722, refused above  903
    export fp32 seg_b0 512x1024:         measured  500 MB, fitted  595, refused above  744
    export fp32 seg_b0 2048x4096:        measured 1741 MB, fitted 1854, refused above 2317
    export fp32 seg_b1 512x1024:         measured  660 MB, fitted  682, refused above  852
    export fp32 seg_b1 1024x2048:        measured  986 MB, fitted  996, refused above 1245
    export fp32 seg_b1 2048x4096:        measured 2234 MB, fitted 2255, refused above 2818
    export int8 b0 512x512 (64 calib):   measured 1365 MB, fitted 1805, refused above 2256
    export fp16 seg_b0 1024x2048 (16):   measured 4030 MB, fitted 4682, refused above 5853
    check b0 224x224 n=8:                measured  362 MB, fitted  408, refused above  510
    check b0 512x512 n=8:                measured  405 MB, fitted  480, refused above  600
    check b0 1024x1024 n=8:              measured  700 MB, fitted  747, refused above  933
    check seg_b0 512x1024 n=8:           measured  518 MB, fitted  536, refused above  670
    check seg_b0 2048x4096 n=2:          measured 1570 MB, fitted 1593, refused above 1992
    check seg_b1 512x1024 n=8:           measured  544 MB, fitted  629, refused above  786
    check seg_b1 1024x2048 n=8:          measured 1178 MB, fitted 1293, refused above 1617
    bench b0 224x224 / 512 / 1024:       measured  327 /  346 /  439 MB, fitted 384 / 415 / 527
    bench seg_b0 512x1024:               measured  374 MB, fitted  436
    bench seg_b1 512x1024 / 1024x2048:   measured  475 /  877 MB, fitted 554 / 1050

Export grows linearly (Seg-B1: 198 bytes per input pixel from 2 to 8 megapixels), so Seg-B1 at
8192x8192 needs ~14 GB (17.5 GB estimated): it fits a 24 GB host and is refused on a smaller one
(the report's run was killed at 7 GB, still growing). TFLite, Core ML and TensorRT exports were not
measured; their converters start from the same model and graph, so the ONNX figures are a floor.

The limit is the memory available now (MemAvailable, or a cgroup v2 limit minus its usage when
lower), or EVITDEPLOY_MEMORY_LIMIT_GB (decimal GB) when set; an unknown limit refuses nothing.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from typing import Optional

from evitdeploy.errors import UserError
from evitdeploy.spec import InputSizeError, ModelSpec

ENV_LIMIT = "EVITDEPLOY_MEMORY_LIMIT_GB"
GB = 1e9
MB = 1e6

# name -> (all_channels, peak_channels, params in millions): layer outputs per input pixel, summed
# and largest, and the parameter count, from the meta device at 1024x1024 (see model_profile).
PROFILES: dict[str, tuple[float, float, float]] = {
    "efficientvit_b0": (160.1, 8.0, 3.41),
    "efficientvit_b1": (394.8, 16.0, 9.1),
    "efficientvit_b2": (787.1, 24.0, 24.33),
    "efficientvit_b3": (1434.8, 32.0, 48.65),
    "efficientvit_l1": (892.5, 32.0, 52.65),
    "efficientvit_l2": (1097.5, 32.0, 63.71),
    "efficientvit_l3": (2195.0, 64.0, 246.04),
    "efficientvit_seg_b0_cityscapes": (181.0, 8.0, 0.71),
    "efficientvit_seg_b1_cityscapes": (491.1, 16.0, 4.8),
    "efficientvit_seg_b1_ade20k": (486.2, 16.0, 4.79),
    "efficientvit_seg_b2_cityscapes": (931.2, 24.0, 15.32),
    "efficientvit_seg_b2_ade20k": (920.8, 24.0, 15.29),
    "efficientvit_seg_b3_cityscapes": (1628.8, 32.0, 39.6),
    "efficientvit_seg_b3_ade20k": (1612.9, 32.0, 39.55),
    "efficientvit_seg_l1_cityscapes": (988.1, 32.0, 40.24),
    "efficientvit_seg_l1_ade20k": (1042.4, 32.0, 40.41),
    "efficientvit_seg_l2_cityscapes": (1241.1, 32.0, 52.61),
    "efficientvit_seg_l2_ade20k": (1247.4, 32.0, 51.46),
    # SAM: the image encoder at its own input size (512 or 1024), per pixel; parameters of the whole model
    "efficientvit_sam_l0": (908.2, 32.0, 34.79),
    "efficientvit_sam_l1": (1119.2, 32.0, 47.65),
    "efficientvit_sam_l2": (1420.2, 32.0, 61.33),
    "efficientvit_sam_xl0": (660.4, 32.0, 116.96),
    "efficientvit_sam_xl1": (1037.7, 32.0, 203.35),
    "efficientvit_sam_tiny": (186.3, 8.0, 1.45),
}

OPERATIONS = ("export", "check", "bench", "plan")
# Fitted to the measurements in the module doc (plan = an export's graph + ranges, so export's).
BASE = {"export": 500 * MB, "check": 350 * MB, "bench": 350 * MB, "plan": 500 * MB}  # interpreter, torch, ORT
WEIGHT_COPIES = {"export": 4, "check": 3, "bench": 2, "plan": 4}  # module, traced graph, ONNX proto, session
PEAK_COPIES = {"export": 1.25, "check": 2.6, "bench": 0.0, "plan": 1.25}  # x the largest activation
ALL_COPIES = {"export": 0.0, "check": 0.0, "bench": 0.13, "plan": 0.0}  # x every activation (ORT's planned arena)
RANGE_COPIES = 1.2  # fp16/int8 export and plan: range collection outputs every tensor at once
PHOTO_BYTES = {"export": 60, "check": 32, "bench": 60, "plan": 60}  # per photo and input pixel (preprocessing copies)
VALIDATION_IMAGES = 2  # an export validates on two photos
MARGIN = 1.25  # kept on top of the fitted estimate


def model_profile(spec: ModelSpec) -> tuple[float, float, float]:
    """(all_channels, peak_channels, params in millions) for the spec's model."""
    if spec.name in PROFILES:
        return PROFILES[spec.name]
    return tuple(max(p[i] for p in PROFILES.values()) for i in range(3))  # an unlisted model: the largest figures


def estimate_bytes(
    spec: ModelSpec,
    operation: str,
    images: Optional[int] = None,
    precision: str = "fp32",
    calib_count: Optional[int] = None,
) -> int:
    """Peak resident bytes `operation` should need at the spec's input size (see the module doc).
    `images`: photos held at the input size (default: 2 to validate an export, 8 for check);
    `calib_count`: calibration images of an fp16/int8 export or plan."""
    if operation not in OPERATIONS:
        raise ValueError(f"operation must be one of {OPERATIONS}")
    return int(MARGIN * fitted_bytes(spec, operation, images, precision=precision, calib_count=calib_count))


def fitted_bytes(spec: ModelSpec, operation: str, images: Optional[int], precision: str = "fp32", calib_count: Optional[int] = None) -> float:
    """The fitted model of the module doc, without the margin."""
    all_channels, peak_channels, params = model_profile(spec)
    batch, _, height, width = spec.input_shape
    pixels = batch * height * width
    if images is None:
        images = {"export": VALIDATION_IMAGES, "check": 8, "bench": 1, "plan": VALIDATION_IMAGES}[operation]
    photo = PHOTO_BYTES[operation]
    total = BASE[operation] + WEIGHT_COPIES[operation] * 4 * params * 1e6
    total += pixels * 4 * (PEAK_COPIES[operation] * peak_channels + ALL_COPIES[operation] * all_channels)
    total += max(images, batch) * height * width * photo
    if operation == "plan" or precision != "fp32":
        if calib_count is None:
            calib_count = 16 if height * width > 1 << 20 else 64
        total += pixels * RANGE_COPIES * 4 * all_channels + calib_count * height * width * photo
    return total


def _read_meminfo(key: str) -> Optional[int]:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room() -> Optional[int]:
    """A cgroup v2 memory limit minus its usage (containers), if there is one."""
    try:
        with open("/sys/fs/cgroup/memory.max") as handle:
            limit = handle.read().strip()
        if limit == "max":
            return None
        with open("/sys/fs/cgroup/memory.current") as handle:
            return int(limit) - int(handle.read().strip())
    except (OSError, ValueError):
        return None


def limit_bytes() -> tuple[Optional[int], str]:
    """(bytes this process may use, where that figure comes from); (None, ...) when unknown."""
    override = os.environ.get(ENV_LIMIT)
    if override:
        try:
            value = float(override)
            if not math.isfinite(value) or value <= 0:
                raise ValueError
        except ValueError:
            raise UserError(f"{ENV_LIMIT}={override!r} is not a positive number of GB", f"unset it, or set e.g. {ENV_LIMIT}=16") from None
        return int(value * GB), f"the limit {ENV_LIMIT} sets"
    available = _read_meminfo("MemAvailable")
    source = "available on this host"
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None, "unknown"
    room = _cgroup_room()
    if room is not None and room < available:
        available, source = max(room, 0), "left under this container's memory limit"
    return available, source


def fits(spec: ModelSpec, operation: str, share: float = 1.0, **extra) -> bool:
    """Whether `operation` at the spec's size fits in `share` of the memory limit."""
    limit, _ = limit_bytes()
    return limit is None or estimate_bytes(spec, operation, **extra) <= share * limit


def at_size(spec: ModelSpec, height: int, width: int, *, batch: Optional[int] = None) -> ModelSpec:
    """The spec at another input size (and batch), unvalidated: only its memory is asked about (a
    SAM model takes one size, yet how much a smaller one would need is still a fair question)."""
    n, c, _, _ = spec.input_shape
    return replace(spec, input_shape=(n if batch is None else batch, c, height, width))


def largest_fitting(spec: ModelSpec, operation: str = "export", **extra) -> tuple[int, int]:
    """The largest height x width of the spec's aspect ratio (multiples of its size_multiple, no
    larger than the spec's) that fits this host for `operation` with 10% to spare (the memory
    available moves); at least the smallest size the model takes."""
    m = spec.size_multiple
    aspect = spec.width / spec.height

    def size(k: int) -> tuple[int, int]:
        return k * m, max(2 * m, min(spec.width, round(k * m * aspect / m) * m))

    low, high = 2, max(2, spec.height // m)  # the answer is in [low, high]; low is the floor
    while low < high:
        middle = (low + high + 1) // 2
        if fits(at_size(spec, *size(middle)), operation, 0.9, **extra):
            low = middle
        else:
            high = middle - 1
    return size(low)


def fitting_size(spec: ModelSpec, height: int, width: int, operation: str = "export") -> tuple[int, int]:
    """(height, width), or the largest size of that aspect ratio `operation` fits in this host's
    memory when that one does not: a size suggested to the user is never one that is then refused."""
    aligned = at_size(spec, height, width)
    return (height, width) if fits(aligned, operation) else largest_fitting(aligned, operation)


def with_input(spec: ModelSpec, batch: Optional[int] = None, height: Optional[int] = None, width: Optional[int] = None) -> ModelSpec:
    """spec.with_input for a size the user asked for: a size the model cannot take is refused with
    the nearest one it takes that also fits this host's memory for an export."""
    try:
        return spec.with_input(batch, height, width)
    except InputSizeError as error:
        raise UserError(error.message, error.suggest(*fitting_size(spec, *error.nearest)), error.exit_code) from None


def require_fits(spec: ModelSpec, operation: str, what: Optional[str] = None, **extra) -> None:
    """UserError (exit 2) when `operation` at the spec's size needs more memory than this host has."""
    limit, source = limit_bytes()
    if limit is None:
        return
    needed = estimate_bytes(spec, operation, **extra)
    if needed <= limit:
        return
    batch, _, height, width = spec.input_shape
    what = what or f"{operation} of {spec.name} at {height}x{width}" + (f", batch {batch}" if batch > 1 else "")
    more = f"a host with more memory ({ENV_LIMIT} overrides the limit)"
    if spec.promptable:  # SAM takes its one size: only more memory helps
        hint = f"use {more}; {spec.name} takes {height}x{width} images only"
    else:
        h, w = largest_fitting(at_size(spec, height, width, batch=1), operation, **extra)
        hint = f"use a smaller size (about {h}x{w} fits here" + (", at batch 1" if batch > 1 else "") + f"), or {more}"
    raise UserError(f"{what} needs about {needed / GB:.1f} GB of memory; {limit / GB:.1f} GB is {source}", hint)
