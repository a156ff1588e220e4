"""A photo through a model the way an app gets it: the reference's preprocessing, the runtime, then
the task's postprocessing at the photo's size. One implementation for an app (`load(bundle)` in
app.py), a bundle's verify.py (the whole pipeline against PyTorch's final outputs) and `evitdeploy
predict`, so all three give the same answer for the same photo.

The model is passed in as callables: `encode(batch)` -> the (first) output array for an NCHW
float32 batch, and for a promptable model `decode(feed)` -> {"low_res_masks", "iou_predictions"}.

What each task gives (`predict`):
- classification: {"top": [{"rank", "index", "label", "probability"}], "logits"}
- segmentation: {"class_map": (H, W) int32 at the photo's size, "logits"}: the logits upsampled
  bilinearly to the photo and argmaxed there, as the reference evaluates against its labels (-1
  where the model did not look, for a preprocessing that crops)
- promptable: {"masks": [{"index", "score", "mask" (H, W) bool}], "iou_predictions", "low_res_masks"}:
  the masks SAM's conventions show for the prompt (prompts.shown_masks), at the photo's size
"""

import numpy as np

from . import preprocess, preprocessing, prompts, tasks

CLASS_CHUNK = 16  # classes upsampled at once: 150 photo-sized logit planes are never held together


class NonFiniteOutput(ValueError):
    """The model gave NaN or Inf: its answer is not one."""


def spec_preprocessing(spec: dict) -> dict:
    """A manifest spec's preprocessing; one that records none (written before it was recorded) is its task's reference."""
    return spec.get("preprocessing") or preprocessing.for_task(spec["task"], spec["mean"], spec["std"])


def model_input(image: np.ndarray, spec: dict) -> np.ndarray:
    """An RGB uint8 photo (H, W, 3) -> the model's input batch (the photo repeated to a static batch)."""
    batch, _, height, width = spec["input_shape"]
    return np.repeat(preprocess.prepare(image, spec_preprocessing(spec), (height, width))[None], batch, axis=0)


def finite(array, what: str) -> np.ndarray:
    array = np.asarray(array, np.float32)
    bad = int(array.size - np.count_nonzero(np.isfinite(array)))
    if bad:
        raise NonFiniteOutput(f"{what} hold {bad} NaN/Inf values")
    return array


def top_classes(logits: np.ndarray, top: int, names=None) -> list:
    """The `top` classes by softmax probability (float64), ties kept in class order."""
    logits = np.asarray(logits, np.float64).ravel()
    probabilities = np.exp(logits - logits.max())
    probabilities /= probabilities.sum()
    order = np.argsort(-probabilities, kind="stable")[:top]
    return [
        {"rank": rank, "index": int(index), "label": names[index] if names else "class {}".format(index), "probability": float(probabilities[index])}
        for rank, index in enumerate(order, start=1)
    ]


def class_map(logits: np.ndarray, size: tuple) -> np.ndarray:
    """(K, h, w) logits -> (height, width) int32 classes: bilinear upsampling (half-pixel centres)
    to `size`, then argmax, CLASS_CHUNK classes at a time; a tie keeps the lower class."""
    best = best_class = None
    for start in range(0, len(logits), CLASS_CHUNK):
        planes = prompts.resize_bilinear(np.asarray(logits[start : start + CLASS_CHUNK], np.float32), size[0], size[1])
        value, index = planes.max(axis=0), planes.argmax(axis=0).astype(np.int32) + start
        if best is None:
            best, best_class = value, index
        else:
            better = value > best
            best, best_class = np.where(better, value, best), np.where(better, index, best_class)
    return best_class


def photo_class_map(logits: np.ndarray, size: tuple, spec: dict) -> np.ndarray:
    """(K, h, w) logits -> the photo's (height, width) class map: -1 where the model did not look
    (outside a center crop's footprint)."""
    pre = spec_preprocessing(spec)
    _, _, height, width = spec["input_shape"]
    if pre["resize"] == "exact":
        return class_map(logits, size)
    if pre["resize"] == "shorter":
        found = np.full(size, -1, np.int32)
        x0, y0, x1, y1 = preprocess.seen_box(size, pre, (height, width))
        found[y0:y1, x0:x1] = class_map(logits, (y1 - y0, x1 - x0))
        return found
    rows, cols = prompts.preprocess_shape(size[0], size[1], max(height, width))  # "longest": the photo is the input's top-left
    return nearest(class_map(logits, (height, width))[:rows, :cols], size)


