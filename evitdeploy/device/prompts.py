"""Prompts and masks of a promptable (SAM) model, with numpy only: the host's check and predict and a
bundle's verify.py share them, so a prompt means the same pixels everywhere.

SAM's geometry: the image is resized so its longest side is the encoder's input size and padded
at the bottom/right; prompts live in a square frame (1024 for EfficientViT-SAM, whatever the
encoder's size) into which the image is scaled the same way; the decoder's low-resolution mask
logits cover that frame. A point label is 1 (foreground), 0 (background), 2/3 (a box's top-left /
bottom-right corner) or -1 (padding, which SAM's ONNX recipe wants when there is no box).
"""

import numpy as np

from .metrics import cosine_per_sample

DECODER_INPUTS = ("image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input")
DECODER_OUTPUTS = ("low_res_masks", "iou_predictions")
MASK_THRESHOLD = 0.0  # SAM's: a pixel is in the mask where its logit is above 0
# A mask smaller than this share of the low-res frame (0.5%: 82 pixels of SAM-tiny's 128x128, 328
# of SAM's 256x256) is not judged by IoU: a fixed prompt that lands on background gives masks of a
# few pixels, whose IoU swings between 0.5 and 1 with one pixel. They are counted (masks_too_small)
# and still compared by the logit cosine and the IoU prediction.
MIN_MASK_SHARE = 0.005

# The fixed prompts parity is measured with, as fractions of the image's width and height: single
# points, a positive + negative pair, three points, boxes, and a box with a point.
PARITY_PROMPTS = (
    {"points": ((0.5, 0.5),), "labels": (1,)},
    {"points": ((0.3, 0.6),), "labels": (1,)},
    {"points": ((0.7, 0.35),), "labels": (1,)},
    {"points": ((0.45, 0.5), (0.8, 0.8)), "labels": (1, 0)},
    {"points": ((0.25, 0.3), (0.5, 0.55), (0.7, 0.7)), "labels": (1, 1, 1)},
    {"box": (0.2, 0.2, 0.8, 0.8)},
    {"box": (0.05, 0.4, 0.55, 0.95)},
    {"points": ((0.5, 0.45),), "labels": (1,), "box": (0.3, 0.25, 0.7, 0.75)},
)


def preprocess_shape(height: int, width: int, long_side: int) -> tuple:
    """(h, w) of an image resized so its longest side is `long_side` (SAM's rounding)."""
    scale = long_side * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def to_frame(coords, original_size: tuple, frame: int) -> np.ndarray:
    """Image pixel coordinates (..., 2) as (x, y) -> SAM's prompt frame (ResizeLongestSide.apply_coords:
    scaled in float64, then float32 as the decoder takes them, so they equal the reference's exactly)."""
    height, width = original_size
    new_h, new_w = preprocess_shape(height, width, frame)
    coords = np.array(coords, dtype=np.float64)
    coords[..., 0] *= new_w / width
    coords[..., 1] *= new_h / height
    return coords.astype(np.float32)


def prompt_problem(prompt: dict, size: tuple):
    """What is wrong with a prompt for a photo of `size` (h, w), in words (None: nothing): each
    point and the box inside the photo, one label (0 or 1) per point, something to segment."""
    height, width = size
    points, labels, box = list(prompt.get("points") or ()), list(prompt.get("labels") or ()), prompt.get("box")
    if not points and box is None:
        return "a promptable model segments what a prompt points at, and none was given"
    if len(labels) != len(points) or any(label not in (0, 1) for label in labels):
        return "{} point labels {} for {} points: give one label per point, 1 (foreground) or 0 (background)".format(len(labels), labels, len(points))
    for x, y in points:
        if not (0 <= x < width and 0 <= y < height):
            return "point {:g},{:g} is outside the {}x{} image".format(x, y, width, height)
    if box is not None:
        x0, y0, x1, y1 = box
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            return "box {:g},{:g},{:g},{:g} is not a box inside the {}x{} image".format(x0, y0, x1, y1, width, height)
    return None


def decoder_feed(prompt: dict, original_size: tuple, *, frame: int, embedding: tuple) -> dict:
    """The decoder's inputs (batch 1) for one prompt {"points": [(x, y)...], "labels": [...], "box":
    (x0, y0, x1, y1)} in image pixels; everything but the image embedding."""
    points = [tuple(p) for p in prompt.get("points", ())]
    labels = [float(v) for v in prompt.get("labels", (1.0,) * len(points))]
    box = prompt.get("box")
    if box is not None:
        points += [(box[0], box[1]), (box[2], box[3])]
        labels += [2.0, 3.0]
    else:
        points.append((0.0, 0.0))  # SAM's ONNX recipe: a padding point when there is no box
        labels.append(-1.0)
    side = 4 * embedding[-1]
    return {
        "point_coords": to_frame(np.array(points, np.float32)[None], original_size, frame),
        "point_labels": np.array(labels, np.float32)[None],
        "mask_input": np.zeros((1, 1, side, side), np.float32),
        "has_mask_input": np.zeros((1,), np.float32),
    }


