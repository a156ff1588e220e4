"""Architecture configurations as data (no torch import: `evitdeploy models` stays fast)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class BackboneConfig:
    """Widths and depths of stem + 4 stages, as in the reference architecture."""

    series: str  # "b": Hardswish, BN/LN eps 1e-5; "l": GELU-tanh, BN/LN eps 1e-7
    widths: tuple[int, ...]
    depths: tuple[int, ...]
    head_dim: int
    head_widths: tuple[int, int]  # classifier: 1x1 conv width, hidden linear width

    @property
    def norm_eps(self) -> float:
        return 1e-7 if self.series == "l" else 1e-5


@dataclass(frozen=True)
class SegHeadConfig:
    """The reference SegHead: fuse strides 32/16/8 at stride 8, refine, classify."""

    dataset: str
    num_classes: int
    head_width: int
    head_depth: int
    expand_ratio: float
    middle_op: str  # "mb" (MBConv) or "fmb" (FusedMBConv)
    final_expand: Optional[int]


BACKBONES: dict[str, BackboneConfig] = {
    "b0": BackboneConfig("b", (8, 16, 32, 64, 128), (1, 2, 2, 2, 2), head_dim=16, head_widths=(1024, 1280)),
    "b1": BackboneConfig("b", (16, 32, 64, 128, 256), (1, 2, 3, 3, 4), head_dim=16, head_widths=(1536, 1600)),
    "b2": BackboneConfig("b", (24, 48, 96, 192, 384), (1, 3, 4, 4, 6), head_dim=32, head_widths=(2304, 2560)),
    "b3": BackboneConfig("b", (32, 64, 128, 256, 512), (1, 4, 6, 6, 9), head_dim=32, head_widths=(2304, 2560)),
    "l1": BackboneConfig("l", (32, 64, 128, 256, 512), (1, 1, 1, 6, 6), head_dim=32, head_widths=(3072, 3200)),
    "l2": BackboneConfig("l", (32, 64, 128, 256, 512), (1, 2, 2, 8, 8), head_dim=32, head_widths=(3072, 3200)),
    "l3": BackboneConfig("l", (64, 128, 256, 512, 1024), (1, 2, 2, 8, 8), head_dim=32, head_widths=(6144, 6400)),
}


def _b_cityscapes(width: int, depth: int = 3) -> SegHeadConfig:
    return SegHeadConfig("cityscapes", 19, width, head_depth=depth, expand_ratio=4, middle_op="mb", final_expand=4)


def _b_ade20k(width: int) -> SegHeadConfig:
    return SegHeadConfig("ade20k", 150, width, head_depth=3, expand_ratio=4, middle_op="mb", final_expand=None)


# The reference repository defines exactly these (backbone, dataset) pairs; L3 and B0-ADE20K have
# no published head configuration, so we do not invent one.
SEG_HEADS: dict[tuple[str, str], SegHeadConfig] = {
    ("b0", "cityscapes"): _b_cityscapes(32, depth=1),
    ("b1", "cityscapes"): _b_cityscapes(64),
    ("b1", "ade20k"): _b_ade20k(64),
    ("b2", "cityscapes"): _b_cityscapes(96),
    ("b2", "ade20k"): _b_ade20k(96),
    ("b3", "cityscapes"): _b_cityscapes(128),
    ("b3", "ade20k"): _b_ade20k(128),
    ("l1", "cityscapes"): SegHeadConfig("cityscapes", 19, 256, head_depth=3, expand_ratio=1, middle_op="fmb", final_expand=None),
    ("l1", "ade20k"): SegHeadConfig("ade20k", 150, 128, head_depth=3, expand_ratio=4, middle_op="fmb", final_expand=8),
    ("l2", "cityscapes"): SegHeadConfig("cityscapes", 19, 256, head_depth=5, expand_ratio=1, middle_op="fmb", final_expand=None),
    ("l2", "ade20k"): SegHeadConfig("ade20k", 150, 128, head_depth=3, expand_ratio=4, middle_op="fmb", final_expand=8),
}
