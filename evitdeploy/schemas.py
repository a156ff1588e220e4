"""One schema per JSON kind evitdeploy reads, validated once where it is read (pydantic v2, strict).

Artifact and bundle manifests, check/bench results and sweep lines all come from outside:
another host, another version, a hand edit. Each is checked here, before any code indexes into
it, so a malformed file is one line naming the file, the field and what was expected, never a
KeyError deep inside a verb. Only the fields evitdeploy reads are declared; other keys are kept
(a newer writer may add some). The device's verify.py cannot import this (numpy only) and keeps
its own checks of the few fields it reads (device.integrity.MANIFEST_FIELDS, held equal to these
schemas by tests/test_manifest_contract.py); the task names are the device's (device.tasks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import pydantic_core
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from evitdeploy import files, limits
from evitdeploy.device import cpu, preprocessing
from evitdeploy.device.tasks import CLASSIFICATION, PROMPTABLE, SEGMENTATION, TASKS
from evitdeploy.errors import UserError


class _Schema(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow", frozen=True)


def _relative_name(name: str) -> str:
    parts = name.split("/")
    if name.startswith("/") or "\\" in name or any(part in ("", ".", "..") for part in parts):
        raise ValueError("must be a path inside the folder (no '/', '..' or '\\' at its start)")
    return name


PositiveInt = Annotated[int, Field(ge=1)]
Count = Annotated[int, Field(ge=0)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
Cosine = Annotated[float, Field(ge=-1, le=1, allow_inf_nan=False)]
Name = Annotated[str, Field(min_length=1, max_length=256)]
FileName = Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(_relative_name)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Shape4 = tuple[PositiveInt, PositiveInt, PositiveInt, PositiveInt]
Precision = Literal["fp32", "fp16", "bf16", "int8"]  # every precision the shared plan knows (evitdeploy.precision)
Target = Name  # checked against the registry (evitdeploy.backends) by whoever opens the artifact


# --- manifests -------------------------------------------------------------------------------


class SpecSchema(_Schema):
    """evitdeploy.spec.ModelSpec as a manifest carries it."""

    name: Name
    task: Literal[TASKS]
    family: str
    dataset: str
    num_classes: Annotated[int, Field(ge=1, le=1_000_000)]
    input_shape: tuple[PositiveInt, Literal[3], PositiveInt, PositiveInt]  # N, RGB, H, W
    input_name: Name = "image"
    output_name: Name = "logits"
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    dtype: Literal["float32", "float16"] = "float32"
    mean: tuple[Finite, Finite, Finite]
    std: tuple[Positive, Positive, Positive]
    output_stride: PositiveInt = 1
    size_multiple: PositiveInt = 32
    attention_eps: NonNegative = 1e-5
    dynamic_axes: tuple[Literal["batch", "height", "width"], ...] = ()
    embedding: tuple[PositiveInt, ...] = ()  # promptable: (C, H, W) of the image embedding
    prompt_frame: Annotated[int, Field(ge=0, le=65536)] = 0
    decoder_masks: Literal[1, 3, 4] = 4
    multimask: Optional[bool] = None  # older manifests: True for 3 masks, False for 1 (decoder_masks now)
    preprocessing: Optional[dict] = None  # device/preprocess.py's settings; absent in older manifests

    @model_validator(mode="after")
    def _preprocessing_is_one_we_run(self) -> "SpecSchema":
        found = [] if self.preprocessing is None else preprocessing.problems(self.preprocessing)
        if found:
            raise ValueError(f"preprocessing: {found[0]}")
        return self

    @model_validator(mode="after")
    def _size_fits_the_backbone(self) -> "SpecSchema":
        height, width, multiple = self.input_shape[2], self.input_shape[3], self.size_multiple
        if height % multiple or width % multiple or min(height, width) < 2 * multiple:
            raise ValueError(f"input_shape {height}x{width} is not a multiple of size_multiple {multiple} (at least {2 * multiple})")
        if self.task == PROMPTABLE and (len(self.embedding) != 3 or self.prompt_frame < 1):
            raise ValueError("a promptable model needs embedding (C, H, W) and a prompt_frame")
        return self


class FileEntry(_Schema):
    sha256: Sha256
    bytes: Count


class SourceSchema(_Schema):
    """Where the weights came from; check/bench rebuild the PyTorch reference from it."""

    model: Optional[Name] = None
    seed: Optional[Annotated[int, Field(ge=0, le=limits.SEED_MAX)]] = None
    attention_eps: Optional[NonNegative] = None
    checkpoint: Optional[Annotated[str, Field(min_length=1, max_length=4096)]] = None
    checkpoint_sha256: Optional[Sha256] = None


class Int8KernelsSchema(_Schema):
    """What an INT8 model for x86 integer kernels was made for (evitdeploy.device.cpu)."""

    target: Literal[cpu.TARGETS]
    weight_bits: Literal[tuple(set(cpu.WEIGHT_BITS.values()))]
    judged_on: Literal[cpu.CLASSES]


class ArtifactManifest(_Schema):
    format: PositiveInt
    target: Target
    precision: Precision
    model_file: FileName
    spec: SpecSchema
    files: dict[FileName, FileEntry]
    toolchain: dict[str, str] = {}
    export: dict[str, Any] = {}
    source: SourceSchema = SourceSchema()
    # A promptable (SAM) artifact holds two models: {"encoder": file, "decoder": file}; model_file is the encoder.
    models: dict[Literal["encoder", "decoder"], FileName] = {}
    int8_kernels: Optional[Int8KernelsSchema] = None

    @model_validator(mode="after")
    def _two_models_for_sam(self) -> "ArtifactManifest":
        if self.spec.task == PROMPTABLE and set(self.models) != {"encoder", "decoder"}:
            raise ValueError("a promptable artifact names its encoder and decoder files under 'models'")
        for name in self.models.values():
            if name not in self.files and not any(f.startswith(name + "/") for f in self.files):
                raise ValueError(f"model file {name!r} is not among the manifest's files")
        return self


class TolerancesSchema(_Schema):
    max_abs: Optional[NonNegative] = None
    min_cosine: Cosine = 0.0
    min_top1: Fraction = 0.0
    min_pixel_agreement: Fraction = 0.0
    min_mask_iou: Fraction = 0.0
    max_iou_error: Optional[NonNegative] = None


class ProfileSummary(_Schema):
    name: Name
    description: str = ""
    host_machines: tuple[Name, ...] = ()
    host_device_model: Optional[str] = None
    host_gpu: Optional[str] = None
    notes: tuple[str, ...] = ()


class BundleBench(_Schema):
    threads: Optional[Annotated[int, Field(ge=1, le=1024)]] = None
    warmup: Annotated[int, Field(ge=0, le=100_000)]
    count: Annotated[int, Field(ge=0, le=100_000)]


class BudgetSchema(_Schema):
    statistic: Literal["median", "p90", "p99"]
    latency_ms: Optional[Positive] = None


class EvalSubsetSection(_Schema):
    """The labelled photos a bundle carries (deploy --eval-subset) and what they scored when it was made."""

    file: Literal["eval.npz"]
    photos: PositiveInt
    metric: Literal["top1", "miou", "miou_box"]
    fp32: Fraction
    making_host: Optional[Fraction] = None
    max_drop_pt: Optional[Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)]] = None


class BundleSection(_Schema):
    eval_subset: Optional[EvalSubsetSection] = None
    profile: ProfileSummary
    tolerances: TolerancesSchema
    bench: BundleBench
    budget: BudgetSchema
    commands: dict[str, Optional[str]] = {}


class BundleManifest(ArtifactManifest):
    bundle: BundleSection


# --- results -------------------------------------------------------------------------------


class StatsSchema(_Schema):
    count: PositiveInt
    median_ms: Positive
    p90_ms: Positive
    p99_ms: Positive
    mean_ms: Positive
    std_ms: NonNegative
    throughput_per_s: NonNegative


class LatencyRun(_Schema):
    label: str = "/"
    input_shape: Optional[Shape4] = None
    backend: Optional[str] = None
    providers: Optional[list[str]] = None
    versions: dict[str, str] = {}
    stats: StatsSchema
    ms_per_megapixel: Optional[NonNegative] = None
    latency_samples_ms: Annotated[list[Finite], Field(min_length=1, max_length=10 * limits.COUNT_MAX)]


class HostSchema(_Schema):
    cpu: Optional[str] = None
    logical_cpus: Optional[PositiveInt] = None
    threads: Optional[PositiveInt] = None
    os: Optional[str] = None
    machine: Optional[str] = None
    load_average_1m: Optional[NonNegative] = None


class BenchResult(_Schema):
    kind: Literal["bench"]
    schema_: int = Field(alias="schema")
    artifact: Optional[str] = None
    artifact_sha256: Optional[str] = None
    model: Name = "?"
    target: Optional[str] = None
    precision: Optional[str] = None
    input_shape: Optional[Shape4] = None
    artifact_bytes: Optional[Count] = None
    host: HostSchema = HostSchema()
    results: Annotated[list[LatencyRun], Field(min_length=1)]
    speedup_vs_torch: Optional[Positive] = None


class ParityResult(_Schema):
    kind: Literal["parity"]
    model: Name = "?"
    target: Optional[str] = None
    precision: Optional[str] = None
    input_shape: Shape4
    artifact_bytes: Optional[Count] = None
    passed: Optional[bool]
    failures: list[str] = []
    metrics: dict[str, Optional[Union[int, float]]] = {}
    preprocessing: Optional[Annotated[str, Field(max_length=4096)]] = None  # how photos became inputs, in words


class CellSchema(_Schema):
    model: Name
    target: Name
    precision: Name
    height: PositiveInt
    width: PositiveInt
    profile: Optional[Name] = None


class StageNode(_Schema):
    """Where a stage of a sweep cell ran (a farm adds the Ray node id and the profiles it advertises)."""

    host: Name
    node_id: Optional[Name] = None
    profiles: list[Name] = []


class EvalValue(_Schema):
    value: Finite
    low: Finite
    high: Finite


class EvalSummary(_Schema):
    """A sweep cell's eval: the metrics without the per-image rows."""

    metrics: dict[Name, EvalValue]
    fp32: dict[Name, EvalValue]
    delta: dict[Name, EvalValue]


