"""Briefly trained EfficientViT references, made here from bundled data (no download).

Why: random weights give LiteMLA and activation ranges no trained model has, and no accuracy to
lose, so precision work (INT8/FP16 plans, calibration) judged on them means little. These models are
trained on scikit-learn's 1797 handwritten digits, so their ranges are a trained model's and their
held-out accuracy is a real number that a precision plan can be held to.

- `digits_checkpoint()`: EfficientViT-B0 classifier, 10 classes, 64x64 inputs; about 25 s on
  2 CPU cores, 98.3% held-out accuracy (539 digits).
- `mosaic_checkpoint()`: EfficientViT-Seg-B0 (Cityscapes head), 11 classes (digits + background)
  on mosaics of pasted digits, trained at 128x256; about 90 s on 2 idle CPU cores. Held out: pixel
  accuracy 0.987 (all-background 0.911), mIoU 0.88 at 128x256 and 0.86 at 512x1024: fully
  convolutional + linear attention, and the digits keep their pixel size and density on any canvas.
- `trained_sam.promptable_checkpoint()`: efficientvit_sam_tiny (encoder + prompt decoder) on the same
  mosaics at 256x256, prompted with points and boxes on single digits (models/trained_sam.py).

All are seeded and deterministic on a given machine and torch build, and cached on disk under a
name that includes a hash of their recipe (a changed recipe retrains).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

from evitdeploy.errors import EXIT_BACKEND_UNAVAILABLE, UserError
from evitdeploy.spec import ModelSpec
from evitdeploy.progress import Progress


BACKGROUND = 10  # the mosaics' label for every pixel that is not a digit's ink
MOSAIC_CLASSES = 11
TRAIN_FRACTION = 0.7
INK_THRESHOLD = 0.3  # of full ink (16/16): where an upsampled digit counts as stroke, not paper
THREADS = 2


@dataclass(frozen=True)
class ClassifierRecipe:
    """Everything that decides the digits classifier's weights (hashed into the cache name)."""

    seed: int = 0
    family: str = "b0"  # the backbone: b0 by default, b1 to check plans on a wider trained model
    size: int = 64
    epochs: int = 12
    batch_size: int = 64
    learning_rate: float = 3e-3
    weight_decay: float = 0.05
    max_shift: int = 6  # pixels of random translation, the only augmentation
    data_version: int = 2  # bump when digits_images or the preprocessing of its photos changes (2: the reference eval transform)


@dataclass(frozen=True)
class SegmenterRecipe:
    """Everything that decides the mosaic segmenter's weights (hashed into the cache name)."""

    seed: int = 0
    family: str = "b0"  # the backbone: b0 by default, b1 for the TensorRT/GPU FP16 checks' target model
    height: int = 128
    width: int = 256
    steps: int = 800
    batch_size: int = 8
    learning_rate: float = 3e-3
    weight_decay: float = 0.05
    data_version: int = 1  # bump when digit_mosaics changes


# ---------------------------------------------------------------------------------------------
# Data


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits (values 0..16) and their labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise UserError(
            "scikit-learn (the bundled handwritten digits) is not installed",
            "pip install scikit-learn",
            EXIT_BACKEND_UNAVAILABLE,
        ) from exc
    digits = load_digits()
    return digits.images.astype(np.float32), digits.target.astype(np.int64)


def _split(count: int, split: str) -> np.ndarray:
    """A fixed seeded 70/30 split of the digits into "train" and held-out "test"."""
    if split not in ("train", "test"):
        raise ValueError("split must be 'train' or 'test'")
    order = np.random.default_rng(20240607).permutation(count)
    cut = round(count * TRAIN_FRACTION)
    return np.sort(order[:cut] if split == "train" else order[cut:])


