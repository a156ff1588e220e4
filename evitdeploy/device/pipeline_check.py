"""verify.py's whole-pipeline check: the bundle's raw photos through the preprocessing, the runtime
and the postprocessing (pipeline.py), against PyTorch's final answers for the same photos, made on
the host by the same code. The graph-level check (reference.npz: preprocessed tensors) cannot see
a preprocessing that differs from the one the bundle was made with; this one can.

pipeline.npz holds `photo_0`.. (H, W, 3) uint8 and, per task,
- classification: `logits` (N, K), what the top-k come from;
- segmentation: `logits` (N, K, h, w) and `class_map_0`.. (H, W) int16 at each photo's size;
- promptable: for PROMPTS on each photo (recomputed from its size), the mask SAM's conventions
  show: `mask_0`.. (bits, np.packbits of (H, W)), `mask_index` (P,), `mask_score` (P,).
"""

import re

import numpy as np

from . import metrics, pipeline, preprocessing, prompts, tasks
from .integrity import BundleError, first_line

FILE = "pipeline.npz"
PROMPTS = (0, 3, 5)  # of prompts.PARITY_PROMPTS: one point, a foreground + background pair, a box
HINT = "re-copy the bundle from where it was made"


def photo_prompts(photos: list) -> list:
    """(photo index, prompt) for PROMPTS on each photo, in the photo's pixels."""
    return [(index, prompts.parity_prompts(*photo.shape[:2])[k]) for index, photo in enumerate(photos) for k in PROMPTS]


def answers(photos: list, spec: dict, encode, *, decode=None) -> list:
    """pipeline.predict for each photo (each photo's prompts, for a promptable model)."""
    if spec["task"] != tasks.PROMPTABLE:
        return [pipeline.predict(photo, spec, encode) for photo in photos]
    return [pipeline.predict(photos[index], spec, encode, decode=decode, prompt=prompt) for index, prompt in photo_prompts(photos)]


def arrays_of(photos: list, spec: dict, found: list) -> dict:
    """answers() of PyTorch as pipeline.npz's arrays."""
    arrays = {"photo_{}".format(i): np.ascontiguousarray(photo, np.uint8) for i, photo in enumerate(photos)}
    if spec["task"] != tasks.PROMPTABLE:
        arrays["logits"] = np.stack([answer["logits"] for answer in found]).astype(np.float32)
        if spec["task"] == tasks.SEGMENTATION:
            arrays.update(("class_map_{}".format(i), answer["class_map"].astype(np.int16)) for i, answer in enumerate(found))
        return arrays
    shown = [answer["masks"][0] for answer in found]
    arrays.update(("mask_{}".format(p), np.packbits(m["mask"])) for p, m in enumerate(shown))
    arrays["mask_index"] = np.array([m["index"] for m in shown], np.int64)
    arrays["mask_score"] = np.array([m["score"] for m in shown], np.float32)
    return arrays


