"""Architecture configurations as data (no torch import: `evitdeploy models` stays fast)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class BackboneConfig:
    """Widths and depths of stem + 4 stages, as in the reference architecture."""

    series: str  # "b": Hardswish, BN/LN eps 1e-5; "l": GELU-tanh, BN/LN eps 1e-7
    widths: tuple[int, ...]  # the stem's, then one per stage (4 stages; 5 for the SAM-XL backbones)
    depths: tuple[int, ...]
    head_dim: int
    head_widths: tuple[int, int] = (0, 0)  # classifier: 1x1 conv width, hidden linear width
    # L series, per stage: block kind ("fmb", "mb", "att" = LiteMLA with 5x5 aggregation, "att@3"
    # with 3x3), expand ratio, and whether the inner norms give way to biases (the reference's
    # EfficientViTLargeBackbone block_list / expand_list / fewer_norm_list, stem excluded).
    blocks: tuple[str, ...] = ("fmb", "fmb", "mb", "att")
    expands: tuple[float, ...] = (4, 4, 4, 6)
    fewer_norm: tuple[bool, ...] = (False, False, True, True)
    eps: Optional[float] = None  # every norm's eps where a model family sets its own (SAM: 1e-6)

    @property
    def norm_eps(self) -> float:
        if self.eps is not None:
            return self.eps
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


@dataclass(frozen=True)
class SamConfig:
    """EfficientViT-SAM: backbone + SamNeck (the image encoder) and SAM's prompt encoder and mask
    decoder. The neck fuses the last three stages at the first one's resolution (`fused_stages`,
    0-based stage indices, deepest first), as the reference's `fid_list`."""

    backbone: BackboneConfig
    fused_stages: tuple[int, int, int]
    neck_width: int
    neck_depth: int
    neck_expand: float
    image_size: int  # the encoder's square input (the image is resized longest-side and padded)
    prompt_frame: int = 1024  # prompts and masks are in SAM's square frame of this size
    embed_dim: int = 256  # image embedding channels = the decoder's transformer width
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_heads: int = 8
    decoder_mlp_dim: int = 2048
    iou_head_width: int = 256

    @property
    def embedding_size(self) -> int:
        """The embedding's side: the image's at the shallowest fused stage's stride (SAM: 64);
        stage k's output has stride 2^(k+2) (the stem is stride 2)."""
        return self.image_size // 2 ** (self.fused_stages[-1] + 2)


def _sam_backbone(widths, depths, **xl) -> BackboneConfig:
    return BackboneConfig("l", widths, depths, head_dim=32, eps=1e-6, **xl)


_XL = dict(blocks=("fmb", "fmb", "fmb", "att@3", "att@3"), expands=(4, 4, 4, 4, 6), fewer_norm=(False, False, False, True, True))
_L_WIDTHS, _XL_WIDTHS = (32, 64, 128, 256, 512), (32, 64, 128, 256, 512, 1024)

# The reference's sam.py (efficientvit_sam_l0 ... xl1); norm eps 1e-6 for all five (sam_model_zoo.py).
SAM_MODELS: dict[str, SamConfig] = {
    "l0": SamConfig(_sam_backbone(_L_WIDTHS, (1, 1, 1, 4, 4)), (3, 2, 1), 256, neck_depth=4, neck_expand=1, image_size=512),
    "l1": SamConfig(_sam_backbone(_L_WIDTHS, (1, 1, 1, 6, 6)), (3, 2, 1), 256, neck_depth=8, neck_expand=1, image_size=512),
    "l2": SamConfig(_sam_backbone(_L_WIDTHS, (1, 2, 2, 8, 8)), (3, 2, 1), 256, neck_depth=12, neck_expand=1, image_size=512),
    "xl0": SamConfig(_sam_backbone(_XL_WIDTHS, (0, 1, 1, 2, 3, 3), **_XL), (4, 3, 2), 256, neck_depth=6, neck_expand=4, image_size=1024),
    "xl1": SamConfig(_sam_backbone(_XL_WIDTHS, (1, 2, 2, 4, 6, 6), **_XL), (4, 3, 2), 256, neck_depth=12, neck_expand=4, image_size=1024),
    # Not a published model: the same architecture, small enough to train here on digit mosaics
    # (models/trained.py), because random weights are no numerics reference.
    "tiny": SamConfig(
        BackboneConfig("l", (8, 16, 32, 64, 128), (1, 1, 1, 2, 2), head_dim=16, eps=1e-6),
        (3, 2, 1),
        64,
        neck_depth=2,
        neck_expand=1,
        image_size=256,
        prompt_frame=256,
        embed_dim=64,
        decoder_heads=4,
        decoder_mlp_dim=256,
        iou_head_width=64,
    ),
}
