"""How a photo becomes a model's input, as data and one implementation (numpy + Pillow), shared by the
host (check, calibration, predict) and a bundle's device code, so both feed the model exactly what
the weights were evaluated with.

A preprocessing is a plain dict (it is recorded in every manifest):
  resize         "shorter" (the shorter side to ceil|floor(size / crop_ratio), then a center crop),
                 "longest" (the longest side to the size, SAM's rounding, then zero padding at the
                 bottom and right) or "exact" (both sides to the size, the aspect ratio not kept)
  interpolation  "bicubic" | "bilinear" | "nearest"
  library        whose arithmetic the resize follows: "pil" (Pillow's filters, what torchvision's
                 Resize runs on a PIL image) or "opencv" (cv2.resize's fixed-point cubic/linear)
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

import numpy as np

from .prompts import preprocess_shape

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SAM_MEAN = (123.675 / 255, 116.28 / 255, 103.53 / 255)
SAM_STD = (58.395 / 255, 57.12 / 255, 57.375 / 255)

RESIZES = ("shorter", "longest", "exact")
INTERPOLATIONS = ("bicubic", "bilinear", "nearest")
LIBRARIES = ("pil", "opencv")
ROUNDINGS = ("ceil", "floor")


def classifier_reference(mean=IMAGENET_MEAN, std=IMAGENET_STD, crop_ratio: float = 0.95) -> dict:
    return {
        "resize": "shorter",
        "interpolation": "bicubic",
        "library": "pil",
        "crop_ratio": crop_ratio,
        "rounding": "ceil",
        "mean": list(mean),
        "std": list(std),
        "source": f"reference eval transform: bicubic, crop {crop_ratio:g}, PIL",
    }


def segmenter_reference(mean=IMAGENET_MEAN, std=IMAGENET_STD) -> dict:
    return {
        "resize": "exact",
        "interpolation": "bicubic",
        "library": "opencv",
        "mean": list(mean),
        "std": list(std),
        "source": "reference eval transform: OpenCV INTER_CUBIC to the input size",
    }


def sam_reference(mean=SAM_MEAN, std=SAM_STD) -> dict:
    return {
        "resize": "longest",
        "interpolation": "bilinear",
        "library": "pil",
        "mean": list(mean),
        "std": list(std),
        "source": "reference predictor: PIL bilinear to the longest side, padded at the bottom and right",
    }


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


# ---- the pipeline ----


def prepare(image: np.ndarray, pre: dict, height: int, width: int) -> np.ndarray:
    """One RGB uint8 photo (H, W, 3) -> the model's input (3, height, width) float32."""
    image = np.ascontiguousarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
    if pre["resize"] == "longest":
        resized = resize_longest(image, max(height, width), pre)
        x = np.zeros((3, height, width), np.float32)  # padded after normalizing: zeros, as SamPad
        x[:, : resized.shape[0], : resized.shape[1]] = normalize(resized, pre)
        return x
    if pre["resize"] == "exact":
        return normalize(resize(image, (height, width), pre), pre)
    short = scaled_shorter(height, width, pre)
    resized = resize(image, shorter_side_size(image.shape[:2], short), pre)
    return normalize(center_crop(resized, height, width), pre)


def normalize(image: np.ndarray, pre: dict) -> np.ndarray:
    """HWC uint8 -> CHW float32, (x / 255 - mean) / std in float32, as ToTensor + Normalize."""
    x = image.transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    mean = np.asarray(pre["mean"], np.float32).reshape(3, 1, 1)
    std = np.asarray(pre["std"], np.float32).reshape(3, 1, 1)
    return (x - mean) / std


def scaled_shorter(height: int, width: int, pre: dict) -> int:
    """The size the shorter side is resized to before the crop: size / crop_ratio, rounded the
    preprocessing's way (for a non-square input, that of its larger side)."""
    size = max(height, width) / pre["crop_ratio"]
    return int(math.ceil(size)) if pre["rounding"] == "ceil" else int(math.floor(size))