def pad_points(feed: dict, count: int) -> dict:
    """The feed with its points padded to `count` (coordinates 0, label -1: SAM's "not a point"),
    for a decoder built for a fixed number of points (TFLite, Core ML). More points are refused."""
    coords, labels = feed["point_coords"], feed["point_labels"]
    have = coords.shape[1]
    if have > count:
        raise ValueError(f"{have} prompt points; this decoder takes at most {count}")
    if have == count:
        return feed
    extra = count - have
    return {
        **feed,
        "point_coords": np.concatenate([coords, np.zeros((len(coords), extra, 2), coords.dtype)], axis=1),
        "point_labels": np.concatenate([labels, np.full((len(labels), extra), -1.0, labels.dtype)], axis=1),
    }


POINT_COUNT = "point_count"  # a fixed-points decoder's extra input: how many of its points are the prompt's


def decoder_input_shapes(embedding: tuple, points: int, point_count: bool = False) -> dict:
    """{input name: shape} of a batch-1 decoder feed with `points` points (a fixed-points decoder
    also takes point_count): what exporters trace and converters declare."""
    channels, height, width = embedding
    side = 4 * width
    shapes = {
        "image_embeddings": (1, channels, height, width),
        "point_coords": (1, points, 2),
        "point_labels": (1, points),
        "mask_input": (1, 1, side, side),
        "has_mask_input": (1,),
    }
    return {**shapes, POINT_COUNT: (1,)} if point_count else shapes


def fixed_points_feed(feed: dict, points: int) -> dict:
    """The decoder feed for a decoder built for exactly `points` points (TFLite, Core ML): padded
    (pad_points) with `point_count` saying how many are the prompt's, which the decoder masks
    exactly. More points than it takes: ValueError naming the limit."""
    have = feed["point_coords"].shape[1]
    if have > points:
        raise ValueError(f"{have} prompt points (a box is two, and a prompt without a box gets SAM's padding point); this decoder takes at most {points}")
    padded = pad_points(feed, points)
    return {**{name: padded[name] for name in DECODER_INPUTS}, POINT_COUNT: np.full((len(padded["point_coords"]),), have, np.float32)}


def parity_prompts(height: int, width: int) -> list:
    """PARITY_PROMPTS in pixels of an image of this size."""

    def scaled(x, y):
        return (x * (width - 1), y * (height - 1))

    prompts = []
    for prompt in PARITY_PROMPTS:
        made = {}
        if "points" in prompt:
            made["points"] = [scaled(*p) for p in prompt["points"]]
            made["labels"] = list(prompt["labels"])
        if "box" in prompt:
            x0, y0, x1, y1 = prompt["box"]
            made["box"] = (*scaled(x0, y0), *scaled(x1, y1))
        prompts.append(made)
    return prompts


def parity_feeds(sizes: list, *, frame: int, embedding: tuple) -> list:
    """(image index, decoder feed without the embedding) for every parity prompt of every image."""
    return [(index, decoder_feed(prompt, size, frame=frame, embedding=embedding)) for index, size in enumerate(sizes) for prompt in parity_prompts(*size)]


def prompted_outputs(encode, decode, inputs: np.ndarray, *, feeds: list) -> dict:
    """Each image encoded once, then decoded for its prompts: {"low_res_masks": (P, M, h, w),
    "iou_predictions": (P, M)}. `encode(batch)` -> embedding; `decode(feed dict)` -> dict of the
    DECODER_OUTPUTS (or its outputs in that order)."""
    embeddings, masks, ious = {}, [], []
    for index, feed in feeds:
        if index not in embeddings:
            embeddings[index] = np.asarray(encode(inputs[index : index + 1]), np.float32)
        out = decode(dict(feed, image_embeddings=embeddings[index]))
        if not all(name in out for name in DECODER_OUTPUTS):
            out = dict(zip(DECODER_OUTPUTS, out.values()))
        masks.append(np.asarray(out["low_res_masks"], np.float32)[0])
        ious.append(np.asarray(out["iou_predictions"], np.float32)[0])
    return {"low_res_masks": np.stack(masks), "iou_predictions": np.stack(ious)}


