"""What each API verb is asked to do, as one typed value instead of a long argument list.

Build them by keyword (`ExportRequest(model="efficientvit_b0", height=64, width=64)`); fields and
defaults are those of the CLI's flags. Checking the values stays with the API function that runs
the request (limits, memory, paths), so a request is plain data. A progress callback is not part
of a request: the API functions take it as their own keyword argument.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from evitdeploy.precision.options import PrecisionOptions


@dataclass(frozen=True, kw_only=True)
class ExportRequest:
    """`export`: one model, for a target at a precision, into a validated artifact folder."""

    model: str
    target: str = "onnx"
    precision: str = "fp32"
    output: Optional[Path] = None  # None: MODEL-TARGET-PRECISION
    checkpoint: Optional[Path] = None  # None: random init from `seed`
    batch: Optional[int] = None
    height: Optional[int] = None
    width: Optional[int] = None
    dynamic: Union[str, tuple[str, ...]] = ()  # names of spec.DYNAMIC_AXES, or 'batch,height' / 'all' as on the command line
    opset: Optional[int] = None  # None: the model's default (graph.default_opset)
    simplify: bool = True
    force: bool = False  # replace an existing output folder
    seed: int = 0
    attention_eps: Optional[float] = None
    data: Optional[Path] = None  # validation images [default: the sample photos]
    preprocessing: Optional[Path] = None  # a JSON of device/preprocessing.py's settings or a timm config.json [default: the task's reference]
    reduced: PrecisionOptions = field(default_factory=PrecisionOptions)  # calibration and planning for fp16/bf16/int8
    profile: Any = None  # the deploy profile (profiles.Profile) exporting for, if any
    backend_options: Mapping[str, Any] = field(default_factory=dict)  # options the target declares ({"nhwc": True}, {"delegate": "coreml"})


@dataclass(frozen=True, kw_only=True)
class DeployRequest:
    """`deploy`: export -> check -> bench -> bundle for a device profile, one verdict. With
    precision "auto" every candidate of the profile is measured and the fastest that passes is
    deployed (`executor`/`address`: where the candidates are measured)."""

    profile: str  # a shipped profile's name or a .toml path
    model: str
    output: Optional[Path] = None  # None: MODEL-PROFILE-PRECISION (MODEL-PROFILE-auto)
    precision: Optional[str] = None  # None: the profile's; "auto": measure every candidate
    backend: Optional[str] = None  # one of the profile's candidates instead of its own backend
    checkpoint: Optional[Path] = None
    reduced: PrecisionOptions = field(default_factory=PrecisionOptions)
    backend_options: Mapping[str, Any] = field(default_factory=dict)  # over the profile's [options]
    data: Optional[Path] = None
    preprocessing: Optional[Path] = None  # as ExportRequest's
    samples: int = 8
    seed: int = 0
    force: bool = False
    height: Optional[int] = None
    width: Optional[int] = None
    sign_key: Optional[Path] = None  # a PEM EC private key: the bundle is signed (model.sig)
    executor: Optional[str] = None  # with precision "auto": local or ray [default: local]
    address: Optional[str] = None  # with executor ray: HOST:PORT or auto
    dataset: Optional[Path] = None  # labelled data the artifact (every candidate, with "auto") is evaluated on
    dataset_limit: Optional[int] = None  # images of it drawn with `seed` [default: all]
    max_drop: Optional[float] = None  # points of the headline metric the artifact may lose against PyTorch FP32 on `dataset`
    eval_subset: Optional[int] = None  # labelled photos of `dataset` the bundle carries for verify.py to score


@dataclass(frozen=True, kw_only=True)
class PlanRequest:
    """`plan`: the precision plan an fp16/bf16/int8 export of a model would follow."""

    model: str
    precision: str
    checkpoint: Optional[Path] = None
    height: Optional[int] = None
    width: Optional[int] = None
    seed: int = 0
    attention_eps: Optional[float] = None
    opset: Optional[int] = None
    reduced: PrecisionOptions = field(default_factory=PrecisionOptions)
    torch_fp16: Optional[str] = None  # a PyTorch device ("cpu", "cuda"): also run the plan's FP16 there


@dataclass(frozen=True, kw_only=True)
class CheckRequest:
    """`check`: parity of an artifact against the PyTorch reference."""

    path: Path  # artifact folder or its model file
    model_name: Optional[str] = None  # for a bare model file without a manifest
    checkpoint: Optional[Path] = None  # the reference's weights [default: the manifest's]
    data: Optional[Path] = None
    samples: int = 8
    synthetic: bool = False
    batch: Optional[int] = None
    height: Optional[int] = None
    width: Optional[int] = None
    threads: Optional[int] = None
    tolerance_overrides: Optional[dict] = None  # gates to replace ({"max_abs": 1e-3}); a gate given as None is off


@dataclass(frozen=True, kw_only=True)
class EvalRequest:
    """`eval`: the artifact's task metric on labelled data, beside the PyTorch FP32 reference's."""

    path: Path  # artifact or bundle folder
    dataset: Path  # labelled.datasets. layouts
    limit: Optional[int] = None  # images drawn with `seed`; None: all
    seed: int = 0  # the subset's and the bootstrap's
    checkpoint: Optional[Path] = None  # the reference's weights [default: the manifest's]
    threads: Optional[int] = None


@dataclass(frozen=True, kw_only=True)
class BenchRequest:
    """`bench`: latency of one artifact on this host (and optionally of PyTorch eager)."""

    path: Path  # artifact folder or its model file
    model_name: Optional[str] = None  # for a bare model file without a manifest
    checkpoint: Optional[Path] = None  # weights for against_torch [default: the manifest's]
    threads: Optional[int] = None  # None: all cores
    warmup: int = 10
    count: Optional[int] = None
    min_time_s: float = 0.0
    batch: Optional[int] = None
    height: Optional[int] = None
    width: Optional[int] = None
    against_torch: bool = False


@dataclass(frozen=True, kw_only=True)
class InterleaveRequest:
    """`gate --interleave`: two artifacts timed in one process, taking turns."""

    baseline_path: Path
    new_path: Path
    threads: Optional[int] = None  # None: all cores
    warmup: int = 10
    count: Optional[int] = None
    min_time_s: float = 0.0
    block: int = 1  # timed runs per turn


@dataclass(frozen=True, kw_only=True)
class PredictRequest:
    """`predict`: one image through an artifact, the prediction drawn onto it as a PNG."""

    path: Path  # artifact folder or its model file
    image: Path  # the photo: .png, .jpg, .bmp, .tif or .webp
    output: Path  # the PNG to write
    model_name: Optional[str] = None  # for a bare model file without a manifest
    top: int = 5  # classifiers: labels listed; segmenters: classes in the picture's legend
    points: tuple[tuple[float, float], ...] = ()  # promptable models: (x, y) in image pixels
    point_labels: tuple[int, ...] = ()  # one per point: 1 foreground, 0 background; () = all foreground
    box: Optional[tuple[float, float, float, float]] = None  # promptable models: (x0, y0, x1, y1) in image pixels
    multimask: bool = False  # promptable models: show SAM's three multimask outputs, not the one its conventions pick
    save_mask: Optional[Path] = None  # promptable models: write the mask there (.png or .npy)
    threads: Optional[int] = None  # None: all cores
    force: bool = False  # replace an existing output PNG