def shorter_side_size(shape: tuple, short: int) -> tuple:
    """(h, w) with the shorter side `short` and the longer one scaled and truncated (torchvision's Resize(int))."""
    h, w = shape
    if w <= h:
        return int(short * h / w), short
    return short, int(short * w / h)


def center_crop(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """torchvision's CenterCrop: zero padding first if the image is smaller, offsets rounded half to even."""
    h, w = image.shape[:2]
    if height > h or width > w:
        top, left = (height - h) // 2 if height > h else 0, (width - w) // 2 if width > w else 0
        padded = np.zeros((max(h, height), max(w, width), image.shape[2]), image.dtype)
        padded[top : top + h, left : left + w] = image
        image, (h, w) = padded, padded.shape[:2]
    top, left = int(round((h - height) / 2.0)), int(round((w - width) / 2.0))
    return image[top : top + height, left : left + width]


def resize_longest(image: np.ndarray, long_side: int, pre: dict) -> np.ndarray:
    """SAM's SamResize: left as it is when its longest side already has the size."""
    if max(image.shape[:2]) == long_side:
        return image
    return resize(image, preprocess_shape(*image.shape[:2], long_side), pre)


def resize(image: np.ndarray, size: tuple, pre: dict) -> np.ndarray:
    """HWC uint8 to (h, w) with the preprocessing's interpolation and library."""
    if tuple(image.shape[:2]) == tuple(size):
        return image
    if pre["library"] == "opencv":
        return resize_opencv(image, size, pre["interpolation"])
    from PIL import Image

    filters = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), filters[pre["interpolation"]]))


# ---- OpenCV's resize arithmetic, without OpenCV ----


def _cubic_weights(t: np.ndarray) -> np.ndarray:
    """OpenCV's interpolateCubic (A = -0.75): four weights per fractional offset t."""
    a = -0.75
    w0 = ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a
    w1 = ((a + 2) * t - (a + 3)) * t * t + 1
    w2 = ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1
    return np.stack([w0, w1, w2, 1 - w0 - w1 - w2], axis=-1).astype(np.float32)


def _taps(source: int, target: int, interpolation: str):
    """Per output index: the source indices (replicated at the border) and their weights, from
    OpenCV's mapping (dx + 0.5) * scale - 0.5 computed in double and kept in float."""
    scale = 1.0 / (target / source)
    f = ((np.arange(target) + 0.5) * scale - 0.5).astype(np.float32)
    start = np.floor(f).astype(np.int64)
    t = (f - start).astype(np.float32)
    if interpolation == "bicubic":
        weights, offsets = _cubic_weights(t), np.arange(-1, 3)
    else:  # bilinear: OpenCV moves a neighbour outside the image onto the border pixel
        t = np.where((start < 0) | (start >= source - 1), np.float32(0), t)
        start = np.clip(start, 0, source - 1)
        weights, offsets = np.stack([1 - t, t], axis=-1), np.arange(0, 2)
    return np.clip(start[:, None] + offsets[None, :], 0, source - 1), weights


def resize_opencv(image: np.ndarray, size: tuple, interpolation: str) -> np.ndarray:
    """cv2.resize(image, (w, h), INTER_CUBIC | INTER_LINEAR) of a uint8 image: separable, in
    float32, rounded once at the end. Within one level of OpenCV's own (a few pixels in 10 000
    differ by one against OpenCV 5, whose sums run in another order)."""
    rows, row_weights = _taps(image.shape[0], size[0], interpolation)
    cols, col_weights = _taps(image.shape[1], size[1], interpolation)
    pixels = image.astype(np.float32)
    across = np.einsum("hxkc,xk->hxc", pixels[:, cols, :], col_weights, dtype=np.float32)
    down = np.einsum("ykxc,yk->yxc", across[rows, :, :], row_weights, dtype=np.float32)
    return np.clip(np.rint(down), 0, 255).astype(np.uint8)