class SweepCellResult(_Schema):
    kind: Literal["sweep-cell"]
    eval: Optional[EvalSummary] = None
    cell: CellSchema
    status: Literal["ok", "parity-failed", "failed"]
    stage: Optional[str] = None
    error: Optional[str] = None
    artifact_bytes: Optional[Count] = None
    parity: Optional[ParityResult] = None
    bench: Optional[BenchResult] = None
    executor: Literal["local", "ray"] = "local"
    nodes: dict[Literal["export", "bench"], StageNode] = {}
    timeline: dict[Literal["export", "bench"], Annotated[list[Annotated[float, Field(allow_inf_nan=False)]], Field(min_length=2, max_length=2)]] = {}


class EvalImage(_Schema):
    """One scored image (or, promptable, instance): what a paired gate recomputes the metric from."""

    id: FileName  # the photo's path in the dataset ("#<annotation id>" after it for an instance)
    label: Optional[Count] = None  # classification
    top1: Optional[Count] = None
    inter: Optional[list[Count]] = None  # segmentation: per class
    union: Optional[list[Count]] = None
    iou_box: Optional[Fraction] = None  # promptable

    def has(self, task: str) -> bool:
        if task == CLASSIFICATION:
            return self.label is not None and self.top1 is not None
        if task == SEGMENTATION:
            return self.inter is not None and self.union is not None and len(self.inter) == len(self.union) > 0
        return self.iou_box is not None