def nearest(class_map: np.ndarray, size: tuple) -> np.ndarray:
    """A class map resized to (height, width) by nearest neighbour (pixel centres aligned)."""
    rows = np.minimum(((np.arange(size[0]) + 0.5) * class_map.shape[0] / size[0]).astype(np.int64), class_map.shape[0] - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * class_map.shape[1] / size[1]).astype(np.int64), class_map.shape[1] - 1)
    return class_map[rows[:, None], cols[None, :]]


def prompt_masks(low_res: np.ndarray, ious: np.ndarray, *, labels, size: tuple, frame: int, multimask: bool = False) -> list:
    """The masks SAM's conventions show for a prompt with these point labels, at the photo's size:
    [{"index": the decoder's mask, "score": its predicted IoU, "mask": (H, W) bool}]."""
    shown = prompts.shown_masks(labels, ious, multimask=multimask)
    logits = prompts.masks_for_image(np.asarray(low_res, np.float32)[shown], size, frame)
    return [{"index": int(i), "score": float(ious[i]), "mask": logits[k] > prompts.MASK_THRESHOLD} for k, i in enumerate(shown)]


def predict(image: np.ndarray, spec: dict, encode, *, decode=None, prompt=None, multimask: bool = False, top: int = 5, names=None) -> dict:
    """One photo through the model and its task's postprocessing (see the module's docstring).
    `prompt` (promptable models): {"points": [(x, y)...], "labels": [1|0...], "box": (x0, y0, x1, y1)}
    in the photo's pixels. Raises NonFiniteOutput when the model gives NaN/Inf."""
    size = tuple(image.shape[:2])
    output = finite(encode(model_input(image, spec)), "the model's outputs")
    task = spec["task"]
    if task == tasks.CLASSIFICATION:
        return {"top": top_classes(output[0], top, names), "logits": output[0]}
    if task == tasks.SEGMENTATION:
        return {"class_map": photo_class_map(output[0], size, spec), "logits": output[0]}
    return segment_prompt(output[:1], spec, decode, size=size, prompt=prompt or {}, multimask=multimask)


def segment_prompt(embedding: np.ndarray, spec: dict, decode, *, size: tuple, prompt: dict, multimask: bool = False) -> dict:
    """A promptable model's answer for one prompt on a photo already encoded (`embedding`, batch 1):
    a photo's many prompts share one encoder run."""
    feed = prompts.decoder_feed(prompt, size, frame=spec["prompt_frame"], embedding=tuple(spec["embedding"]))
    decoded = decode(dict(feed, image_embeddings=embedding))
    if not all(name in decoded for name in prompts.DECODER_OUTPUTS):
        decoded = dict(zip(prompts.DECODER_OUTPUTS, decoded.values()))
    low_res = finite(decoded["low_res_masks"], "the decoder's masks")[0]
    ious = finite(decoded["iou_predictions"], "the decoder's IoU predictions")[0]
    masks = prompt_masks(low_res, ious, labels=feed["point_labels"], size=size, frame=spec["prompt_frame"], multimask=multimask)
    return {"masks": masks, "iou_predictions": ious, "low_res_masks": low_res}


def encode_photo(image: np.ndarray, spec: dict, encode) -> np.ndarray:
    """A promptable model's image embedding (batch 1) for a photo, checked finite."""
    return finite(encode(model_input(image, spec)), "the model's outputs")[:1]


def mask_summary(mask: np.ndarray) -> dict:
    """A mask's area (pixels and share of the photo) and bounding box (x0, y0, x1, y1; x1, y1 excluded; None when empty)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box = [int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1] if rows.size else None
    return {"area": int(mask.sum()), "area_fraction": float(mask.mean()), "bbox": box}
