"""A model's preprocessing as data: how a photo becomes its input, recorded in every manifest and run
by preprocess.py (numpy + Pillow). This module is plain Python, so the ModelSpec can name the
references' settings without importing numpy.

A preprocessing is a plain dict:
  resize         "shorter" (the shorter side to ceil|floor(size / crop_ratio), then a center crop),
                 "longest" (the longest side to the size, SAM's rounding, then zero padding at the
                 bottom and right) or "exact" (both sides to the size, the aspect ratio not kept)
  interpolation  "bicubic" | "bilinear" | "nearest"
  library        whose arithmetic the resize follows: "pil" (Pillow's filters, what torchvision's
                 Resize runs on a PIL image) or "opencv" (cv2.resize's cubic/linear)
  crop_ratio     "shorter" only: the crop's share of the resized shorter side (0.95: 224 of 236)
  rounding       "shorter" only: "ceil" (the EfficientViT reference) or "floor" (timm) of size / ratio
  mean, std      per channel, on pixels scaled to [0, 1]
  source         where these settings come from, in words (reports print it)

Every family's reference evaluation, in these terms:
- classifiers (the reference's eval, and timm's): shorter side to size/0.95, bicubic, Pillow,
  center crop, ImageNet mean/std;
- segmenters (the reference's Cityscapes/ADE20K eval): OpenCV INTER_CUBIC to the input size;
- EfficientViT-SAM (its predictor's set_image): Pillow bilinear so the longest side is the
  encoder's input size, SAM's mean/std, zeros padded at the bottom and right.
"""

import math

from .tasks import CLASSIFICATION, PROMPTABLE

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

RESIZES = ("shorter", "longest", "exact")
INTERPOLATIONS = ("bicubic", "bilinear", "nearest")
LIBRARIES = ("pil", "opencv")
ROUNDINGS = ("ceil", "floor")


def settings(resize: str, interpolation: str, library: str, *, mean=IMAGENET_MEAN, std=IMAGENET_STD, **more) -> dict:
    """A preprocessing dict: the one shape every reference's takes."""
    return {"resize": resize, "interpolation": interpolation, "library": library, **more, "mean": list(mean), "std": list(std)}


def classifier_reference(mean=IMAGENET_MEAN, std=IMAGENET_STD, crop_ratio: float = 0.95) -> dict:
    source = f"reference eval transform: bicubic, crop {crop_ratio:g}, PIL"
    return settings("shorter", "bicubic", "pil", crop_ratio=crop_ratio, rounding="ceil", mean=mean, std=std, source=source)


def segmenter_reference(mean=IMAGENET_MEAN, std=IMAGENET_STD) -> dict:
    return settings("exact", "bicubic", "opencv", mean=mean, std=std, source="reference eval transform: OpenCV INTER_CUBIC to the input size")


def sam_reference(mean=IMAGENET_MEAN, std=IMAGENET_STD) -> dict:
    """SAM's mean/std are written 123.675/255 ... 57.375/255 in its code: the same float32 values."""
    source = "reference predictor: PIL bilinear to the longest side, padded at the bottom and right"
    return settings("longest", "bilinear", "pil", mean=mean, std=std, source=source)


def for_task(task: str, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> dict:
    """The reference's evaluation transform for a task (a manifest's spec.task): what a manifest
    that records no preprocessing (one written before it was recorded) was evaluated with."""
    reference = {CLASSIFICATION: classifier_reference, PROMPTABLE: sam_reference}.get(task, segmenter_reference)
    return reference(mean=mean, std=std)


TIMM_INTERPOLATIONS = {"bicubic": "bicubic", "bilinear": "bilinear", "nearest": "nearest"}


def from_timm(config: dict) -> dict:
    """A timm pretrained config (a checkpoint's config.json, its `pretrained_cfg`, or
    resolve_data_config's dict) as a preprocessing: timm's eval transform resizes the shorter side
    to floor(size / crop_pct) with Pillow and center-crops. ValueError for what timm does that we
    do not (its "squash" and "border" crop modes, an interpolation it names that we lack)."""
    config = config.get("pretrained_cfg", config)
    mode = config.get("crop_mode", "center")
    if mode != "center":
        raise ValueError("timm's crop_mode {!r} is not supported: only 'center'".format(mode))
    interpolation = TIMM_INTERPOLATIONS.get(config.get("interpolation", "bicubic"))
    if interpolation is None:
        raise ValueError("timm's interpolation {!r} is not supported: bicubic, bilinear or nearest".format(config.get("interpolation")))
    ratio = config.get("crop_pct", 0.875)
    mean, std = config.get("mean", IMAGENET_MEAN), config.get("std", IMAGENET_STD)
    source = "timm pretrained config: {}, crop {}, PIL".format(interpolation, ratio)
    return settings("shorter", interpolation, "pil", crop_ratio=ratio, rounding="floor", mean=mean, std=std, source=source)


def describe(pre: dict) -> str:
    """The settings in words, for reports: their `source`, else what they do."""
    if pre.get("source"):
        return str(pre["source"])
    crop = f", crop {pre['crop_ratio']:g} ({pre['rounding']})" if pre.get("resize") == "shorter" else ""
    return f"{pre.get('resize')} side, {pre.get('interpolation')}, {pre.get('library')}{crop}"


def problems(pre) -> list:
    """What is wrong with a preprocessing dict from a manifest (empty: usable)."""
    if not isinstance(pre, dict):
        return ["preprocessing is not an object"]
    found = []
    for key, allowed in (("resize", RESIZES), ("interpolation", INTERPOLATIONS), ("library", LIBRARIES)):
        if pre.get(key) not in allowed:
            found.append(f"`{key}` must be one of {', '.join(allowed)} (got {pre.get(key)!r})")
    if pre.get("library") == "opencv" and pre.get("interpolation") == "nearest":
        found.append("OpenCV's nearest is not implemented here: use bilinear or bicubic")
    for key in ("mean", "std"):
        values = pre.get(key)
        if not (isinstance(values, (list, tuple)) and len(values) == 3 and all(_finite(v) for v in values)):
            found.append(f"`{key}` must be three finite numbers")
        elif key == "std" and min(values) <= 0:
            found.append("`std` must be positive")
    if pre.get("resize") == "shorter":
        ratio = pre.get("crop_ratio")
        if not (_finite(ratio) and 0 < ratio <= 1):
            found.append("`crop_ratio` must be a number in (0, 1]")
        if pre.get("rounding") not in ROUNDINGS:
            found.append(f"`rounding` must be one of {', '.join(ROUNDINGS)}")
    return found


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