def flat_feeds(feeds: list) -> dict:
    """Feeds as flat arrays for a bundle's reference.npz (prompts have different point counts)."""
    lengths = [feed["point_coords"].shape[1] for _, feed in feeds]
    side = feeds[0][1]["mask_input"].shape[-1]
    return {
        "prompt_images": np.array([index for index, _ in feeds], np.int64),
        "prompt_offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        "prompt_points": np.concatenate([feed["point_coords"][0] for _, feed in feeds]).astype(np.float32),
        "prompt_labels": np.concatenate([feed["point_labels"][0] for _, feed in feeds]).astype(np.float32),
        "mask_side": np.array(side, np.int64),
    }


def feeds_from_flat(arrays: dict, images: int) -> list:
    """flat_feeds' inverse, checking what a bundle holds: offsets rising within the points, image
    indices within the inputs; ValueError naming what is wrong."""
    offsets, indices = arrays["prompt_offsets"], arrays["prompt_images"]
    points, labels = arrays["prompt_points"], arrays["prompt_labels"]
    side = int(arrays["mask_side"])
    if offsets.ndim != 1 or len(offsets) != len(indices) + 1 or offsets[0] != 0 or np.any(np.diff(offsets) < 1) or offsets[-1] != len(points):
        raise ValueError("prompt_offsets do not delimit prompt_points")
    if points.ndim != 2 or points.shape[1] != 2 or labels.shape != (len(points),) or not np.all(np.isin(labels, (-1, 0, 1, 2, 3))):
        raise ValueError("prompt_points must be (T, 2) and prompt_labels (T,) of -1, 0, 1, 2, 3")
    if len(indices) < 1 or np.any(indices < 0) or np.any(indices >= images) or not 1 <= side <= 4096:
        raise ValueError("prompt_images must index the inputs")
    feeds = []
    for index, start, end in zip(indices, offsets[:-1], offsets[1:]):
        feeds.append(
            (
                int(index),
                {
                    "point_coords": points[start:end][None].astype(np.float32),
                    "point_labels": labels[start:end][None].astype(np.float32),
                    "mask_input": np.zeros((1, 1, side, side), np.float32),
                    "has_mask_input": np.zeros((1,), np.float32),
                },
            )
        )
    return feeds


