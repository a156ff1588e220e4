"""Labelled datasets on disk, in the layouts users have, as lists of paths (photos are read one at a
time by the eval loop, so memory stays flat in the dataset's size).

Classification:
- `imagefolder`: ROOT/<class>/<image>; the class order from ROOT/classes.txt (one name per line,
  the model's class index order; ImageNet's LOC_synset_mapping.txt lines "n01440764 tench, ..."
  count by their first word), else the sorted folder names.
Segmentation (label maps: PNG, one class id per pixel, IGNORE where unlabelled):
- `pairs`: ROOT/images/<name>.<ext> + ROOT/masks/<name>.png, ids as the model's classes;
- `cityscapes`: ROOT/leftImg8bit/<split>/<city>/<x>_leftImg8bit.png + ROOT/gtFine/<split>/<city>/<x>_gtFine_labelTrainIds.png;
- `ade20k`: ROOT/images/<split>/<x>.jpg + ROOT/annotations/<split>/<x>.png, 0 ("other") ignored and
  1..150 the model's 0..149, as the reference evaluates.
Anything else in the places a layout reads is refused in one line (exit 2), never skipped silently.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from evitdeploy.data import IMAGE_SUFFIXES, read_photo
from evitdeploy.errors import UserError
from evitdeploy.files import IMAGE_MAX_BYTES, input_file
from evitdeploy.device.eval_subset import IGNORE  # a label map's "not labelled" (255), as the device scores it
from evitdeploy.spec import CLASSIFICATION, PROMPTABLE, SEGMENTATION, ModelSpec

CLASSES_FILES = ("classes.txt", "LOC_synset_mapping.txt")
HINT = {
    CLASSIFICATION: "an ImageFolder: DATASET/<class>/<image>, with DATASET/classes.txt naming the classes in the model's order",
    SEGMENTATION: "DATASET/images/<name>.png + DATASET/masks/<name>.png, or Cityscapes' leftImg8bit/ + gtFine/, or ADE20K's images/ + annotations/",
    PROMPTABLE: "a COCO-style JSON with its images: DATASET/annotations/instances_<split>.json + DATASET/<split>/, or DATASET/<name>.json + DATASET/images/",
}


@dataclass(frozen=True)
class Sample:
    image: Path
    label: Optional[int] = None  # classification: the class index
    mask: Optional[Path] = None  # segmentation: the label map
    instances: tuple = ()  # promptable: coco.Instance of the photo
    size: Optional[tuple[int, int]] = None  # promptable: (height, width) the annotations say the photo has


@dataclass(frozen=True)
class Dataset:
    root: Path
    layout: str
    task: str
    samples: tuple[Sample, ...]
    classes: tuple[str, ...] = ()  # classification: names in the model's index order
    total: int = 0  # samples before --limit

    def describe(self) -> dict:
        return {"root": str(self.root), "layout": self.layout, "images": len(self.samples), "of": self.total, "classes": len(self.classes) or None}


def open_dataset(root: Path, spec: ModelSpec, *, limit: Optional[int] = None, seed: int = 0) -> Dataset:
    """The labelled images under `root` for `spec`'s task, checked against the model (class count),
    `limit` of them drawn with `seed` (a deterministic subset, in path order)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"dataset {root} is not a folder", f"pass the dataset's folder: {HINT.get(spec.task, 'see docs/usage.md')}")
    if spec.task == CLASSIFICATION:
        layout, samples, classes = "imagefolder", *_image_folder(root, spec)
    elif spec.task == SEGMENTATION:
        (layout, samples), classes = _segmentation(root), ()
    else:
        layout, samples, classes = "coco", _coco(root), ()
    if not samples:
        raise UserError(f"dataset {root} holds no images", f"put the labelled images there: {HINT[spec.task]}")
    total = len(samples)
    if limit is not None:
        if limit < 1:
            raise UserError(f"--limit {limit} is not valid", "use 1 or more images")
        if limit < total:
            keep = sorted(random.Random(seed).sample(range(total), limit))
            samples = [samples[i] for i in keep]
    return Dataset(root=root, layout=layout, task=spec.task, samples=tuple(samples), classes=tuple(classes), total=total)