def read_photos(path) -> tuple:
    """(photos, every array) of a bundle's .npz of photos (pipeline.npz, eval.npz): numeric arrays
    only (no pickles), and photo_0.. each (H, W, 3) uint8."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {key: stored[key] for key in stored.files}
    except Exception as exc:  # not a zip, a pickled object array, a truncated member
        raise BundleError("{} cannot be read as numeric arrays ({})".format(path, first_line(exc)), HINT) from None
    count = len([key for key in arrays if re.fullmatch(r"photo_\d+", key)])
    photos = [arrays.get("photo_{}".format(i)) for i in range(count)]
    if not count or any(p is None or p.dtype != np.uint8 or p.ndim != 3 or p.shape[2] != 3 or min(p.shape[:2]) < 1 for p in photos):
        raise BundleError("{}: the photos must be photo_0.. (H, W, 3) uint8".format(path), HINT)
    return photos, arrays


def load(folder, spec: dict) -> tuple:
    """(photos, expected arrays) from pipeline.npz, checked: no pickles, uint8 RGB photos, and
    per task the arrays with the shapes the photos and the model give."""
    path = folder / FILE
    photos, arrays = read_photos(path)
    count = len(photos)
    task = spec["task"]
    if task != tasks.PROMPTABLE:
        logits = arrays.get("logits")
        if logits is None or not np.issubdtype(logits.dtype, np.floating) or len(logits) != count:
            raise BundleError("{}: 'logits' must hold one float row per photo".format(path), HINT)
        if task == tasks.SEGMENTATION:
            for i, photo in enumerate(photos):
                found = arrays.get("class_map_{}".format(i))
                if found is None or found.shape != photo.shape[:2] or not np.issubdtype(found.dtype, np.integer):
                    raise BundleError("{}: 'class_map_{}' must be an integer map of photo_{}'s size".format(path, i, i), HINT)
        return photos, arrays
    count_prompts = len(photos) * len(PROMPTS)
    index, score = arrays.get("mask_index"), arrays.get("mask_score")
    if index is None or score is None or index.shape != (count_prompts,) or score.shape != (count_prompts,) or not np.issubdtype(index.dtype, np.integer):
        raise BundleError("{}: 'mask_index' and 'mask_score' must hold one value for each of {} prompts".format(path, count_prompts), HINT)
    for p, (i, _) in enumerate(photo_prompts(photos)):
        bits = arrays.get("mask_{}".format(p))
        if bits is None or bits.dtype != np.uint8 or bits.shape != ((photos[i].shape[0] * photos[i].shape[1] + 7) // 8,):
            raise BundleError("{}: 'mask_{}' must be photo_{}'s mask as packed bits".format(path, p, i), HINT)
    return photos, arrays


def compare(spec: dict, photos: list, expected: dict, *, found: list, tolerances: dict) -> dict:
    """{"passed", "failures", "metrics"}: these answers against PyTorch's, by the bundle's tolerances."""
    task = spec["task"]
    if task != tasks.PROMPTABLE:
        got = np.stack([answer["logits"] for answer in found]).astype(np.float32)
        report = metrics.compare_outputs(task, expected["logits"], got, tolerances=tolerances)
        if task == tasks.SEGMENTATION and report["metrics"]:
            same = sum(int((answer["class_map"] == expected["class_map_{}".format(i)]).sum()) for i, answer in enumerate(found))
            agreement = same / float(sum(p.shape[0] * p.shape[1] for p in photos))
            report["metrics"]["photo_pixel_agreement"] = agreement
            gate = tolerances.get("min_pixel_agreement")
            if gate is not None and agreement < gate:
                report["failures"].append("pixel agreement at the photos' size {:.5f} < {}".format(agreement, gate))
                report["passed"] = False
        return {**report, "metrics": dict(report["metrics"], photos=len(photos))}
    ious, judged, errors, same = [], [], [], []
    for p, ((i, _), answer) in enumerate(zip(photo_prompts(photos), found)):
        shape = photos[i].shape[:2]
        reference = np.unpackbits(expected["mask_{}".format(p)], count=shape[0] * shape[1]).reshape(shape).astype(bool)
        shown = answer["masks"][0]
        ious.append(prompts.mask_iou(reference, shown["mask"]))
        judged.append(reference.mean() >= prompts.MIN_MASK_SHARE)
        errors.append(abs(shown["score"] - float(expected["mask_score"][p])))
        same.append(shown["index"] == int(expected["mask_index"][p]))
    ious, judged = np.array(ious), np.array(judged, bool)
    found_metrics = {
        "photos": len(photos),
        "prompts": len(ious),
        "mask_iou_min": float(ious[judged].min()) if judged.any() else 1.0,
        "masks_too_small": int((~judged).sum()),
        "same_mask_shown": float(np.mean(same)),
        "score_max_error": float(max(errors)),
    }
    failures = []
    gate = tolerances.get("min_mask_iou")
    if gate is not None and found_metrics["mask_iou_min"] < gate:
        failures.append("mask IoU at the photos' size {:.6g} < {}".format(found_metrics["mask_iou_min"], gate))
    gate = tolerances.get("max_iou_error")
    if gate is not None and found_metrics["score_max_error"] > gate:
        failures.append("mask score (predicted IoU) error {:.3g} > {}".format(found_metrics["score_max_error"], gate))
    return {"passed": not failures, "failures": failures, "metrics": found_metrics}


def check(folder, manifest: dict, encode, *, decode=None) -> dict:
    """The whole pipeline on the bundle's photos against PyTorch's answers; a bundle made before
    it carried photos says so (not a failure: its graph-level check still runs)."""
    if FILE not in manifest["files"]:
        return {"checked": False, "why": "this bundle carries no raw photos (made before the whole pipeline was checked, or from preprocessed --data)"}
    spec = manifest["spec"]
    photos, expected = load(folder, spec)
    try:
        found = answers(photos, spec, encode, decode=decode)
    except pipeline.NonFiniteOutput as exc:
        return {"checked": True, "passed": False, "failures": [str(exc)], "metrics": {"photos": len(photos)}}
    except Exception as exc:
        raise BundleError("the bundle's photos cannot go through its pipeline ({})".format(first_line(exc)), HINT) from None
    report = compare(spec, photos, expected, found=found, tolerances=manifest["bundle"]["tolerances"])
    return {"checked": True, "preprocessing": preprocessing.describe(pipeline.spec_preprocessing(spec)), **report}


SUMMARY_KEYS = ("photos", "prompts", "cosine_min", "top1_agreement", "photo_pixel_agreement", "mask_iou_min", "same_mask_shown", "score_max_error")


def summary(report: dict) -> str:
    """check()'s report in one line, for verify.py's and evitdeploy's printouts."""
    if not report.get("checked"):
        return "not checked: " + report.get("why", "")
    found = report["metrics"]
    return "raw photos, {}: {}".format(report["preprocessing"], ", ".join("{} {:.6g}".format(k, found[k]) for k in SUMMARY_KEYS if k in found))
