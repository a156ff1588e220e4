"""Image sources and the ModelSpec's preprocessing: what parity, calibration and the trained references read.

Real photos are the default (scikit-image ships a handful), because random noise exercises ranges
no camera produces; synthetic inputs exist only when asked for explicitly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from evitdeploy.errors import UserError
from evitdeploy.files import IMAGE_MAX_BYTES, input_file
from evitdeploy.spec import ModelSpec

# Distinct colour photos that scikit-image ships in its wheel (no download). Not `cat` (the same
# array as `chelsea`) nor `camera` (grayscale); `motorcycle` is the left view of stereo_motorcycle.
SAMPLE_PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "motorcycle",
)
_PHOTO_LOADERS = {"motorcycle": lambda data: data.stereo_motorcycle()[0]}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def sample_photos(count: int = 8) -> list[np.ndarray]:
    """Up to len(SAMPLE_PHOTOS) real photos (HWC uint8 RGB) bundled with scikit-image."""
    try:
        from skimage import data
    except ImportError as exc:
        raise UserError(
            "scikit-image (the bundled sample photos) is not installed",
            "pip install scikit-image, or pass --data FOLDER/.npz",
            3,
        ) from exc
    return [as_rgb(_PHOTO_LOADERS.get(name, lambda data: getattr(data, name)())(data)) for name in SAMPLE_PHOTOS[:count]]


NPZ_HINT = "pass an .npz with images, shape (N, H, W, 3) uint8 or (N, 3, H, W) float32"
FOLDER_HINT = f"put {', '.join(sorted(IMAGE_SUFFIXES))} files there"
FINITE_HINT = "input data must be finite numbers: replace or drop the images that hold NaN or Inf"


def image_files(folder: Path) -> list[Path]:
    """The image files of a folder, in name order."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def require_some(found: int, label: str, *, noun: str = "images", purpose: str = "parity", hint: str = NPZ_HINT) -> None:
    """An empty source is the user's to fix, said where it is read: an empty list would otherwise
    fail deep inside preprocessing (torch.cat of nothing, a modulo by zero)."""
    if found < 1:
        raise UserError(f"{label} holds 0 {noun}; {purpose} needs at least 1", hint)


def require_finite(array: np.ndarray, label: str) -> None:
    """NaN/Inf in the input would come out as NaN/Inf outputs, blamed on the exporter or backend."""
    if array.dtype.kind in "fc":
        bad = array.size - int(np.count_nonzero(np.isfinite(array)))
        if bad:
            raise UserError(f"{label} holds {bad} NaN/Inf values", FINITE_HINT)


def folder_photos(folder: Path, count: Optional[int] = None, *, label: Optional[str] = None, noun: str = "images", purpose: str = "parity") -> list[np.ndarray]:
    files = image_files(folder)
    require_some(len(files), label or str(folder), noun=noun, purpose=purpose, hint=FOLDER_HINT)
    return [read_photo(path, "remove or replace the file") for path in files[:count]]


MAX_MEGAPIXELS = 50  # a larger image is refused before it is decoded (its float copies would take GBs)
# Pillow modes of 8-bit photos, made RGB as the reference's loader does (convert("RGB")); 16-bit,
# 32-bit and float images and CMYK are refused: their conversion to 8-bit RGB is the user's choice.
PHOTO_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA")


def read_photo(path: Path, hint: str) -> np.ndarray:
    """One photo file as HWC uint8 RGB (predict's image, every image of a --data/--calib folder).
    Its kind, size and mode are read first, so a FIFO, a huge image or a 16-bit one is refused
    undecoded. EXIF orientation is not applied, as the reference's loader does not apply it."""
    import warnings

    from PIL import Image
    from skimage.io import imread

    input_file(path, "image", hint, limit=IMAGE_MAX_BYTES)  # a FIFO named x.png would block the decoder
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's DecompressionBombWarning: the size is judged below
            with Image.open(path) as header:
                width, height, mode = header.size[0], header.size[1], header.mode
    except Exception as exc:
        raise UserError(f"cannot read image {path} ({type(exc).__name__})", hint) from exc
    if width * height > MAX_MEGAPIXELS * 1e6:
        raise UserError(
            f"image {path} is {width}x{height} ({width * height / 1e6:.0f} megapixels)",
            f"evitdeploy reads up to {MAX_MEGAPIXELS} megapixels: scale it down first",
        )
    if mode not in PHOTO_MODES:
        kind = "a CMYK" if mode == "CMYK" else f"a {mode} (16- or 32-bit)" if mode.startswith(("I", "F")) else f"a {mode}"
        raise UserError(f"image {path} is {kind} image; evitdeploy reads 8-bit RGB, grayscale or palette photos", "convert it to 8-bit sRGB first")
    try:
        pixels = as_rgb(imread(path))
    except Exception as exc:
        raise UserError(f"cannot read image {path} ({type(exc).__name__})", hint) from exc
    if pixels.ndim != 3 or pixels.shape[-1] != 3 or min(pixels.shape[:2]) < 1:
        raise UserError(f"{path} is not one RGB or grayscale image (decoded shape {pixels.shape})", "pass a single-frame RGB or grayscale photo")
    return pixels