def _coco(root: Path) -> list[Sample]:
    """A promptable model's instances: each image with at least one non-crowd instance."""
    from evitdeploy.labelled.coco import find_annotations, read_coco

    annotations, images = find_annotations(root)
    samples = []
    for image, instances in read_coco(annotations):
        if instances:
            samples.append(Sample(image=_image(images / image["file_name"], str(images)), instances=tuple(instances), size=(image["height"], image["width"])))
    return samples


def _entries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _image(path: Path, where: str) -> Path:
    if path.is_dir():
        raise UserError(f"{path} is a folder inside {where}", f"{where} holds images only")
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise UserError(f"{path} is not an image (suffix {path.suffix or 'none'!r})", f"{where} holds {', '.join(sorted(IMAGE_SUFFIXES))} files only")
    return path


def _class_names(root: Path) -> Optional[list[str]]:
    for name in CLASSES_FILES:
        path = root / name
        if path.exists():
            from evitdeploy.files import TEXT_MAX_BYTES, read_input_text

            text = read_input_text(path, "class list", "one class name per line, in the model's class order", limit=TEXT_MAX_BYTES)
            names = [line.split()[0] if name.startswith("LOC_") else line.strip() for line in text.splitlines() if line.strip()]
            if len(set(names)) != len(names):
                raise UserError(f"{path} names a class twice", "one line per class, each name once")
            return names
    return None


def _image_folder(root: Path, spec: ModelSpec) -> tuple[list[Sample], list[str]]:
    folders = [p for p in _entries(root) if p.name not in CLASSES_FILES]
    stray = [p for p in folders if not p.is_dir()]
    if stray:
        raise UserError(f"{stray[0]} is a file at the top of an ImageFolder dataset", "the top holds one folder per class (and classes.txt)")
    names = _class_names(root)
    if names is None:
        names = [p.name for p in folders]
        if len(names) != spec.num_classes:
            raise UserError(
                f"dataset {root} has {len(names)} class folders; {spec.name} has {spec.num_classes} classes",
                "add classes.txt naming the model's classes in order (folders may then be a subset), or give every class a folder",
            )
    elif len(names) != spec.num_classes:
        raise UserError(f"{root}/classes.txt names {len(names)} classes; {spec.name} has {spec.num_classes}", "list the model's classes, in its order")
    index = {name: i for i, name in enumerate(names)}
    samples = []
    for folder in folders:
        if folder.name not in index:
            raise UserError(f"class folder {folder.name!r} is not one of the classes in {root}/classes.txt", "rename or remove it, or list it")
        samples += [Sample(image=_image(path, f"class folder {folder}"), label=index[folder.name]) for path in _entries(folder)]
    return samples, names


def _segmentation(root: Path) -> tuple[str, list[Sample]]:
    if (root / "leftImg8bit").is_dir() and (root / "gtFine").is_dir():
        return "cityscapes", _cityscapes(root)
    if (root / "images").is_dir() and (root / "annotations").is_dir():
        return "ade20k", _paired(root / "images", root / "annotations", nested=True)
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return "pairs", _paired(root / "images", root / "masks", nested=False)
    raise UserError(f"dataset {root} is not a segmentation layout evitdeploy reads", f"use {HINT[SEGMENTATION]}")


def _paired(images: Path, masks: Path, *, nested: bool) -> list[Sample]:
    """images/<name>.* with masks/<name>.png; ADE20K nests both one level deeper (a split)."""
    pairs = [(images, masks)]
    if nested:
        splits = [p.name for p in _entries(images) if p.is_dir()]
        pairs = [(images / s, masks / s) for s in splits] or pairs
    samples = []
    for image_folder, mask_folder in pairs:
        for path in _entries(image_folder):
            mask = mask_folder / f"{path.stem}.png"
            if not mask.is_file():
                raise UserError(f"{path} has no label map {mask}", "every image needs its mask of the same name (.png)")
            samples.append(Sample(image=_image(path, str(image_folder)), mask=mask))
    return samples


