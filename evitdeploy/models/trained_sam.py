"""A briefly trained EfficientViT-SAM (the registry's efficientvit_sam_tiny), made here from bundled
data (no download): the promptable model's numerics reference.

Why: a randomly initialised SAM has no mask to lose, so an INT8/FP16 plan of its encoder or decoder
judged on it means little. This one is trained end to end (encoder + prompt decoder) on digit
mosaics (models/trained.py's, 256x256, about 7 digits each), an instance being one pasted digit's ink
(pixels above trained.INK_THRESHOLD) and a prompt one or two points on it, a point with a background
point, or its box. The losses are SAM's: focal + dice on the low-res (128x128) logits against the
instance's mask averaged down to 128x128 (a soft target, the ink fraction of each cell), the
minimum over the three multimask outputs (SAM's ambiguity trick) plus the single-mask output
(token 0), and the IoU head's MSE against each mask's true IoU (at 128x128, against the cells that
are more than half ink).

Measured (`evaluate_promptable()`: 32 held-out "test" mosaics, 224 digits each prompted the four
ways, 896 prompts; logits upscaled bilinearly to 256, thresholded at 0, IoU against the digit's ink):

    mean mask IoU    point  2 points  point+negative   box    all
    single-mask      0.840   0.870        0.847       0.895  0.863
    best multimask   0.840   0.870        0.847       0.894  0.863

The best multimask output (by predicted IoU) is as good as the single one: a digit under a point is
not ambiguous. The IoU head's predictions correlate with the multimask outputs' true IoU at 0.99
(Pearson; the unused outputs' low IoU is predicted low). The ceiling of a 128x128 mask upscaled to
256 is 0.98 (see `_low_res_target`). Training: 500 steps of 4 mosaics (about 28 prompts a step),
0.64 s of CPU a step on one thread, so about 3 minutes on 2 idle CPU threads; 26 minutes on a 2-core
machine that other test runs kept at load 4 (2 OpenMP threads thrash when the cores are shared).

Seeded and deterministic on a given machine and torch build, cached on disk under a name that
includes a hash of the recipe (`promptable_checkpoint`), like the other references.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from evitdeploy.models.trained import (
    Progress,
    _cached,
    _descend,
    _deterministic,
    _load_digits,
    _one_mosaic,
    _optimizer,
    _split,
)

MODEL = "efficientvit_sam_tiny"
SIZE = 256  # the mosaics' side = the encoder's input = the prompt frame: prompts need no transform
KINDS = ("point", "points", "point+negative", "box")
TRAIN_KINDS = (0.35, 0.15, 0.15, 0.35)  # how often each kind is drawn in training
BOX_JITTER = 3  # pixels each box corner moves in training (evaluation's boxes are exact)
NEGATIVE_MARGIN = 8  # a background point is drawn within the box grown by this many pixels
FOCAL_WEIGHT = 20.0  # SAM's focal : dice ratio


@dataclass(frozen=True)
class PromptableRecipe:
    """Everything that decides the promptable model's weights (hashed into the cache name)."""

    seed: int = 0
    size: int = SIZE
    steps: int = 500
    batch_size: int = 4  # images per step; every digit on them is prompted once
    learning_rate: float = 2e-3
    weight_decay: float = 0.05
    data_version: int = 1  # bump when the mosaics, instances or prompt sampling change


# ---------------------------------------------------------------------------------------------
# Data


def mosaic_instances(count: int, seed: int = 0, split: str = "test", size: int = SIZE) -> tuple[np.ndarray, list]:
    """Digit mosaics (the same photos as trained.digit_mosaics(count, size, size, seed, split)) and
    each one's instances: a list per image of {"label", "box": (x0, y0, x1, y1) inclusive pixel
    bounds of the ink, "mask": (size, size) bool}."""
    images8, labels = _load_digits()
    keep = _split(len(labels), split)
    rng = np.random.default_rng(seed)
    photos = np.empty((count, size, size, 3), np.uint8)
    instances = []
    for i in range(count):
        found: list = []
        photos[i], _ = _one_mosaic(rng, images8[keep], labels[keep], height=size, width=size, instances=found)
        instances.append(found)
    return photos, instances


