"""verify.py's accuracy check: a small labelled subset of the user's data the bundle carries
(`deploy --dataset D --eval-subset N`), scored on the device with the runtime and numpy alone, and
compared with what PyTorch FP32 and this artifact on the making host scored on the same photos.

The headline metric per task (what `evitdeploy eval` and `--max-drop` judge):
- classification: top-1 accuracy against `label`;
- segmentation: mIoU over the classes present, from per-class intersections and unions summed
  over the photos, against `labels_<i>` (ignore index IGNORE);
- promptable: mean IoU of the mask shown for each instance's box prompt against its mask.

eval.npz holds `photo_<i>` (H, W, 3) uint8 and, per task, `label` (N,) int64; `labels_<i>` (H, W)
uint8 at the photo's size; or `box` (M, 4) float64 (x0, y0, x1, y1 in the photo's pixels),
`box_photo` (M,) int64 and `truth_<j>` (np.packbits of the instance's (H, W) mask).
"""

import numpy as np

from . import pipeline, pipeline_check, prompts, tasks
from .integrity import BundleError

FILE = "eval.npz"
IGNORE = 255
HEADLINE = {tasks.CLASSIFICATION: "top1", tasks.SEGMENTATION: "miou", tasks.PROMPTABLE: "miou_box"}
HINT = "re-copy the bundle from where it was made"