def as_rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    image = image[..., :3]
    if image.dtype != np.uint8:
        image = np.clip(image * (255.0 if image.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    return image


def preprocess(images: list[np.ndarray], spec: ModelSpec, height: int, width: int) -> np.ndarray:
    """Photos (HWC uint8 RGB) made into the model's input the way the reference evaluated its
    weights (spec.preprocessing, run by device/preprocess.py, the code bundles carry): NCHW float32."""
    from evitdeploy.device.preprocess import prepare

    settings = spec.preprocessing
    return np.stack([prepare(as_rgb(image), settings, (height, width)) for image in images]).astype(np.float32, copy=False)


def load_inputs(
    spec: ModelSpec,
    height: int,
    width: int,
    source: Optional[Path] = None,
    count: int = 8,
    synthetic: bool = False,
    seed: int = 0,
    purpose: str = "parity",
) -> tuple[np.ndarray, str]:
    """Preprocessed inputs (N, 3, H, W) and a description of where they came from."""
    inputs, _, description = load_inputs_and_sizes(spec, (height, width), source=source, count=count, synthetic=synthetic, seed=seed, purpose=purpose)
    return inputs, description


def load_inputs_and_sizes(
    spec: ModelSpec,
    size: tuple[int, int],
    source: Optional[Path] = None,
    count: int = 8,
    synthetic: bool = False,
    seed: int = 0,
    purpose: str = "parity",
) -> tuple[np.ndarray, list[tuple[int, int]], str]:
    """Preprocessed inputs, each photo's original (height, width) (what SAM's prompts are given
    in; the input size for arrays that are already preprocessed), and where they came from.
    `purpose` (the verb: check, export) words the refusal of a source with no images."""
    height, width = size
    if synthetic:
        rng = np.random.default_rng(seed)
        return rng.standard_normal((count, 3, height, width), dtype=np.float32), [size] * count, f"synthetic N(0,1) x{count}"
    if source is None:
        photos, description = sample_photos(count), f"scikit-image sample photos x{min(count, len(SAMPLE_PHOTOS))}"
    elif Path(source).is_dir():
        photos, description = folder_photos(Path(source), count, purpose=purpose), f"images from {source}"
    elif Path(source).suffix == ".npz":
        key, array = read_npz(Path(source), spec, purpose=purpose)
        if not is_photo_array(array):
            inputs = npz_inputs(Path(source), spec, height, width=width, count=count, purpose=purpose)
            return inputs, [size] * len(inputs), f"arrays from {source}"
        photos, description = list(array[:count]), f"arrays from {source}"
    else:
        raise UserError(f"input data {source} is neither an image folder nor an .npz file", "pass --data FOLDER or --data FILE.npz")
    return preprocess(photos, spec, height, width=width), [tuple(p.shape[:2]) for p in photos], description


PREPROCESSING_HINT = (
    'pass a JSON file holding either the settings ({"resize": "shorter", "interpolation": "bicubic", "library": "pil", "crop_ratio": 0.95, '
    '"rounding": "ceil", "mean": [...], "std": [...]}) or a timm checkpoint\'s config.json (its pretrained_cfg)'
)


def read_preprocessing(path: Path) -> dict:
    """--preprocessing FILE: how the user's model saw its photos when it was trained and evaluated,
    as device/preprocessing.py's settings or a timm pretrained config (from_timm); checked by
    preprocessing.problems, one line for what is wrong."""
    import json

    from evitdeploy.device import preprocessing
    from evitdeploy.files import TEXT_MAX_BYTES, read_input_text

    text = read_input_text(Path(path), "--preprocessing file", PREPROCESSING_HINT, limit=TEXT_MAX_BYTES)
    try:
        found = json.loads(text)
    except ValueError as exc:
        raise UserError(f"--preprocessing file {path} is not JSON ({exc})", PREPROCESSING_HINT) from None
    if not isinstance(found, dict):
        raise UserError(f"--preprocessing file {path} holds no JSON object", PREPROCESSING_HINT)
    if "resize" not in found:  # not our settings: a timm config
        try:
            found = preprocessing.from_timm(found)
        except (ValueError, AttributeError, TypeError) as exc:
            raise UserError(f"--preprocessing file {path}: {exc}", PREPROCESSING_HINT) from None
    problems = preprocessing.problems(found)
    if problems:
        raise UserError(f"--preprocessing file {path}: {problems[0]}", PREPROCESSING_HINT)
    return found


PIPELINE_PHOTOS = 2  # raw photos a bundle carries for verify.py's whole-pipeline check
PIPELINE_PHOTO_SIDE = 320  # their longest side at most: bundles stay small


def pipeline_photos(spec: ModelSpec, source: Optional[Path] = None) -> list[np.ndarray]:
    """The raw photos (HWC uint8 RGB) a bundle carries to check the whole pipeline on the device:
    the first of --data's photos, else two non-square sample photos, shrunk to fit
    PIPELINE_PHOTO_SIDE; [] where --data holds preprocessed arrays (no photos to carry)."""
    from PIL import Image

    if source is None:
        photos = sample_photos(3)[1:]  # coffee (400x600) and chelsea (300x451): not square, so every resize rule shows
    elif Path(source).is_dir():
        photos = folder_photos(Path(source), PIPELINE_PHOTOS)
    else:
        _, array = read_npz(Path(source), spec)
        photos = list(array[:PIPELINE_PHOTOS]) if is_photo_array(array) else []
    shrunk = []
    for photo in photos[:PIPELINE_PHOTOS]:
        image = Image.fromarray(np.ascontiguousarray(photo))
        image.thumbnail((PIPELINE_PHOTO_SIDE, PIPELINE_PHOTO_SIDE), Image.BILINEAR)
        shrunk.append(np.asarray(image))
    return shrunk


def read_npz(path: Path, spec: ModelSpec, *, label: Optional[str] = None, noun: str = "images", purpose: str = "parity") -> tuple[str, np.ndarray]:
    """The array an .npz holds for this model: the one named like the input, else the first.
    Refused: no images in it (a first axis of 0) and NaN/Inf anywhere in it. `label` names the
    source in a refusal (the path; "--calib PATH" for calibration data)."""
    input_file(path, "input data", "pass a valid .npz made with numpy.savez")  # a FIFO or a device is refused, not opened
    try:
        with np.load(path, allow_pickle=False) as archive:
            key = spec.input_name if spec.input_name in archive.files else archive.files[0]
            array = archive[key]
    except Exception as exc:
        raise UserError(f"cannot read {path} ({type(exc).__name__})", "pass a valid .npz made with numpy.savez") from exc
    label = label or str(path)
    if array.ndim >= 1:
        require_some(array.shape[0], label, noun=noun, purpose=purpose)
    require_finite(array, label)
    return key, array


def is_photo_array(array: np.ndarray) -> bool:
    return array.ndim == 4 and array.shape[-1] == 3 and array.dtype == np.uint8


def npz_inputs(path: Path, spec: ModelSpec, height: int, width: int, count: int, **refusal) -> np.ndarray:
    """An .npz holds either photos (N, H, W, 3) uint8 or preprocessed inputs (N, 3, H, W) float32.
    `refusal`: read_npz's label, noun and purpose."""
    key, array = read_npz(path, spec, **refusal)
    if is_photo_array(array):
        return preprocess(list(array[:count]), spec, height, width=width)
    if array.ndim == 4 and array.shape[1:] == (3, height, width):
        return array[:count].astype(np.float32)
    raise UserError(
        f"{path} array {key!r} has shape {array.shape} {array.dtype}",
        f"expected (N, H, W, 3) uint8 photos or (N, 3, {height}, {width}) float32 inputs",
    )