def _cityscapes(root: Path) -> list[Sample]:
    samples = []
    for split in _entries(root / "leftImg8bit"):
        for city in _entries(split):
            for path in _entries(city):
                stem = path.name.replace("_leftImg8bit", "")
                mask = root / "gtFine" / split.name / city.name / f"{Path(stem).stem}_gtFine_labelTrainIds.png"
                if not mask.is_file():
                    raise UserError(f"{path} has no {mask.name}", "run Cityscapes' createTrainIdLabelImgs.py to make the train-id label maps")
                samples.append(Sample(image=_image(path, str(city)), mask=mask))
    return samples


def read_label_map(sample: Sample, layout: str, *, size: tuple[int, int], classes: int) -> np.ndarray:
    """A sample's label map as (H, W) int64 model class ids, IGNORE where unlabelled; refused when
    its size differs from its photo's or it holds ids outside the model's classes."""
    from PIL import Image

    path = sample.mask
    input_file(path, "label map", "a PNG of class ids", limit=IMAGE_MAX_BYTES)
    try:
        with Image.open(path) as image:
            if image.mode not in ("L", "P", "I;16", "I"):
                raise UserError(f"label map {path} is a {image.mode} image", "a label map holds one class id per pixel (8-bit grayscale or palette PNG)")
            labels = np.asarray(image).astype(np.int64)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"label map {path} cannot be read as an image ({type(exc).__name__})", "re-export it as a PNG") from None
    if labels.shape != tuple(size):
        raise UserError(f"label map {path} is {labels.shape[1]}x{labels.shape[0]}; its image is {size[1]}x{size[0]}", "a mask must have its image's size")
    if layout == "ade20k":  # 0 is "other" (not scored); 1..150 are the model's 0..149
        labels = np.where(labels == 0, IGNORE, labels - 1)
    bad = labels[(labels != IGNORE) & ((labels < 0) | (labels >= classes))]
    if bad.size:
        raise UserError(f"label map {path} holds class id {int(bad[0])}; the model has {classes} classes (0..{classes - 1}, {IGNORE} ignored)", "fix the mask")
    return labels


def photos_ahead(samples, ahead: int = 2):
    """(sample, its photo) for each sample, the next `ahead` photos decoded on a thread while the
    caller runs the model on this one (Pillow's decoding releases the GIL: a 400x600 PNG takes
    longer to decode than B0 at 224 takes to run). At most `ahead` + 1 photos are held."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    samples = iter(samples)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="evitdeploy-read") as reader:
        pending: deque = deque()
        for sample in samples:
            pending.append((sample, reader.submit(read_sample_photo, sample)))
            if len(pending) > ahead:
                done, photo = pending.popleft()
                yield done, photo.result()
        while pending:
            done, photo = pending.popleft()
            yield done, photo.result()


def read_sample_photo(sample: Sample) -> np.ndarray:
    input_file(sample.image, "image", "pass photos (.png, .jpg, ...)", limit=IMAGE_MAX_BYTES)
    return read_photo(sample.image, "replace it with a photo that opens in an image viewer")


def photos_and_truth(dataset: Dataset, spec: ModelSpec) -> tuple:
    """Every photo of `dataset` in memory with its labels, as device/eval_subset.py scores them:
    {"label": [...]} (classification), {"labels": [maps]} (segmentation), or {"box", "box_photo",
    "masks"} (promptable). For small subsets only: a bundle's, the plan search's."""
    from evitdeploy.labelled import coco

    photos, truth = [], {"label": [], "labels": [], "box": [], "box_photo": [], "masks": []}
    for index, (sample, photo) in enumerate(photos_ahead(dataset.samples)):
        photos.append(photo)
        if spec.task == CLASSIFICATION:
            truth["label"].append(sample.label)
        elif spec.task == SEGMENTATION:
            truth["labels"].append(read_label_map(sample, dataset.layout, size=photo.shape[:2], classes=spec.num_classes))
        else:
            for instance in sample.instances:
                truth["box"].append(instance.box)
                truth["box_photo"].append(index)
                truth["masks"].append(coco.instance_mask(instance, *photo.shape[:2]))
    return photos, truth
