"""What a model's classes are called and how they are drawn, kept as data beside the code.

ImageNet-1k names (tools/make_imagenet_labels.py writes imagenet.txt from timm's lists), the
Cityscapes and ADE20K names and colours (the reference repository's). A model is given a dataset's
names only when its class count is that dataset's: a fine-tuned head (10 digits, 11 mosaic classes)
gets "class 0".. and a generated palette, never another dataset's names.
"""

from __future__ import annotations

import colorsys
from functools import lru_cache
from importlib import resources

RGB = tuple[int, int, int]

# (dataset, class count) -> the file naming its classes (and, for segmentation datasets, colouring them)
_NAMED = {("imagenet", 1000): "imagenet.txt", ("cityscapes", 19): "cityscapes.txt", ("ade20k", 150): "ade20k.txt"}


def _lines(name: str) -> list[str]:
    text = resources.files(__package__).joinpath(name).read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line and not line.startswith("#")]


@lru_cache(maxsize=None)
def imagenet_labels() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in class-index order (207: "golden retriever")."""
    return tuple(_lines("imagenet.txt"))


@lru_cache(maxsize=None)
def _dataset_palette(name: str) -> tuple[tuple[str, ...], tuple[RGB, ...]]:
    """(names, colours) from a palette file: one `R G B name` line per class."""
    rows = [line.split(maxsplit=3) for line in _lines(name)]
    return tuple(row[3] for row in rows), tuple((int(row[0]), int(row[1]), int(row[2])) for row in rows)


def _named_file(spec):
    return _NAMED.get((spec.dataset, spec.num_classes))


def class_names(spec) -> tuple[str, ...]:
    """One name per class of `spec` (a ModelSpec: its dataset and num_classes decide)."""
    named = _named_file(spec)
    if named == "imagenet.txt":
        return imagenet_labels()
    if named is not None:
        return _dataset_palette(named)[0]
    return tuple(f"class {index}" for index in range(spec.num_classes))


def palette(spec) -> tuple[RGB, ...]:
    """One RGB colour per class of `spec`: the dataset's official colours where it has them, else
    generated (the same for the same class count, on every run)."""
    named = _named_file(spec)
    if named is not None and named != "imagenet.txt":
        return _dataset_palette(named)[1]
    return generated_palette(spec.num_classes)


@lru_cache(maxsize=None)
def generated_palette(count: int) -> tuple[RGB, ...]:
    """`count` distinct bright colours: hues a golden-ratio step apart (neighbouring class indices
    get far-apart hues), alternating two brightnesses."""
    colours = []
    for index in range(count):
        red, green, blue = colorsys.hsv_to_rgb((index * 0.618033988749895) % 1.0, 0.75, 0.95 if index % 2 == 0 else 0.7)
        colours.append((round(red * 255), round(green * 255), round(blue * 255)))
    return tuple(colours)