def make_prompt(instance: dict, kind: str, rng, jitter: int = 0) -> dict:
    """A prompt of `kind` for an instance, in pixels: {"points": [(x, y)...], "labels": [...]} with
    points drawn on its ink (and a background point near it), or {"box": (x0, y0, x1, y1)} moved by
    up to `jitter` pixels per coordinate."""
    mask = instance["mask"]
    height, width = mask.shape
    ys, xs = np.nonzero(mask)

    def ink(n: int) -> list:
        picks = rng.choice(len(xs), size=n, replace=False)
        return [(float(xs[i]), float(ys[i])) for i in picks]

    if kind == "point":
        return {"points": ink(1), "labels": [1]}
    if kind == "points":
        return {"points": ink(2), "labels": [1, 1]}
    x0, y0, x1, y1 = instance["box"]
    if kind == "point+negative":
        top, left = max(0, y0 - NEGATIVE_MARGIN), max(0, x0 - NEGATIVE_MARGIN)
        near = ~mask[top : y1 + NEGATIVE_MARGIN + 1, left : x1 + NEGATIVE_MARGIN + 1]
        by, bx = np.nonzero(near)
        pick = int(rng.integers(len(bx)))
        return {"points": ink(1) + [(float(bx[pick] + left), float(by[pick] + top))], "labels": [1, 0]}
    if kind == "box":
        if jitter:
            x0, y0, x1, y1 = (int(v) for v in np.asarray((x0, y0, x1, y1)) + rng.integers(-jitter, jitter + 1, size=4))
            x0, x1 = sorted((min(max(x0, 0), width - 1), min(max(x1, 0), width - 1)))
            y0, y1 = sorted((min(max(y0, 0), height - 1), min(max(y1, 0), height - 1)))
        return {"box": (float(x0), float(y0), float(x1), float(y1))}
    raise ValueError(f"unknown prompt kind {kind!r}; one of {', '.join(KINDS)}")


def prompt_kind(prompt: dict) -> str:
    """Which of KINDS a prompt is (a box, or its points' labels)."""
    if "box" in prompt:
        return "box"
    labels = [int(v) for v in prompt["labels"]]
    return {(1,): "point", (1, 1): "points", (1, 0): "point+negative"}.get(tuple(labels), "other")


def promptable_data(count: int, seed: int = 0, split: str = "test") -> tuple[np.ndarray, list, list]:
    """Photos, prompts and their masks for calibration or evaluation: uint8 photos (N, 256, 256, 3);
    prompts, a list per image of prompt dicts in pixels of the photo ({"points": [(x, y)...],
    "labels": [...]} or {"box": (x0, y0, x1, y1)}), each digit prompted once per kind in KINDS
    (exact boxes); masks, a list per image of bool arrays (len(prompts[i]), 256, 256), row j the
    ground truth of prompts[i][j]. The same arguments give the same data."""
    photos, instances = mosaic_instances(count, seed=seed, split=split)
    rng = np.random.default_rng([seed, 1])
    prompts, masks = [], []
    for found in instances:
        prompts.append([make_prompt(instance, kind, rng) for instance in found for kind in KINDS])
        masks.append(np.stack([instance["mask"] for instance in found for _ in KINDS]))
    return photos, prompts, masks


# ---------------------------------------------------------------------------------------------
# Decoding


def promptable_spec():
    """The registry's efficientvit_sam_tiny."""
    from evitdeploy.models.registry import get_spec

    return get_spec(MODEL)


def _feeds(prompts: list, spec) -> list:
    """decoder_feed's inputs for each prompt (prompts in pixels of a spec-sized square photo)."""
    from evitdeploy.device.prompts import decoder_feed

    return [decoder_feed(p, (spec.height, spec.width), frame=spec.prompt_frame, embedding=spec.embedding) for p in prompts]