def _ink(digits8: np.ndarray, size: int) -> np.ndarray:
    """8x8 digits (0..16) upsampled bilinearly to size x size ink in [0, 1]."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(digits8, dtype=np.float32))[:, None] / 16.0
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)[:, 0].clamp(0, 1).numpy()


def digits_images(split: str = "train", size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Digits as photos: uint8 (N, size, size, 3) RGB, bright ink on black, and labels (N,) int64."""
    images8, labels = _load_digits()
    keep = _split(len(labels), split)
    ink = np.rint(_ink(images8[keep], size) * 255).astype(np.uint8)
    return np.repeat(ink[..., None], 3, axis=-1), labels[keep]


def digit_mosaics(count: int, height: int, width: int, seed: int = 0, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """Dense labels from real data: digits of `split` pasted on a dark, noisy canvas.

    Returns uint8 photos (N, H, W, 3) and labels (N, H, W) int64: the digit (0..9) where its ink is,
    BACKGROUND (10) elsewhere. Digits are 24..64 px tall whatever the canvas size, at a fixed density
    (one per 96x96 px on average, non-overlapping), so a larger canvas shows more digits, not bigger ones.
    """
    images8, labels = _load_digits()
    keep = _split(len(labels), split)
    rng = np.random.default_rng(seed)
    photos = np.empty((count, height, width, 3), np.uint8)
    label_maps = np.empty((count, height, width), np.int64)
    for i in range(count):
        photos[i], label_maps[i] = _one_mosaic(rng, images8[keep], labels[keep], height=height, width=width)
    return photos, label_maps


def _one_mosaic(rng, images8, labels, height: int, width: int, instances: Optional[list] = None) -> tuple[np.ndarray, np.ndarray]:
    """One mosaic; when `instances` is a list, each pasted digit is appended to it as {"label",
    "box": (x0, y0, x1, y1) its ink's inclusive pixel bounds, "mask": (H, W) bool, its ink}."""
    canvas = np.full((height, width), rng.uniform(0, 40), np.float32)
    label_map = np.full((height, width), BACKGROUND, np.int64)
    taken = np.zeros((height, width), bool)
    wanted = max(1, round(height * width / 96**2))
    for _ in range(4 * wanted):  # rejection sampling: skip a digit that would overlap another
        if wanted == 0:
            break
        size = int(rng.integers(24, 65))
        top, left = int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))
        if taken[top : top + size, left : left + size].any():
            continue
        pick = int(rng.integers(len(labels)))
        ink = _ink(images8[pick : pick + 1], size)[0]
        region = (slice(top, top + size), slice(left, left + size))
        canvas[region] = np.maximum(canvas[region], ink * 255 * rng.uniform(0.7, 1.0))
        label_map[region][ink > INK_THRESHOLD] = labels[pick]
        if instances is not None:
            instances.append(_instance(ink > INK_THRESHOLD, (top, left), (height, width), label=int(labels[pick])))
        taken[region] = True
        wanted -= 1
    canvas += rng.normal(0, 6, canvas.shape).astype(np.float32)
    photo = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return np.repeat(photo[..., None], 3, axis=-1), label_map


def _instance(ink: np.ndarray, corner: tuple, shape: tuple, label: int) -> dict:
    """A pasted digit's ink (size x size bool at `corner`) as an instance on the (H, W) canvas."""
    mask = np.zeros(shape, bool)
    mask[corner[0] : corner[0] + ink.shape[0], corner[1] : corner[1] + ink.shape[1]] = ink
    ys, xs = np.nonzero(mask)
    return {"label": label, "box": (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())), "mask": mask}


# ---------------------------------------------------------------------------------------------
# Specs and scores


def digits_spec(size: int = 64, family: str = "b0") -> ModelSpec:
    """The spec of the digits classifier: efficientvit_<family> with 10 classes at size x size."""
    from evitdeploy.models.registry import get_spec

    return replace(get_spec(f"efficientvit_{family}"), num_classes=10).with_input(1, size, size)


def mosaic_spec(height: int = 128, width: int = 256, family: str = "b0") -> ModelSpec:
    """The spec of the mosaic segmenter: efficientvit_seg_<family>_cityscapes with 11 classes."""
    from evitdeploy.models.registry import get_spec

    return replace(get_spec(f"efficientvit_seg_{family}_cityscapes"), num_classes=MOSAIC_CLASSES).with_input(1, height, width)


