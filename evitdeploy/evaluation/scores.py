"""Task metrics over per-image records, each with a 95% bootstrap interval (scipy's, over images),
and the artifact-minus-FP32 delta with its paired interval (the same images resampled for both).

Per-image records keep memory flat in the dataset's size: classification keeps 4 small numbers an
image, segmentation a per-class intersection and union (K each), never a photo or a prediction.
"""

from __future__ import annotations

import numpy as np

from evitdeploy.device.eval_subset import class_miou as miou, intersections  # the device scores its subset with the same code

RESAMPLES = 1000
CONFIDENCE = 0.95


class ClassificationRecords:
    """Top-1 / top-5 correctness per image, for the artifact and the reference, and the label."""

    def __init__(self, classes: int):
        self.classes = classes
        self.rows: list[tuple[int, int, int, int, int, int, int]] = []
        self.ids: list[str] = []

    def add(self, image: str, label: int, *, tops: tuple) -> None:
        """tops: the artifact's and the reference's top-k, as pipeline.predict gives them."""
        a, r = ([e["index"] for e in top] for top in tops)
        self.rows.append((label, int(a[0] == label), int(label in a[:5]), int(r[0] == label), int(label in r[:5]), a[0], r[0]))
        self.ids.append(image)

    def summary(self, seed: int) -> dict:
        rows = np.array(self.rows, np.int64).reshape(-1, 7)
        label, top1, top5, ref1, ref5, pred, ref_pred = rows.T
        per_class = []
        for index in np.unique(label):
            mine = label == index
            per_class.append({"index": int(index), "images": int(mine.sum()), "top1": float(top1[mine].mean()), "top1_fp32": float(ref1[mine].mean())})
        return {
            "images": int(len(rows)),
            "metrics": {
                "top1": _with_interval(top1, seed),
                "top5": _with_interval(top5, seed),
            },
            "fp32": {"top1": _with_interval(ref1, seed), "top5": _with_interval(ref5, seed)},
            "delta": {"top1": _paired_delta(top1, ref1, seed), "top5": _paired_delta(top5, ref5, seed)},
            "disagreements": int((pred != ref_pred).sum()),
            "disagreements_of": "images whose top-1 differs",
            "per_class": per_class,
            "per_image": [
                {"id": image, "label": int(row[0]), "top1": int(row[5]), "top1_fp32": int(row[6]), "top5": int(row[2]), "top5_fp32": int(row[4])}
                for image, row in zip(self.ids, rows)
            ],
        }


class SegmentationRecords:
    """Per image and class: intersection and union of the prediction with the labels (artifact and
    reference), and correct / labelled pixel counts."""

    def __init__(self, classes: int):
        self.classes = classes
        self.inter, self.union, self.ref_inter, self.ref_union = [], [], [], []
        self.correct, self.ref_correct, self.labelled, self.disagree = [], [], [], []
        self.ids: list[str] = []

    def add(self, image: str, labels: np.ndarray, *, maps: tuple) -> None:
        """maps: the artifact's and the reference's class maps at the labels' size."""
        artifact_map, reference_map = maps
        self.ids.append(image)
        for found, inter, union, correct in (
            (artifact_map, self.inter, self.union, self.correct),
            (reference_map, self.ref_inter, self.ref_union, self.ref_correct),
        ):
            i, u, hit, labelled = intersections(labels, found, self.classes)
            inter.append(i)
            union.append(u)
            correct.append(hit)
        self.labelled.append(labelled)
        self.disagree.append(int((artifact_map != reference_map).any()))  # an image with any pixel predicted differently

    def summary(self, seed: int) -> dict:
        inter, union = np.array(self.inter), np.array(self.union)
        ref_inter, ref_union = np.array(self.ref_inter), np.array(self.ref_union)
        correct, ref_correct, labelled = (np.array(v, np.float64) for v in (self.correct, self.ref_correct, self.labelled))
        present = union.sum(axis=0) + ref_union.sum(axis=0) > 0
        per_class = [
            {"index": int(k), "iou": _ratio(inter[:, k].sum(), union[:, k].sum()), "iou_fp32": _ratio(ref_inter[:, k].sum(), ref_union[:, k].sum())}
            for k in np.flatnonzero(present)
        ]
        class_miou = lambda i, u: miou(i, u, present)  # noqa: E731 (the statistic, over resampled images)
        pixel = lambda c, n: c.sum(axis=-1) / np.maximum(n.sum(axis=-1), 1)  # noqa: E731 (the statistic, over resampled images)
        return {
            "images": int(len(labelled)),
            "metrics": {"miou": interval(class_miou, (inter, union), seed), "pixel_accuracy": interval(pixel, (correct, labelled), seed)},
            "fp32": {"miou": interval(class_miou, (ref_inter, ref_union), seed), "pixel_accuracy": interval(pixel, (ref_correct, labelled), seed)},
            "delta": {
                "miou": interval(lambda a, b, c, d: class_miou(a, b) - class_miou(c, d), (inter, union, ref_inter, ref_union), seed),
                "pixel_accuracy": interval(lambda a, b, c: pixel(a, c) - pixel(b, c), (correct, ref_correct, labelled), seed),
            },
            "disagreements": int(sum(self.disagree)),
            "disagreements_of": "images with any pixel predicted differently",
            "per_class": per_class,
            "per_image": [
                {"id": image, "inter": i.tolist(), "union": u.tolist(), "correct": int(c), "labelled": int(n), "differs": bool(d)}
                for image, i, u, c, n, d in zip(self.ids, inter, union, correct, labelled, self.disagree)
            ],
        }


