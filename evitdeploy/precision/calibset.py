"""The calibration set: real images through the model's own preprocessing, with a report.

One set serves every backend (QDQ ONNX, TensorRT, TFLite's representative dataset, Core ML), so
it is built once, deterministically, and described in the manifest: how many inputs, from which
sources, and the sha256 of the exact float32 batch, so a plan can be traced to its data.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

from evitdeploy.data import (
    FOLDER_HINT,
    SAMPLE_PHOTOS,
    npz_inputs,
    folder_photos,
    image_files,
    is_photo_array,
    preprocess,
    read_npz,
    require_some,
    sample_photos,
)
from evitdeploy.errors import UserError
from evitdeploy.spec import ModelSpec

SAMPLES = "samples"  # the --calib value for scikit-image's bundled photos
SYNTHETIC = "synthetic"  # N(0,1) noise: only when asked for by name


@dataclass(frozen=True)
class CalibrationSet:
    inputs: np.ndarray  # (N, 3, H, W) float32, preprocessed
    report: dict  # JSON-ready: count, sha256, sources, variants, seed


def varied_images(images: list[np.ndarray], count: int, seed: int, originals: bool = True) -> tuple[list[np.ndarray], int]:
    """`count` images: the originals first (unless `originals` is False), then deterministic crops
    (50-90%) and flips of them.

    A handful of photos is not a calibration set; crops change object scale and statistics the
    way real deployments do, and the seed makes the set (and so the plan) reproducible.
    """
    rng = np.random.default_rng(seed)
    result, variants = [], 0
    for index in range(count):
        image = images[index % len(images)]
        if index >= len(images) or not originals:
            height, width = image.shape[:2]
            scale = rng.uniform(0.5, 0.9)
            crop_h, crop_w = max(8, int(height * scale)), max(8, int(width * scale))
            top, left = int(rng.integers(0, height - crop_h + 1)), int(rng.integers(0, width - crop_w + 1))
            image = image[top : top + crop_h, left : left + crop_w]
            if rng.random() < 0.5:
                image = image[:, ::-1]
            variants += 1
        result.append(np.ascontiguousarray(image))
    return result, variants


def build_calibration_set(
    spec: ModelSpec,
    source: Optional[Union[str, Path]] = None,
    count: int = 64,
    seed: int = 0,
    height: Optional[int] = None,
    width: Optional[int] = None,
    held_out_after: int = 0,
    purpose: str = "calibration",
) -> CalibrationSet:
    """Calibration inputs from an image folder, an .npz, the bundled photos or (by name) noise.

    `held_out_after=N` draws a set disjoint from a calibration set of N: the source's images after
    the first N when it has more, otherwise crops and flips only (no original photo repeated).
    `purpose` ("INT8 calibration") words the refusal of a source with no images.
    """
    if count < 1:
        raise UserError(f"--calib-count {count} is not valid", "use 1 or more images (64 is a good default)")
    height, width = height or spec.height, width or spec.width
    source = SAMPLES if source is None else source
    variants = 0
    if str(source) == SYNTHETIC:
        inputs = np.random.default_rng(seed).standard_normal((count, 3, height, width), dtype=np.float32)
        sources = {"synthetic N(0,1)": count}
    elif str(source) == SAMPLES:
        images, variants = varied_images(sample_photos(len(SAMPLE_PHOTOS)), count, seed, originals=not held_out_after)
        inputs = preprocess(images, spec, height, width=width)
        sources = {"scikit-image sample photos": min(count, len(SAMPLE_PHOTOS))}
    else:
        inputs, sources, variants = _from_path(Path(source), spec, count, seed=seed, height=height, width=width, held_out_after=held_out_after, purpose=purpose)
    inputs = np.ascontiguousarray(inputs, dtype=np.float32)
    report = {
        "count": int(len(inputs)),
        "sha256": hashlib.sha256(inputs.tobytes()).hexdigest(),
        "sources": sources,
        "crops_and_flips": variants,
        "seed": seed,
        "input_shape": [int(len(inputs)), 3, height, width],
    }
    return CalibrationSet(inputs, report)


def check_source(spec: ModelSpec, source: Optional[Union[str, Path]], purpose: str) -> None:
    """Refuse, before a model is built, a calibration folder or .npz that holds no images or
    (an .npz) NaN/Inf values: what build_calibration_set would refuse after the export to ONNX.
    Images in a folder are counted here, read (and their values checked) when the set is built."""
    if source is None or str(source) in (SAMPLES, SYNTHETIC):
        return
    path = Path(source)
    if path.is_dir():
        require_some(len(image_files(path)), **_refusal(path, purpose), hint=FOLDER_HINT)
    elif path.suffix == ".npz":
        read_npz(path, spec, **_refusal(path, purpose))


def _refusal(path: Path, purpose: str) -> dict:
    """How a refusal of calibration data names it: `--calib PATH holds 0 calibration images; PURPOSE needs ...`."""
    return {"label": f"--calib {path}", "noun": "calibration images", "purpose": purpose}


def _unseen(items: list, held_out_after: int) -> tuple[list, bool]:
    """The items after the first `held_out_after`, or all of them (then only as crops)."""
    if held_out_after and len(items) > held_out_after:
        return items[held_out_after:], True
    return items, not held_out_after


def _from_path(path: Path, spec: ModelSpec, count: int, seed: int, height: int, width: int, held_out_after: int = 0, purpose: str = "calibration"):
    refusal = _refusal(path, purpose)
    if path.is_dir():
        originals, keep = _unseen(folder_photos(path, **refusal), held_out_after)
        images, variants = varied_images(originals, count, seed, originals=keep)
        return preprocess(images, spec, height, width=width), {f"images from {path}": min(count, len(originals))}, variants
    if path.suffix == ".npz":
        key, array = read_npz(path, spec, **refusal)
        if is_photo_array(array):
            originals, keep = _unseen(list(array), held_out_after)
            images, variants = varied_images(originals, count, seed, originals=keep)
            return preprocess(images, spec, height, width=width), {f"{path}:{key}": min(count, len(originals))}, variants
        inputs = npz_inputs(path, spec, height, width=width, count=held_out_after + count, **refusal)
        if held_out_after and len(inputs) > held_out_after:
            inputs = inputs[held_out_after:]
        return inputs[:count], {f"{path}:{key} (preprocessed)": min(count, len(inputs))}, 0
    raise UserError(
        f"calibration data {path} is neither an image folder nor an .npz file",
        f"pass --calib FOLDER, --calib FILE.npz, --calib {SAMPLES} (bundled photos) or --calib {SYNTHETIC}",
    )