def classification_accuracy(logits, labels) -> float:
    """Top-1 accuracy of logits (N, C) against labels (N,)."""
    return float((np.asarray(logits).argmax(axis=1) == np.asarray(labels)).mean())


def segmentation_scores(logits_stride8, labels_full) -> dict:
    """Pixel accuracy and mean IoU at full resolution.

    The stride-8 logits are upsampled bilinearly to the labels' size before the argmax (as the
    reference scores Cityscapes), because strokes are thinner than one stride-8 cell. mIoU averages
    the classes present in the labels or the prediction.
    """
    import torch
    import torch.nn.functional as F

    logits = torch.as_tensor(np.asarray(logits_stride8, dtype=np.float32))
    labels = np.asarray(labels_full)
    predicted = np.concatenate(
        [F.interpolate(logits[i : i + 1], size=labels.shape[-2:], mode="bilinear", align_corners=False).argmax(1).numpy() for i in range(len(logits))]
    )  # one image at a time: at 512x1024 the full-resolution logits of a batch are large
    classes = logits.shape[1]
    confusion = np.bincount(labels.ravel() * classes + predicted.ravel(), minlength=classes**2).reshape(classes, classes)
    union = confusion.sum(0) + confusion.sum(1) - np.diag(confusion)
    present = union > 0
    return {
        "pixel_accuracy": float(np.diag(confusion).sum() / confusion.sum()),
        "miou": float((np.diag(confusion)[present] / union[present]).mean()),
    }


# ---------------------------------------------------------------------------------------------
# Training


@contextlib.contextmanager
def _deterministic(seed: int) -> Iterator[None]:
    """Seeded, deterministic kernels and a fixed thread count; the caller's settings come back."""
    import torch

    threads, strict = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_num_threads(THREADS)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(strict)
            torch.set_num_threads(threads)


def _optimizer(model, learning_rate: float, weight_decay: float, steps: int):
    """AdamW with a one-cycle schedule; no weight decay on norms and biases."""
    import torch

    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=learning_rate)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=steps, pct_start=0.15)
    return optimizer, schedule


def _descend(loss, optimizer, schedule) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    schedule.step()


def _shifted(x, max_shift: int, generator):
    """Each image translated by up to max_shift pixels (the digits' dark border wraps around)."""
    import torch

    shifts = torch.randint(-max_shift, max_shift + 1, (len(x), 2), generator=generator)
    return torch.stack([torch.roll(image, tuple(s.tolist()), dims=(1, 2)) for image, s in zip(x, shifts)])


def train_digits_classifier(recipe: ClassifierRecipe = ClassifierRecipe(), progress: Progress = None):
    """EfficientViT-B0 trained on the "train" digits; returned in eval mode with trained BN statistics."""
    import torch
    import torch.nn.functional as F

    from evitdeploy.data import preprocess
    from evitdeploy.models.registry import create_model

    spec = digits_spec(recipe.size, recipe.family)
    images, labels = digits_images("train", recipe.size)
    inputs = torch.from_numpy(preprocess(list(images), spec, recipe.size, width=recipe.size))
    targets = torch.from_numpy(labels)
    per_epoch = len(targets) // recipe.batch_size  # drop the ragged last batch: BN wants full ones
    with _deterministic(recipe.seed):
        model = create_model(spec, seed=recipe.seed).train()
        optimizer, schedule = _optimizer(model, recipe.learning_rate, recipe.weight_decay, steps=recipe.epochs * per_epoch)
        generator = torch.Generator().manual_seed(recipe.seed)
        for epoch in range(recipe.epochs):
            order = torch.randperm(len(targets), generator=generator)
            for step in range(per_epoch):
                batch = order[step * recipe.batch_size : (step + 1) * recipe.batch_size]
                loss = F.cross_entropy(model(_shifted(inputs[batch], recipe.max_shift, generator)), targets[batch])
                _descend(loss, optimizer, schedule)
            if progress:
                progress(f"digits classifier: epoch {epoch + 1}/{recipe.epochs}, loss {loss.item():.3f}")
    return model.eval()