def _groups(feeds: list) -> dict:
    """Prompt indices grouped by their number of points (a batch needs one count)."""
    groups: dict = {}
    for i, feed in enumerate(feeds):
        groups.setdefault(feed["point_coords"].shape[1], []).append(i)
    return groups


def _all_masks(model, embeddings, feeds: list, rows):
    """Every mask token's low-res logits (P, 4, h, w) and IoU predictions (P, 4) for the prompts'
    feeds, prompt p on image rows[p] of embeddings; no mask input."""
    import torch

    masks, iou = [None] * len(feeds), [None] * len(feeds)
    encoder, decoder = model.prompt_encoder, model.mask_decoder
    dense = encoder.embed_masks(torch.from_numpy(feeds[0]["mask_input"]), torch.zeros(1))
    for group in _groups(feeds).values():
        coords = torch.from_numpy(np.concatenate([feeds[i]["point_coords"] for i in group]))
        labels = torch.from_numpy(np.concatenate([feeds[i]["point_labels"] for i in group]))
        picked = embeddings[torch.as_tensor([rows[i] for i in group])]
        m, q = decoder.predict_masks(picked, encoder.get_dense_pe(), encoder.embed_points(coords, labels), dense_prompt_embeddings=dense)
        for j, i in enumerate(group):
            masks[i], iou[i] = m[j], q[j]
    return torch.stack(masks), torch.stack(iou)


# ---------------------------------------------------------------------------------------------
# Training


def _losses(logits, target):
    """Per mask: focal (SAM's alpha 0.25, gamma 2) x FOCAL_WEIGHT + dice; logits and target (P, M, h, w)."""
    import torch
    import torch.nn.functional as F

    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    focal = (ce * (1 - p_t) ** 2 * (0.25 * target + 0.75 * (1 - target))).flatten(2).mean(-1)
    dice = 1 - (2 * (p * target).flatten(2).sum(-1) + 1) / (p.flatten(2).sum(-1) + target.flatten(2).sum(-1) + 1)
    return FOCAL_WEIGHT * focal + dice


def _low_res_target(masks: np.ndarray, side: int):
    """(P, S, S) bool -> (P, 1, side, side) float: the fraction of each cell that is ink (area average).

    The mask losses take it as is (soft): their optimum puts logit 0 where half a cell is ink, so
    the logits upscaled to 256 and thresholded at 0 can reach IoU 0.98 of the ink against 0.90 for
    a target binarized at 128 (strokes are 2-4 cells wide there). The IoU head's truth binarizes it."""
    import torch
    import torch.nn.functional as F

    return F.adaptive_avg_pool2d(torch.from_numpy(masks).float()[:, None], side)