class EvalResult(_Schema):
    kind: Literal["evaluation"]
    schema_: int = Field(alias="schema")
    artifact: Annotated[str, Field(max_length=4096)]
    model: Name
    task: Literal[TASKS]
    target: Name
    precision: Name
    metrics: dict[Name, EvalValue]
    fp32: dict[Name, EvalValue]
    delta: dict[Name, EvalValue]
    per_image: Annotated[list[EvalImage], Field(min_length=1)]

    @model_validator(mode="after")
    def _rows_fit_the_task(self):
        from evitdeploy.device.eval_subset import HEADLINE

        headline = HEADLINE[self.task]
        if headline not in self.delta:
            raise ValueError(f"delta has no {headline!r}, the {self.task} headline metric")
        bad = next((row.id for row in self.per_image if not row.has(self.task)), None)
        if bad is not None:
            raise ValueError(f"per_image row {bad!r} lacks the {self.task} fields")
        ids = [row.id for row in self.per_image]
        if len(set(ids)) != len(ids):
            raise ValueError("per_image names an image twice")
        if self.task == SEGMENTATION and len({len(row.inter) for row in self.per_image}) != 1:
            raise ValueError("per_image rows count different classes")
        return self


RESULT_KINDS = {"parity": ParityResult, "bench": BenchResult, "sweep-cell": SweepCellResult, "evaluation": EvalResult}  # what `report` reads


# --- reading ---------------------------------------------------------------------------------


def _field(location: tuple) -> str:
    return ".".join(str(part) for part in location) or "the top level"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def describe(exc: ValidationError) -> str:
    """The first problem of a validation error as 'field `a.b`: expected ..., got ...'."""
    error = exc.errors(include_url=False)[0]
    if error["type"] == "json_invalid":
        return f"not valid JSON ({error['msg'].removeprefix('Invalid JSON: ')})"
    if error["type"] == "missing":
        return f"field `{_field(error['loc'])}` is missing"
    more = f" (and {exc.error_count() - 1} more problem{'s' if exc.error_count() > 2 else ''})" if exc.error_count() > 1 else ""
    return f"field `{_field(error['loc'])}`: {error['msg'][0].lower() + error['msg'][1:]}, got {_shown(error.get('input'))}{more}"