def resize_bilinear(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """(..., H, W) -> (..., height, width), bilinear with half-pixel centres (align_corners=False)."""

    def axis(size_in: int, size_out: int):
        source = np.clip((np.arange(size_out) + 0.5) * size_in / size_out - 0.5, 0, size_in - 1)
        low = np.floor(source).astype(np.int64)
        high = np.minimum(low + 1, size_in - 1)
        return low, high, (source - low).astype(np.float32)

    y0, y1, wy = axis(x.shape[-2], height)
    x0, x1, wx = axis(x.shape[-1], width)
    rows = x[..., y0, :] * (1 - wy)[:, None] + x[..., y1, :] * wy[:, None]
    return rows[..., x0] * (1 - wx) + rows[..., x1] * wx


def masks_for_image(low_res: np.ndarray, original_size: tuple, frame: int) -> np.ndarray:
    """Low-res mask logits (..., h, w) -> logits over the original image (SAM's postprocess_masks:
    up to the frame, crop the image's part, resize to the image); threshold with MASK_THRESHOLD."""
    height, width = original_size
    new_h, new_w = preprocess_shape(height, width, frame)
    full = resize_bilinear(np.asarray(low_res, np.float32), frame, frame)[..., :new_h, :new_w]
    return resize_bilinear(full, height, width)


def ambiguous(labels) -> bool:
    """A prompt of one point and no box: SAM's ambiguous case (a click on a shirt may mean the
    shirt or the person), where its three multimask outputs and their predicted IoU are the answer."""
    labels = np.asarray(labels).ravel()
    return int(np.isin(labels, (0, 1)).sum()) == 1 and not np.isin(labels, (2, 3)).any()


def shown_masks(labels, ious, multimask: bool = False) -> list:
    """Which of the decoder's masks (their predicted IoU `ious`, 4, 3 or 1 of them) a user gets for
    a prompt with these point labels, as SamPredictor advises: all three multimask outputs with
    `multimask`; for a single point the multimask output with the highest predicted IoU; for a box
    or several points the single-mask output (token 0). A decoder exported before all four were
    kept has only the multimask outputs (3: the best of them, or all) or only token 0 (1)."""
    ious = np.asarray(ious, np.float64).ravel()
    if len(ious) == 1:
        return [0]
    first = 1 if len(ious) == 4 else 0  # where the multimask outputs start
    if multimask:
        return list(range(first, len(ious)))
    if len(ious) == 4 and not ambiguous(labels):
        return [0]
    return [first + int(np.argmax(ious[first:]))]


def shown_per_prompt(feeds: list, ious: np.ndarray) -> np.ndarray:
    """shown_masks for each (image index, feed) of a parity run, given the reference's IoU predictions (P, M)."""
    return np.array([shown_masks(feed["point_labels"], row)[0] for (_, feed), row in zip(feeds, ious)], np.int64)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks; two empty masks agree (1.0)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def promptable_metrics(reference: dict, candidate: dict, shown=None) -> dict:
    """Per prompt: the IoU of the candidate's thresholded low-res mask against PyTorch's, for the
    mask a user is shown (`shown`, one index per prompt: shown_per_prompt; default the one PyTorch
    rates best; mask_iou_*), and over every mask the decoder gives (mask_iou_all_*), masks under
    MIN_MASK_SHARE of the frame not judged by IoU; the IoU prediction's absolute error; the low-res
    logit cosine. Each dict holds low_res_masks (P, M, h, w) and iou_predictions (P, M) for P
    prompts, M masks each."""
    ref_masks, cand_masks = np.asarray(reference["low_res_masks"]), np.asarray(candidate["low_res_masks"])
    ref_iou, cand_iou = np.asarray(reference["iou_predictions"], np.float64), np.asarray(candidate["iou_predictions"], np.float64)
    if ref_masks.shape != cand_masks.shape or ref_iou.shape != cand_iou.shape:
        return {"shape_mismatch": f"masks {cand_masks.shape} / IoU {cand_iou.shape} vs the reference's {ref_masks.shape} / {ref_iou.shape}"}
    flat_ref = ref_masks.reshape(-1, *ref_masks.shape[-2:])
    flat_cand = cand_masks.reshape(-1, *cand_masks.shape[-2:])
    ious = np.array([mask_iou(r > MASK_THRESHOLD, c > MASK_THRESHOLD) for r, c in zip(flat_ref, flat_cand)]).reshape(ref_masks.shape[:2])
    share = (ref_masks > MASK_THRESHOLD).mean(axis=(-2, -1))
    best = ref_iou.argmax(axis=1) if shown is None else np.asarray(shown, np.int64)
    shown, judged = ious[np.arange(len(ious)), best], share[np.arange(len(ious)), best] >= MIN_MASK_SHARE
    all_judged = ious[share >= MIN_MASK_SHARE]
    cosine = cosine_per_sample(flat_ref, flat_cand)
    iou_error = np.abs(ref_iou - cand_iou)
    return {
        "prompts": int(ref_masks.shape[0]),
        "masks": int(ious.size),
        "mask_iou_min": float(shown[judged].min()) if judged.any() else 1.0,
        "mask_iou_mean": float(shown[judged].mean()) if judged.any() else 1.0,
        "mask_iou_all_min": float(all_judged.min()) if all_judged.size else 1.0,
        "mask_iou_all_mean": float(all_judged.mean()) if all_judged.size else 1.0,
        "masks_too_small": int(ious.size - all_judged.size),
        "mask_iou_per_prompt": [round(float(v), 6) if ok else None for v, ok in zip(shown, judged)],
        "iou_prediction_max_error": float(iou_error.max()),
        "low_res_cosine_min": float(np.nan_to_num(cosine, nan=-1.0).min()),
        "nonfinite_outputs": int((~np.isfinite(cand_masks)).sum() + (~np.isfinite(cand_iou)).sum()),
        "mask_pixels_reference": int((flat_ref > MASK_THRESHOLD).sum()),
    }


def promptable_failures(metrics: dict, tolerances: dict) -> list:
    """What misses the tolerances (min_mask_iou, max_iou_error, min_cosine); [] when all pass."""
    if "shape_mismatch" in metrics:
        return [metrics["shape_mismatch"]]
    failures = []
    if metrics["nonfinite_outputs"]:
        failures.append(f"{metrics['nonfinite_outputs']} NaN/Inf values in the candidate's masks or IoU predictions")
    gates = (
        ("min_mask_iou", "mask_iou_min", "mask IoU (the best-rated mask)", lambda value, gate: value < gate),
        ("max_iou_error", "iou_prediction_max_error", "IoU-prediction error", lambda value, gate: value > gate),
        ("min_cosine", "low_res_cosine_min", "low-res logit cosine", lambda value, gate: value < gate),
    )
    for gate_name, metric, what, misses in gates:
        gate = tolerances.get(gate_name)
        if gate is not None and misses(metrics[metric], gate):
            failures.append(f"{what} {metrics[metric]:.6g} {'>' if gate_name.startswith('max') else '<'} {gate}")
    return failures