def train_mosaic_segmenter(recipe: SegmenterRecipe = SegmenterRecipe(), progress: Progress = None):
    """EfficientViT-Seg-B0 (or the recipe's family) trained on fresh "train" mosaics each step; eval
    mode, trained BN statistics.

    The loss is cross-entropy on the stride-8 logits upsampled bilinearly to full resolution, the
    same comparison `segmentation_scores` makes (strokes are thinner than a stride-8 cell).
    """
    import torch
    import torch.nn.functional as F

    from evitdeploy.data import preprocess
    from evitdeploy.models.registry import create_model

    spec = mosaic_spec(recipe.height, recipe.width, recipe.family)
    with _deterministic(recipe.seed):
        model = create_model(spec, seed=recipe.seed).train()
        optimizer, schedule = _optimizer(model, recipe.learning_rate, recipe.weight_decay, steps=recipe.steps)
        for step in range(recipe.steps):
            batch_seed = recipe.seed * recipe.steps + step  # a fresh batch every step, distinct per seed
            photos, label_maps = digit_mosaics(recipe.batch_size, recipe.height, recipe.width, seed=batch_seed, split="train")
            inputs = torch.from_numpy(preprocess(list(photos), spec, recipe.height, width=recipe.width))
            logits = F.interpolate(model(inputs), size=(recipe.height, recipe.width), mode="bilinear", align_corners=False)
            loss = F.cross_entropy(logits, torch.from_numpy(label_maps))
            _descend(loss, optimizer, schedule)
            if progress and (step + 1) % 50 == 0:
                progress(f"mosaic segmenter: step {step + 1}/{recipe.steps}, loss {loss.item():.3f}")
    return model.eval()


# ---------------------------------------------------------------------------------------------
# Cached checkpoints


def digits_checkpoint(cache_dir: Optional[Path] = None, progress: Progress = None, family: str = "b0") -> Path:
    """The digits classifier's .safetensors (our key layout), trained on first use, then cached."""
    recipe = ClassifierRecipe(family=family)
    return _cached(f"digits_{family}", recipe, lambda: train_digits_classifier(recipe, progress), cache_dir=cache_dir)


def mosaic_checkpoint(cache_dir: Optional[Path] = None, progress: Progress = None, family: str = "b0") -> Path:
    """The mosaic segmenter's .safetensors (our key layout), trained on first use, then cached."""
    recipe = SegmenterRecipe(family=family)
    return _cached(f"mosaic_seg_{family}", recipe, lambda: train_mosaic_segmenter(recipe, progress), cache_dir=cache_dir)


def default_cache_dir() -> Path:
    """$EVITDEPLOY_CACHE/trained if set, else ~/.cache/evitdeploy/trained."""
    root = os.environ.get("EVITDEPLOY_CACHE")
    return Path(root) / "trained" if root else Path.home() / ".cache" / "evitdeploy" / "trained"


def recipe_hash(recipe) -> str:
    """A short hash of a recipe: part of the cached file's name, so a changed recipe retrains."""
    text = json.dumps({"recipe": type(recipe).__name__, **asdict(recipe)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _cached(name: str, recipe, train: Callable, cache_dir: Optional[Path]) -> Path:
    """The cached checkpoint, trained once even when several processes (parallel test workers, two
    commands) ask at the same time: the first trains under a file lock, the others wait and read it."""
    from filelock import FileLock  # torch's own dependency
    from safetensors.torch import save

    from evitdeploy.files import write_bytes

    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = folder / f"{name}-{recipe_hash(recipe)}.safetensors"
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if path.is_file():  # trained by another process while this one waited
            return path
        model = train()
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        write_bytes(path, save(state))  # temp + rename: a killed run never leaves half a file
    return path
