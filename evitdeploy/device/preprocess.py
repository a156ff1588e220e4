"""How a photo becomes a model's input: one implementation (numpy + Pillow) of the settings in
preprocessing.py, shared by the host (check, calibration, predict) and a bundle's device code, so
both feed the model exactly what the weights were evaluated with.
"""

import math

import numpy as np

from .prompts import preprocess_shape

# ---- the pipeline ----


def prepare(image: np.ndarray, pre: dict, size: tuple) -> np.ndarray:
    """One RGB uint8 photo (H, W, 3) -> the model's input (3, height, width) float32; size = (height, width)."""
    height, width = size
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
    cover = (scaled(height, pre), scaled(width, pre))
    size = covering_size(image.shape[:2], cover)
    if size[0] * size[1] > MAX_RESIZED_PIXELS:  # a far other aspect ratio than the photo's (64x99968)
        image = image[_aspect_box(image.shape[:2], cover)]
        size = covering_size(image.shape[:2], cover)
    return normalize(center_crop(resize(image, size, pre), height, width), pre)


def seen_box(shape: tuple, pre: dict, size: tuple) -> tuple:
    """The part of a photo of `shape` (h, w) that prepare() puts into an input of `size`, as
    (x0, y0, x1, y1) in the photo's pixels: the whole photo for "exact" and "longest", the
    center crop's footprint for "shorter"."""
    h, w = shape
    if pre["resize"] != "shorter":
        return (0, 0, w, h)
    cover = (scaled(size[0], pre), scaled(size[1], pre))
    rows, cols = slice(0, h), slice(0, w)
    resized = covering_size(shape, cover)
    if resized[0] * resized[1] > MAX_RESIZED_PIXELS:
        rows, cols = _aspect_box(shape, cover)
        resized = covering_size((rows.stop - rows.start, cols.stop - cols.start), cover)
    top, left = int(round((resized[0] - size[0]) / 2.0)), int(round((resized[1] - size[1]) / 2.0))
    sy, sx = (rows.stop - rows.start) / resized[0], (cols.stop - cols.start) / resized[1]
    x0, x1 = cols.start + max(0, left) * sx, cols.start + min(resized[1], left + size[1]) * sx
    y0, y1 = rows.start + max(0, top) * sy, rows.start + min(resized[0], top + size[0]) * sy
    return (int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1)))


def normalize(image: np.ndarray, pre: dict) -> np.ndarray:
    """HWC uint8 -> CHW float32, (x / 255 - mean) / std in float32, as ToTensor + Normalize."""
    x = np.ascontiguousarray(image.transpose(2, 0, 1)).astype(np.float32) / np.float32(255)  # C order: runtimes read the memory
    mean = np.asarray(pre["mean"], np.float32).reshape(3, 1, 1)
    std = np.asarray(pre["std"], np.float32).reshape(3, 1, 1)
    return (x - mean) / std


MAX_RESIZED_PIXELS = 64_000_000  # beyond this the photo is cropped to the input's aspect ratio before resizing


def scaled(size: int, pre: dict) -> int:
    """An input side divided by the crop ratio, rounded the preprocessing's way (236 for 224 at 0.95, reference)."""
    value = size / pre["crop_ratio"]
    return int(math.ceil(value)) if pre["rounding"] == "ceil" else int(math.floor(value))


def covering_size(shape: tuple, cover: tuple) -> tuple:
    """(h, w) of the photo resized, aspect kept, to cover `cover`: the binding side gets its size
    exactly and the other is scaled and truncated, as torchvision's Resize(int) does for a square
    input (timm's ResizeKeepRatio for a non-square one)."""
    (h, w), (ch, cw) = shape, cover
    if cw * h >= ch * w:  # the width binds
        return max(ch, int(cw * h / w)), cw
    return ch, max(cw, int(ch * w / h))


def _aspect_box(shape: tuple, cover: tuple) -> tuple:
    """(rows, cols) slices of the photo's centre with the aspect ratio of `cover`."""
    h, w = shape
    if cover[1] * h >= cover[0] * w:  # the photo is taller than the input: keep its width
        keep_h, keep_w = max(1, min(h, round(w * cover[0] / cover[1]))), w
    else:
        keep_h, keep_w = h, max(1, min(w, round(h * cover[1] / cover[0])))
    top, left = (h - keep_h) // 2, (w - keep_w) // 2
    return slice(top, top + keep_h), slice(left, left + keep_w)


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
