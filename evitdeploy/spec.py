"""ModelSpec: everything a backend needs to know about a model, and nothing about any backend.

Every artifact carries its ModelSpec in `manifest.json`, so a runner never guesses the input name,
layout, normalization or what the outputs mean.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Optional

from evitdeploy.device.preprocessing import IMAGENET_MEAN, IMAGENET_STD, for_task
from evitdeploy.device.tasks import CLASSIFICATION, PROMPTABLE, SEGMENTATION, TASKS  # noqa: F401 (spec.task's names, defined once)
from evitdeploy.errors import UserError

DYNAMIC_AXES = ("batch", "height", "width")


def parse_dynamic_axes(value) -> tuple[str, ...]:
    """Dynamic axes from 'batch,height,width' / 'all' / '' or a sequence of names, in DYNAMIC_AXES
    order. Names match exactly (no substrings: 'batchx' is not 'batch'); unknown ones are refused."""
    if value is None:
        return ()
    if isinstance(value, str):
        names = [a.strip() for a in value.split(",") if a.strip()]
    elif isinstance(value, (list, tuple, set, frozenset)) and all(isinstance(a, str) for a in value):
        names = list(value)
    else:
        raise UserError(f"dynamic axes {value!r} are not names", f"pass a list of {', '.join(DYNAMIC_AXES)} (or 'all')")
    if "all" in names:
        names = [a for a in names if a != "all"] + list(DYNAMIC_AXES)
    unknown = [a for a in names if a not in DYNAMIC_AXES]
    if unknown:
        raise UserError(f"unknown dynamic axis {unknown[0]!r}", f"use any of {', '.join(DYNAMIC_AXES)} or 'all'")
    return tuple(a for a in DYNAMIC_AXES if a in names)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    task: str  # one of TASKS: CLASSIFICATION, SEGMENTATION or PROMPTABLE (SAM: encoder + prompt decoder)
    family: str  # backbone variant: b0..b3, l1..l3; sam_l0..sam_xl1
    dataset: str  # what the head was made for: imagenet, cityscapes, ade20k; sa1b
    num_classes: int
    input_shape: tuple[int, int, int, int]  # N, C, H, W of the export / reference input
    input_name: str = "image"
    output_name: str = "logits"
    layout: str = "NCHW"
    dtype: str = "float32"
    mean: tuple[float, float, float] = IMAGENET_MEAN  # applied to pixels scaled to [0, 1]
    std: tuple[float, float, float] = IMAGENET_STD
    output_stride: int = 1  # segmentation logits come out at 1/8 of the input, as the reference's
    size_multiple: int = 32  # H and W must be multiples of the backbone's total stride
    attention_eps: float = 1e-5  # LiteMLA normalizer eps: part of a checkpoint's identity
    dynamic_axes: tuple[str, ...] = field(default=())  # subset of DYNAMIC_AXES
    # Promptable segmentation only: the encoder's image embedding (C, H, W); the square frame
    # prompts and masks live in (SAM's 1024); which of SAM's mask tokens the decoder returns:
    # 4, all of them (token 0 the single-mask output, 1..3 the multimask ones; what evitdeploy
    # exports), 3 the multimask ones or 1 the single one (artifacts made before all were kept).
    embedding: tuple[int, ...] = field(default=())
    prompt_frame: int = 0
    decoder_masks: int = 4
    # How a photo becomes the input (device/preprocess.py), when not the reference's for the task:
    # its settings as sorted (key, value) pairs, mean and std aside (they are the fields above).
    preprocess: tuple[tuple[str, object], ...] = field(default=())

    @property
    def preprocessing(self) -> dict:
        """The settings device/preprocess.prepare takes: the reference's evaluation transform for
        the task (classifier, segmenter, SAM predictor) unless the spec says otherwise."""
        settings = dict(self.preprocess) if self.preprocess else for_task(self.task)
        return {**settings, "mean": list(self.mean), "std": list(self.std)}

    def with_preprocessing(self, settings: dict) -> "ModelSpec":
        """A copy whose inputs are made with `settings` (a manifest's, timm's, a user's): mean and
        std go to their own fields."""
        rest = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items() if k not in ("mean", "std")}
        return replace(self, preprocess=tuple(sorted(rest.items())), mean=tuple(settings.get("mean", self.mean)), std=tuple(settings.get("std", self.std)))

    @property
    def promptable(self) -> bool:
        return self.task == PROMPTABLE

    @property
    def low_res_size(self) -> int:
        """The decoder's mask logits are 4x the embedding (SAM: 256 for a 64x64 embedding)."""
        return 4 * self.embedding[-1] if self.embedding else 0

    @property
    def mask_count(self) -> int:
        return self.decoder_masks

    @property
    def height(self) -> int:
        return self.input_shape[2]

    @property
    def width(self) -> int:
        return self.input_shape[3]

    @property
    def output_meaning(self) -> str:
        if self.task == CLASSIFICATION:
            return f"class logits (N, {self.num_classes})"
        if self.promptable:
            return (
                f"encoder: image embeddings (N, {', '.join(map(str, self.embedding))}); decoder: {self.mask_count} low-res mask "
                f"logits (N, {self.mask_count}, {self.low_res_size}, {self.low_res_size}) and their IoU predictions (N, {self.mask_count})"
            )
        return f"per-pixel class logits at stride {self.output_stride} (N, {self.num_classes}, H/8, W/8)"

    def output_shape(self, batch: int, height: int, width: int) -> tuple[int, ...]:
        if self.task == CLASSIFICATION:
            return (batch, self.num_classes)
        if self.promptable:
            return (batch, *self.embedding)
        return (batch, self.num_classes, height // self.output_stride, width // self.output_stride)

    def with_input(self, batch: Optional[int] = None, height: Optional[int] = None, width: Optional[int] = None) -> "ModelSpec":
        """A copy for another input size; refuses sizes the architecture cannot take."""
        n, c, h, w = self.input_shape
        n = n if batch is None else batch
        h = h if height is None else height
        w = w if width is None else width
        check_input_size(self, h, w)
        if self.promptable and (h, w) != (self.height, self.width):
            raise UserError(
                f"{self.name} takes {self.height}x{self.width} images: SAM resizes the longest side to it and pads",
                "drop --height/--width",
            )
        if n < 1:
            raise UserError(f"batch size {n} is not valid", "use --batch 1 or more")
        return replace(self, input_shape=(n, c, h, w))

    def to_dict(self) -> dict:
        data = asdict(self)
        del data["preprocess"]
        data["preprocessing"] = self.preprocessing  # resolved: a manifest says what ran, not "the default"
        data["output_meaning"] = self.output_meaning
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "ModelSpec":
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "preprocess"}
        if data.get("task") == PROMPTABLE and "decoder_masks" not in data:  # written when the decoder kept 3 masks or 1
            fields["decoder_masks"] = 3 if data.get("multimask", True) else 1
        for key in ("input_shape", "mean", "std", "dynamic_axes", "embedding"):
            if key in fields:
                fields[key] = tuple(fields[key])
        spec = cls(**fields)
        settings = data.get("preprocessing")  # absent in manifests written before it was recorded: the task's reference
        return spec.with_preprocessing(settings) if isinstance(settings, dict) and settings != spec.preprocessing else spec


class InputSizeError(UserError):
    """A height x width the backbone cannot take. `nearest` is the closest size it takes; the size
    suggested to the user also has to fit the host's memory, which memory.with_input knows."""

    def __init__(self, spec: ModelSpec, height: int, width: int):
        m = spec.size_multiple
        self.nearest = tuple(max(2 * m, round(v / m) * m) for v in (height, width))
        super().__init__(
            f"input size {height}x{width} does not fit {spec.name}: height and width must be multiples of {m} and at least {2 * m}",
            self.suggest(*self.nearest),
        )

    @staticmethod
    def suggest(height: int, width: int) -> str:
        return f"try --height {height} --width {width}"


def check_input_size(spec: ModelSpec, height: int, width: int) -> None:
    m = spec.size_multiple
    if height < 2 * m or width < 2 * m or height % m or width % m:
        raise InputSizeError(spec, height, width)
