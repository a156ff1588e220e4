"""EfficientViT backbones (B and L series), classification and segmentation models.

Configurations are data (`BackboneConfig`, `SegHeadConfig`); the classes only assemble blocks.
Backbone layout: `stem` (input conv + local blocks) then four `stages`; stages 3-4 of B models and
stage 4 of L models hold EfficientViT blocks (LiteMLA context + MBConv local).
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import partial
from typing import Iterator

import torch
import torch.nn as nn

from evitdeploy.models.attention import LiteMLA
from evitdeploy.models.configs import BackboneConfig, SegHeadConfig
from evitdeploy.models.layers import BicubicUpsample, ConvNormAct, GELUTanh, ResidualBlock, local_block


def _act(cfg: BackboneConfig):
    return GELUTanh if cfg.series == "l" else nn.Hardswish


def _norm(cfg: BackboneConfig):
    return partial(nn.BatchNorm2d, eps=cfg.norm_eps)


FORMULATIONS = ("deploy", "textbook")


class EfficientViTBlock(nn.Module):
    """Global context (LiteMLA) then local mixing (MBConv), both residual."""

    def __init__(self, channels: int, head_dim: int, expand_ratio: float, norm, act, eps: float, scales: tuple[int, ...] = (5,)):
        super().__init__()
        self.context_module = ResidualBlock(LiteMLA(channels, channels, head_dim, norm=norm, scales=scales, eps=eps), residual=True)
        self.local_module = ResidualBlock(
            local_block("mb", channels, channels, stride=1, expand_ratio=expand_ratio, norm=norm, act=act, fewer_norm=True), residual=True
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.local_module(self.context_module(x))


class Stem(nn.Sequential):
    def __init__(self, cfg: BackboneConfig, in_channels: int):
        super().__init__()
        norm, act, width = _norm(cfg), _act(cfg), cfg.widths[0]
        self.add_module("in_conv", ConvNormAct(in_channels, width, 3, stride=2, norm=norm, act=act))
        kind = "conv" if cfg.series == "l" else "ds"
        for i in range(cfg.depths[0]):
            self.add_module(f"res{i}", ResidualBlock(local_block(kind, width, width, stride=1, expand_ratio=1, norm=norm, act=act), True))


class Stage(nn.Module):
    """A downsampling block then `depth` blocks; the names match timm's for checkpoint loading."""

    def __init__(self, cfg: BackboneConfig, index: int, in_channels: int, eps: float):
        super().__init__()
        norm, act = _norm(cfg), _act(cfg)
        out_channels, depth = cfg.widths[index + 1], cfg.depths[index + 1]
        if cfg.series == "b":
            attention, fewer_norm, kind, down_kind, down_expand, expand = index >= 2, index >= 2, "mb", "mb", 4, 4
            scales = (5,)
        else:  # the reference's EfficientViTLargeBackbone, from the config's per-stage lists
            kind, expand, fewer_norm = cfg.blocks[index], cfg.expands[index], cfg.fewer_norm[index]
            attention = kind.startswith("att")
            scales = (3,) if kind == "att@3" else (5,)
            down_kind, down_expand = (kind if kind in ("mb", "fmb") else "mb"), expand * 4
        blocks = [
            ResidualBlock(
                local_block(down_kind, in_channels, out_channels, stride=2, expand_ratio=down_expand, norm=norm, act=act, fewer_norm=fewer_norm), residual=False
            )
        ]
        # B stages 1-2 count the downsampling block in their depth; every other stage does not.
        repeats = depth - 1 if (cfg.series == "b" and not attention) else depth
        for _ in range(repeats):
            if attention:
                blocks.append(EfficientViTBlock(out_channels, cfg.head_dim, expand, norm=norm, act=act, eps=eps, scales=scales))
            else:
                block = local_block(kind, out_channels, out_channels, stride=1, expand_ratio=expand, norm=norm, act=act, fewer_norm=fewer_norm)
                blocks.append(ResidualBlock(block, residual=True))
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class Backbone(nn.Module):
    """Stem + 4 stages (5 for SAM-XL); `features` returns the stage outputs (strides 4, 8, 16, 32[, 64])."""

    def __init__(self, cfg: BackboneConfig, in_channels: int = 3, eps: float = 1e-5):
        super().__init__()
        self.cfg = cfg
        self.stem = Stem(cfg, in_channels)
        stages, channels = [], cfg.widths[0]
        for i in range(len(cfg.widths) - 1):
            stages.append(Stage(cfg, i, channels, eps=eps))
            channels = cfg.widths[i + 1]
        self.stages = nn.Sequential(*stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The stage outputs (the classifier and segmenter override this with their heads)."""
        return self.features(x)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outputs = []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs

    def set_attention(self, eps: float) -> None:
        set_attention(self, eps)

    def set_formulation(self, formulation: str) -> None:
        set_formulation(self, formulation)

    def formulation(self, formulation: str):
        """`with model.formulation("textbook"):` the block runs it, and the model is back on "deploy" after."""
        return in_formulation(self, formulation)


def set_attention(root: nn.Module, eps: float) -> None:
    """Set every LiteMLA's normalizer eps under `root` (eps is part of a checkpoint's identity)."""
    for module in root.modules():
        if isinstance(module, LiteMLA):
            module.eps = eps


def set_formulation(root: nn.Module, formulation: str) -> None:
    """ "deploy": channel-first LiteMLA and conv bicubic (what we export); "textbook": the
    reference's token-first LiteMLA and F.interpolate, same numbers (the oracle, the naive baseline)."""
    if formulation not in FORMULATIONS:
        raise ValueError(f"formulation must be one of {FORMULATIONS}")
    for module in root.modules():
        if isinstance(module, LiteMLA):
            module.formulation = "channel_first" if formulation == "deploy" else "token_first"
        elif isinstance(module, BicubicUpsample):
            module.formulation = "conv" if formulation == "deploy" else "interpolate"


