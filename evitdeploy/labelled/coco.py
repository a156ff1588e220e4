"""COCO-style instance annotations for promptable models, as the EfficientViT-SAM paper evaluates
zero-shot instance segmentation: each (non-crowd) instance prompted with its ground-truth box,
and with one point at its mask's most interior pixel; the mask SAM's conventions show against the
ground truth (mask IoU), overall and by COCO's object sizes (small < 32², medium < 96², large).

Layouts: ROOT/annotations/instances_<split>.json with ROOT/<split>/ (COCO's own), or ROOT/<one>.json
with ROOT/images/. Polygons and RLE are decoded by pycocotools (the `coco` extra). The file is
validated by schemas.CocoFile before anything indexes into it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evitdeploy.errors import EXIT_BACKEND_UNAVAILABLE, UserError

HINT = "a COCO-style JSON (images, annotations with box and polygon or RLE segmentation): ROOT/annotations/instances_<split>.json + ROOT/<split>/, or ROOT/<name>.json + ROOT/images/"
SIZES = (("small", 0, 32**2), ("medium", 32**2, 96**2), ("large", 96**2, float("inf")))


@dataclass(frozen=True)
class Instance:
    id: int
    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    segmentation: object  # polygons or RLE, as the file holds them
    area: float


def find_annotations(root: Path) -> tuple[Path, Path]:
    """(the annotation JSON, the images' folder) of a COCO-style dataset folder."""
    found = sorted((root / "annotations").glob("instances_*.json")) if (root / "annotations").is_dir() else []
    if len(found) == 1:
        split = found[0].stem.removeprefix("instances_")
        return found[0], root / split if (root / split).is_dir() else root / "images"
    found = sorted(root.glob("*.json"))
    if len(found) == 1 and (root / "images").is_dir():
        return found[0], root / "images"
    raise UserError(f"dataset {root} is not a COCO-style layout evitdeploy reads ({len(found)} JSON files)", HINT)


def read_coco(path: Path) -> list[tuple[dict, list[Instance]]]:
    """(image entry, its non-crowd instances) for each image of the file, in id order."""
    from evitdeploy.schemas import CocoFile, load_document

    document = load_document(path, CocoFile, "COCO annotations", hint=HINT)
    per_image: dict = {image["id"]: [] for image in document["images"]}
    for annotation in document["annotations"]:
        if annotation.get("iscrowd", 0):
            continue
        x, y, w, h = annotation["bbox"]
        area = annotation.get("area")
        box = (x, y, x + w, y + h)
        per_image[annotation["image_id"]].append(Instance(annotation["id"], box, segmentation=annotation["segmentation"], area=w * h if area is None else area))
    return [(image, per_image[image["id"]]) for image in sorted(document["images"], key=lambda image: image["id"])]


def instance_mask(instance: Instance, height: int, width: int) -> np.ndarray:
    """The instance's ground truth (H, W) bool, decoded by pycocotools; a broken one is refused."""
    try:
        from pycocotools import mask as coco_mask
    except ImportError:
        raise UserError("pycocotools (COCO polygons and RLE) is not installed", "pip install 'evitdeploy[coco]'", EXIT_BACKEND_UNAVAILABLE) from None
    segmentation = instance.segmentation
    if isinstance(segmentation, dict) and list(segmentation["size"]) != [height, width]:
        raise UserError(f"annotation {instance.id}: its RLE is {segmentation['size'][1]}x{segmentation['size'][0]}; its image is {width}x{height}", HINT)
    try:
        if isinstance(segmentation, dict) and isinstance(segmentation["counts"], list):
            rles = coco_mask.frPyObjects(segmentation, height, width)
        elif isinstance(segmentation, dict):
            rles = dict(segmentation, counts=segmentation["counts"].encode("ascii"))
        else:
            rles = coco_mask.merge(coco_mask.frPyObjects(segmentation, height, width))
        mask = coco_mask.decode(rles).astype(bool)
    except UserError:
        raise
    except Exception as exc:  # pycocotools' own errors on broken counts or polygons
        raise UserError(f"annotation {instance.id}: its segmentation cannot be decoded ({type(exc).__name__}: {exc})", HINT) from None
    mask = mask.reshape(height, width) if mask.ndim == 2 else mask.reshape(height, width, -1).any(axis=-1)
    if not mask.any():
        raise UserError(f"annotation {instance.id}: its segmentation covers no pixel", "drop the annotation or fix its polygon")
    return mask


def centre_point(mask: np.ndarray) -> tuple[float, float]:
    """The mask's most interior pixel (farthest from its boundary), as (x, y): a point prompt that
    lands on the object whatever its shape (a ring's centroid would not)."""
    from scipy.ndimage import distance_transform_edt

    row, col = np.unravel_index(np.argmax(distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]), mask.shape)
    return float(col), float(row)


def size_of(area: float) -> str:
    return next(name for name, low, high in SIZES if low <= area < high)