def class_miou(inter: np.ndarray, union: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Mean IoU over the classes `present`, from per-image intersections and unions (..., N, K)
    summed over the images; works on bootstrap resamples too (a class a resample lacks is not a zero)."""
    i, u = inter.sum(axis=-2)[..., present], union.sum(axis=-2)[..., present]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nanmean(np.where(u > 0, i / np.maximum(u, 1), np.nan), axis=-1)


def intersections(labels: np.ndarray, found: np.ndarray, classes: int) -> tuple:
    """(intersection, union, correct pixels, labelled pixels) of a class map with a label map, per class."""
    valid = labels != IGNORE
    truth, found = labels[valid].astype(np.int64), found[valid].astype(np.int64)
    hit = found == truth
    inter = np.bincount(truth[hit], minlength=classes)[:classes]
    union = np.bincount(truth, minlength=classes)[:classes] + np.bincount(np.clip(found, 0, classes - 1), minlength=classes)[:classes] - inter
    return inter, union, int(hit.sum()), int(valid.sum())


def box_iou(embedding: np.ndarray, spec: dict, decode, *, size: tuple, box, truth: np.ndarray) -> float:
    """IoU with `truth` of the mask a box prompt shows (SAM's convention: the single-mask output)."""
    shown = pipeline.segment_prompt(embedding, spec, decode, size=size, prompt={"box": tuple(float(v) for v in box)})["masks"][0]["mask"]
    return prompts.mask_iou(shown, truth)


def score(spec: dict, photos: list, truth: dict, *, encode, decode=None) -> float:
    """The headline metric of these photos through the bundle's pipeline (`truth`: eval.npz's labels)."""
    task = spec["task"]
    if task == tasks.CLASSIFICATION:
        tops = [pipeline.predict(photo, spec, encode, top=1)["top"][0]["index"] for photo in photos]
        return float(np.mean(np.array(tops) == truth["label"]))
    if task == tasks.SEGMENTATION:
        found = [
            intersections(labels, pipeline.predict(photo, spec, encode)["class_map"], spec["num_classes"]) for photo, labels in zip(photos, truth["labels"])
        ]
        inter, union = np.array([f[0] for f in found]), np.array([f[1] for f in found])
        return float(class_miou(inter, union, union.sum(axis=0) > 0))
    ious, owner = [], np.asarray(truth["box_photo"])
    for index, photo in enumerate(photos):
        mine = np.flatnonzero(owner == index)
        if not len(mine):
            continue
        embedding = pipeline.encode_photo(photo, spec, encode)
        ious += [box_iou(embedding, spec, decode, size=photo.shape[:2], box=truth["box"][j], truth=truth["masks"][j]) for j in mine]
    return float(np.mean(ious))


def arrays_of(spec: dict, photos: list, truth: dict) -> dict:
    """eval.npz's arrays for these photos and their labels (as score() takes them)."""
    arrays = {"photo_{}".format(i): np.ascontiguousarray(photo, np.uint8) for i, photo in enumerate(photos)}
    task = spec["task"]
    if task == tasks.CLASSIFICATION:
        arrays["label"] = np.asarray(truth["label"], np.int64)
    elif task == tasks.SEGMENTATION:
        arrays.update(("labels_{}".format(i), np.asarray(labels, np.uint8)) for i, labels in enumerate(truth["labels"]))
    else:
        arrays.update(box=np.asarray(truth["box"], np.float64).reshape(-1, 4), box_photo=np.asarray(truth["box_photo"], np.int64))
        arrays.update(("truth_{}".format(j), np.packbits(mask)) for j, mask in enumerate(truth["masks"]))
    return arrays


def load(folder, spec: dict) -> tuple:
    """(photos, truth) from eval.npz, checked: no pickles, uint8 RGB photos, labels that fit them
    and the model's classes."""
    path = folder / FILE
    photos, arrays = pipeline_check.read_photos(path)
    count = len(photos)
    task = spec["task"]
    if task == tasks.CLASSIFICATION:
        label = arrays.get("label")
        if label is None or label.shape != (count,) or not np.issubdtype(label.dtype, np.integer) or label.min() < 0 or label.max() >= spec["num_classes"]:
            raise BundleError("{}: 'label' must hold one class index of the model's per photo".format(path), HINT)
        return photos, {"label": label}
    if task == tasks.SEGMENTATION:
        labels = [arrays.get("labels_{}".format(i)) for i in range(count)]
        if any(m is None or m.dtype != np.uint8 or m.shape != p.shape[:2] for m, p in zip(labels, photos)):
            raise BundleError("{}: 'labels_<i>' must be a uint8 label map of photo_<i>'s size".format(path), HINT)
        return photos, {"labels": labels}
    box, owner = arrays.get("box"), arrays.get("box_photo")
    if box is None or owner is None or box.ndim != 2 or box.shape[1:] != (4,) or owner.shape != (len(box),) or not len(box):
        raise BundleError("{}: 'box' (M, 4) and 'box_photo' (M,) must describe at least one instance".format(path), HINT)
    if not np.isfinite(box).all() or not np.issubdtype(owner.dtype, np.integer) or owner.min() < 0 or owner.max() >= count:
        raise BundleError("{}: every box must be finite and belong to one of the photos".format(path), HINT)
    masks = []
    for j, i in enumerate(owner):
        bits, (height, width) = arrays.get("truth_{}".format(j)), photos[i].shape[:2]
        if bits is None or bits.dtype != np.uint8 or bits.shape != ((height * width + 7) // 8,):
            raise BundleError("{}: 'truth_{}' must be an instance mask of photo_{}'s size, as packed bits".format(path, j, i), HINT)
        masks.append(np.unpackbits(bits, count=height * width).reshape(height, width).astype(bool))
    return photos, {"box": box, "box_photo": owner, "masks": masks}


def check(folder, manifest: dict, encode, *, decode=None) -> dict:
    """The carried subset scored here against PyTorch FP32's and the making host's scores; a drop
    beyond the bundle's max_drop_pt fails. A bundle made without --eval-subset says so."""
    section = manifest["bundle"].get("eval_subset")
    if not section:
        return {"checked": False, "why": "this bundle carries no labelled subset (deploy --dataset D --eval-subset N adds one)"}
    expected = {key: section.get(key) for key in ("fp32", "making_host", "max_drop_pt")}
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)  # noqa: E731 (the one check, three fields)
    if not number(expected["fp32"]) or not all(v is None or number(v) for v in (expected["making_host"], expected["max_drop_pt"])):
        raise BundleError("the manifest's bundle.eval_subset needs a number fp32, and making_host and max_drop_pt as numbers or null", HINT)
    spec = manifest["spec"]
    photos, truth = load(folder, spec)
    try:
        value = score(spec, photos, truth, encode=encode, decode=decode)
    except pipeline.NonFiniteOutput as exc:
        return {"checked": True, "passed": False, "failures": [str(exc)], "photos": len(photos)}
    drop = 100.0 * (expected["fp32"] - value)
    failures = []
    if expected["max_drop_pt"] is not None and drop > expected["max_drop_pt"]:
        failures.append(
            "{} on the carried subset drops {:.2f} pt against PyTorch FP32, beyond {:g}".format(HEADLINE[spec["task"]], drop, expected["max_drop_pt"])
        )
    return {
        "checked": True,
        "passed": not failures,
        "failures": failures,
        "metric": HEADLINE[spec["task"]],
        "photos": len(photos),
        "value": value,
        "fp32": expected["fp32"],
        "making_host": expected["making_host"],
        "drop_pt": drop,
        "drift_pt": None if expected["making_host"] is None else 100.0 * (value - expected["making_host"]),
        "max_drop_pt": expected["max_drop_pt"],
    }


def summary(report: dict) -> str:
    """check()'s report in one line."""
    if not report.get("checked"):
        return "not checked: " + report.get("why", "")
    if "metric" not in report:
        return "FAILED: " + "; ".join(report["failures"])
    host = "not run" if report["making_host"] is None else "{:.2f}%".format(100 * report["making_host"])
    return "{} {:.2f}% on {} labelled photos (PyTorch FP32 {:.2f}%, making host {}): {:+.2f} pt vs FP32{}".format(
        report["metric"],
        100 * report["value"],
        report["photos"],
        100 * report["fp32"],
        host,
        0.0 - report["drop_pt"] + 0.0,  # no "-0.00"
        "" if report["max_drop_pt"] is None else ", allowed drop {:g}".format(report["max_drop_pt"]),
    )