@contextmanager
def in_formulation(root: nn.Module, formulation: str) -> Iterator[nn.Module]:
    """`root` in `formulation` inside the block, then "deploy" again, the formulation every model is
    built in and exported from (also when the block raises)."""
    set_formulation(root, formulation)
    try:
        yield root
    finally:
        set_formulation(root, "deploy")


class ClassifierHead(nn.Module):
    def __init__(self, cfg: BackboneConfig, num_classes: int):
        super().__init__()
        act = _act(cfg)
        self.in_conv = ConvNormAct(cfg.widths[-1], cfg.head_widths[0], 1, norm=_norm(cfg), act=act)
        self.classifier = nn.Sequential(
            nn.Linear(cfg.head_widths[0], cfg.head_widths[1], bias=False),
            nn.LayerNorm(cfg.head_widths[1], eps=cfg.norm_eps),
            act(),
            nn.Dropout(0.0),
            nn.Linear(cfg.head_widths[1], num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.in_conv(x).mean(dim=(2, 3))
        return self.classifier(x)


class EfficientViTClassifier(Backbone):
    """Backbone + classification head; logits (B, num_classes)."""

    def __init__(self, cfg: BackboneConfig, num_classes: int = 1000, eps: float = 1e-5):
        super().__init__(cfg, eps=eps)
        self.head = ClassifierHead(cfg, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


class SegHead(nn.Module):
    """Project strides 32/16/8 to one width, upsample (bicubic, as the reference) and add, refine."""

    def __init__(self, backbone: BackboneConfig, cfg: SegHeadConfig):
        super().__init__()
        norm, act, width = _norm(backbone), _act(backbone), cfg.head_width
        # Order as the reference's fid_list: stage4 (stride 32), stage3 (16), stage2 (8).
        self.input_ops = nn.ModuleList([ConvNormAct(backbone.widths[i], width, 1, norm=norm) for i in (4, 3, 2)])
        self.upsamples = nn.ModuleList([BicubicUpsample(width, 4), BicubicUpsample(width, 2), nn.Identity()])
        self.middle = nn.Sequential(
            *[
                ResidualBlock(local_block(cfg.middle_op, width, width, stride=1, expand_ratio=cfg.expand_ratio, norm=norm, act=act), True)
                for _ in range(cfg.head_depth)
            ]
        )
        out_width = width
        if cfg.final_expand:
            out_width = width * cfg.final_expand
            self.final_expand = ConvNormAct(width, out_width, 1, norm=norm, act=act)
        else:
            self.final_expand = nn.Identity()
        self.classifier = ConvNormAct(out_width, cfg.num_classes, 1, bias=True)

    def forward(self, stage2: torch.Tensor, stage3: torch.Tensor, stage4: torch.Tensor) -> torch.Tensor:
        fused = None
        for op, upsample, x in zip(self.input_ops, self.upsamples, (stage4, stage3, stage2)):
            x = upsample(op(x))
            fused = x if fused is None else fused + x
        return self.classifier(self.final_expand(self.middle(fused)))


class EfficientViTSegmenter(Backbone):
    """Backbone + segmentation head; logits (B, num_classes, H/8, W/8), as the reference returns."""

    def __init__(self, cfg: BackboneConfig, head: SegHeadConfig, eps: float = 1e-5):
        super().__init__(cfg, eps=eps)
        self.head = SegHead(cfg, head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, stage2, stage3, stage4 = self.features(x)
        return self.head(stage2, stage3, stage4)