def train_promptable(recipe: PromptableRecipe = PromptableRecipe(), progress: Progress = None):
    """efficientvit_sam_tiny trained end to end on fresh "train" mosaics each step, every digit on
    them prompted once (a kind drawn by TRAIN_KINDS, boxes jittered); eval mode, trained BN statistics."""
    import torch

    from evitdeploy.data import preprocess
    from evitdeploy.models.registry import create_model

    spec = promptable_spec().with_input(1, recipe.size, recipe.size)
    side = 4 * spec.embedding[-1]
    with _deterministic(recipe.seed):
        model = create_model(spec, seed=recipe.seed).train()
        optimizer, schedule = _optimizer(model, recipe.learning_rate, recipe.weight_decay, steps=recipe.steps)
        for step in range(recipe.steps):
            batch_seed = recipe.seed * recipe.steps + step  # a fresh batch every step, distinct per seed
            photos, instances = mosaic_instances(recipe.batch_size, seed=batch_seed, split="train", size=recipe.size)
            rng = np.random.default_rng([batch_seed, 1])
            prompts, truth, rows = [], [], []
            for row, found in enumerate(instances):
                for instance in found:
                    kind = KINDS[int(rng.choice(len(KINDS), p=TRAIN_KINDS))]
                    prompts.append(make_prompt(instance, kind, rng, jitter=BOX_JITTER))
                    truth.append(instance["mask"])
                    rows.append(row)
            embeddings = model(torch.from_numpy(preprocess(list(photos), spec, spec.height, width=spec.width)))
            logits, predicted_iou = _all_masks(model, embeddings, _feeds(prompts, spec), rows=rows)
            target = _low_res_target(np.stack(truth), side)
            losses = _losses(logits, target.expand_as(logits))
            with torch.no_grad():
                hit, ink = logits > 0, target > 0.5
                inter = (hit & ink).flatten(2).sum(-1)
                union = (hit | ink).flatten(2).sum(-1)
                true_iou = inter / union.clamp(min=1)
            mask_loss = losses[:, 0] + losses[:, 1:].min(dim=1).values
            loss = mask_loss.mean() + torch.nn.functional.mse_loss(predicted_iou, true_iou)
            _descend(loss, optimizer, schedule)
            if progress and (step + 1) % 50 == 0:
                progress(f"promptable SAM: step {step + 1}/{recipe.steps}, loss {loss.item():.3f}")
    return model.eval()


# ---------------------------------------------------------------------------------------------
# Evaluation and the cached checkpoint


def evaluate_promptable(model, count: int = 32, seed: int = 12345) -> dict:
    """Held-out quality: promptable_data(count, seed, "test"), every prompt through the decoder as
    deployed (single-mask: token 0; multimask: the output with the highest predicted IoU), logits
    upscaled bilinearly to 256 and thresholded at 0, IoU against the digit's ink.

    Returns {"images", "count" (prompts), "single", "multimask" (mean IoU over all prompts),
    "per_kind": {kind: {"count", "single", "multimask"}}, "iou_head_correlation" (Pearson, the
    multimask outputs' predicted vs true IoU)}.
    """
    import torch

    from evitdeploy.data import preprocess
    from evitdeploy.device.prompts import mask_iou, masks_for_image

    spec = promptable_spec()
    photos, prompts, masks = promptable_data(count, seed=seed, split="test")
    single, best, kinds, predicted, actual = [], [], [], [], []
    with torch.no_grad():
        for i in range(count):
            embedding = model(torch.from_numpy(preprocess([photos[i]], spec, spec.height, width=spec.width)))
            logits, iou = _all_masks(model, embedding, _feeds(prompts[i], spec), rows=[0] * len(prompts[i]))
            upscaled = masks_for_image(logits.numpy(), (spec.height, spec.width), spec.prompt_frame) > 0
            for j, prompt in enumerate(prompts[i]):
                ious = [mask_iou(upscaled[j, k], masks[i][j]) for k in range(4)]
                pick = 1 + int(iou[j, 1:].argmax())
                single.append(ious[0])
                best.append(ious[pick])
                kinds.append(prompt_kind(prompt))
                predicted += iou[j, 1:].tolist()
                actual += ious[1:]
    single, best, kinds = np.array(single), np.array(best), np.array(kinds)
    per_kind = {
        kind: {"count": int((kinds == kind).sum()), "single": float(single[kinds == kind].mean()), "multimask": float(best[kinds == kind].mean())}
        for kind in KINDS
    }
    return {
        "images": count,
        "count": int(len(single)),
        "single": float(single.mean()),
        "multimask": float(best.mean()),
        "per_kind": per_kind,
        "iou_head_correlation": float(np.corrcoef(predicted, actual)[0, 1]),
    }


def promptable_checkpoint(cache_dir: Optional[Path] = None, progress: Progress = None) -> Path:
    """The promptable model's .safetensors (our key layout), trained on first use, then cached."""
    recipe = PromptableRecipe()
    return _cached("sam_tiny_digits", recipe, lambda: train_promptable(recipe, progress), cache_dir=cache_dir)