class PromptableRecords:
    """Per instance: the shown mask's IoU with the ground truth for a box prompt and for a point
    prompt (artifact and reference), the instance's COCO size, and whether the two masks differ."""

    def __init__(self):
        self.rows: list[tuple[float, float, float, float, str, int]] = []
        self.ids: list[str] = []

    def add(self, instance: str, size: str, box: tuple, point: tuple) -> None:
        """box, point: (artifact's IoU with the truth, reference's IoU, whether the two masks differ)."""
        self.rows.append((box[0], box[1], point[0], point[1], size, int(box[2] or point[2])))
        self.ids.append(instance)

    def summary(self, seed: int) -> dict:
        box, box_ref, point, point_ref = (np.array([row[k] for row in self.rows], np.float64) for k in range(4))
        sizes = np.array([row[4] for row in self.rows])
        metrics, fp32, delta = {}, {}, {}
        for name, mine, theirs, keep in (
            ("miou_box", box, box_ref, np.ones(len(sizes), bool)),
            *((f"miou_box_{size}", box, box_ref, sizes == size) for size in ("small", "medium", "large")),
            ("miou_point", point, point_ref, np.ones(len(sizes), bool)),
        ):
            if keep.any():
                metrics[name], fp32[name], delta[name] = (
                    _with_interval(mine[keep], seed),
                    _with_interval(theirs[keep], seed),
                    _paired_delta(mine[keep], theirs[keep], seed),
                )
        return {
            "images": None,
            "instances": int(len(self.rows)),
            "by_size": {size: int((sizes == size).sum()) for size in ("small", "medium", "large")},
            "metrics": metrics,
            "fp32": fp32,
            "delta": delta,
            "disagreements": int(sum(row[5] for row in self.rows)),
            "disagreements_of": "instances whose shown mask (box or point) differs in any pixel",
            "per_class": [],
            "per_image": [
                {"id": instance, "size": row[4], "iou_box": row[0], "iou_box_fp32": row[1], "iou_point": row[2], "iou_point_fp32": row[3]}
                for instance, row in zip(self.ids, self.rows)
            ],
        }


def _ratio(a, b) -> float:
    return float(a / b) if b else float("nan")


def interval(statistic, data: tuple, seed: int) -> dict:
    """The statistic over all images and its percentile bootstrap interval (scipy's): the images
    resampled with replacement, the same indices for every array (so deltas are paired)."""
    from scipy.stats import bootstrap

    count = len(data[0])
    value = float(statistic(*data))
    if count < 2:
        return {"value": value, "low": value, "high": value}

    def resampled(index, axis=-1):  # index: (..., N) image indices
        return statistic(*(array[index] for array in data))

    found = bootstrap(
        (np.arange(count),),
        resampled,
        vectorized=True,
        n_resamples=RESAMPLES,
        batch=max(1, 20_000_000 // max(1, data[0][0].size * count)),  # resamples at once: memory bounded whatever the dataset
        confidence_level=CONFIDENCE,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    low, high = found.confidence_interval
    return {"value": value, "low": float(np.nan_to_num(low, nan=value)), "high": float(np.nan_to_num(high, nan=value))}


def _with_interval(values: np.ndarray, seed: int) -> dict:
    return interval(lambda v: np.mean(v, axis=-1), (values.astype(np.float64),), seed)


def _paired_delta(artifact: np.ndarray, reference: np.ndarray, seed: int) -> dict:
    return interval(lambda a, r: np.mean(a, axis=-1) - np.mean(r, axis=-1), (artifact.astype(np.float64), reference.astype(np.float64)), seed)