def parse_json(text: str) -> Any:
    """JSON to Python with a nesting limit (json.loads recurses until RecursionError)."""
    value = pydantic_core.from_json(text, allow_inf_nan=True)
    return value


def validated(text: str, schema: type[_Schema]) -> dict:
    """The document as a dict, once it matches `schema` (raises ValueError / ValidationError)."""
    schema.model_validate_json(text)
    return parse_json(text)


def of_kind(kind: str, version: int, *, what: str, hint: str, rerun: str):
    """A `first` check for load_document: the document is a `kind` result of schema `version`, or
    one line saying what it is instead (another kind, another format version)."""

    def check(data) -> None:
        if not isinstance(data, dict) or data.get("kind") != kind:
            found = data.get("kind") if isinstance(data, dict) else type(data).__name__
            raise UserError(f"{what} is not {'an' if kind[0] in 'aeiou' else 'a'} {kind} result (kind {found!r})", hint)
        if data.get("schema") != version:
            raise UserError(f"{what} has {kind} schema {data.get('schema')!r}; this evitdeploy reads schema {version}", rerun)

    return check


def load_document(path: Path, schema: type[_Schema], what: str, hint: str, first=None) -> dict:
    """Read and validate one JSON file; any problem is one UserError naming the file and field.
    `first(parsed)` may refuse the document before the schema does (a newer format, another kind)."""
    text = files.read_input_text(path, what, hint)
    try:
        if first is not None:
            first(parse_json(text))
        return validated(text, schema)
    except ValidationError as exc:
        raise UserError(f"{what} {path} is not valid: {describe(exc)}", hint) from None
    except ValueError as exc:  # from_json: not JSON, or nesting/number limits
        raise UserError(f"{what} {path} is not valid JSON ({exc})", hint) from None


def check_document(data: Any, schema: type[_Schema], what: str, hint: str) -> None:
    """Validate an already-parsed document (a line of a .jsonl, a result inside a list)."""
    try:
        schema.model_validate_json(pydantic_core.to_json(data))
    except ValidationError as exc:
        raise UserError(f"{what} is not valid: {describe(exc)}", hint) from None
    except (ValueError, pydantic_core.PydanticSerializationError) as exc:
        raise UserError(f"{what} cannot be read ({exc})", hint) from None


# ---- COCO-style instance annotations (`eval --dataset` for promptable models) ----


class CocoImage(_Schema):
    id: int
    file_name: Annotated[str, AfterValidator(_relative_name)]
    height: PositiveInt
    width: PositiveInt


class CocoRle(_Schema):
    size: tuple[PositiveInt, PositiveInt]  # height, width
    counts: Union[str, list[Count]]


class CocoAnnotation(_Schema):
    id: int
    image_id: int
    bbox: tuple[Finite, Finite, Annotated[float, Field(gt=0, allow_inf_nan=False)], Annotated[float, Field(gt=0, allow_inf_nan=False)]]  # x, y, w, h
    segmentation: Union[list[Annotated[list[Finite], Field(min_length=6)]], CocoRle]
    area: Optional[Annotated[float, Field(ge=0, allow_inf_nan=False)]] = None
    iscrowd: Literal[0, 1] = 0

    @model_validator(mode="after")
    def _polygons_are_points(self) -> "CocoAnnotation":
        if isinstance(self.segmentation, list) and any(len(polygon) % 2 for polygon in self.segmentation):
            raise ValueError("a polygon is a list of x, y pairs: an even count of numbers")
        return self


class CocoFile(_Schema):
    images: Annotated[list[CocoImage], Field(min_length=1)]
    annotations: list[CocoAnnotation]

    @model_validator(mode="after")
    def _ids_refer(self) -> "CocoFile":
        images = [image.id for image in self.images]
        if len(set(images)) != len(images):
            raise ValueError("two images share an id")
        known = set(images)
        ids = [a.id for a in self.annotations]
        if len(set(ids)) != len(ids):
            raise ValueError("two annotations share an id")
        stray = next((a for a in self.annotations if a.image_id not in known), None)
        if stray is not None:
            raise ValueError(f"annotation {stray.id} names image {stray.image_id}, which the file does not list")
        return self
