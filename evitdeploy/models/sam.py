"""EfficientViT-SAM: an EfficientViT-L image encoder (backbone + SamNeck) with SAM's prompt encoder
and mask decoder (ours, equal to Meta's: models/prompt.py).

Deployed as two models, as SAM is used: the encoder runs once per image, the decoder once per
prompt. `EfficientViTSam.forward` is the encoder; `EfficientViTSam.decoder()` the prompt decoder in
SAM's ONNX form (points with labels, a box as two labelled points, an optional mask input).
"""

from __future__ import annotations

from functools import partial
from typing import Optional

import torch
import torch.nn as nn

from evitdeploy.models.configs import SamConfig
from evitdeploy.models.efficientvit import Backbone, in_formulation, set_attention, set_formulation
from evitdeploy.models.layers import BicubicUpsample, ConvNormAct, GELUTanh, ResidualBlock, local_block
from evitdeploy.models.prompt import LayerNorm2d, MaskDecoder, PromptDecoder, PromptEncoder, TwoWayTransformer


class SamNeck(nn.Module):
    """The reference's SamNeck: project three stages to one width, upsample (bicubic) to the
    shallowest one's resolution and add, refine with fused-MBConv blocks, project to embed_dim.

    The reference resizes to a fixed 64x64; at the models' own input size that is x4, x2 and x1,
    which BicubicUpsample computes with a conv (no Resize op for converters to trip on)."""

    def __init__(self, cfg: SamConfig):
        super().__init__()
        backbone, width = cfg.backbone, cfg.neck_width
        norm = partial(nn.BatchNorm2d, eps=backbone.norm_eps)
        self.input_ops = nn.ModuleList([ConvNormAct(backbone.widths[i + 1], width, 1, norm=norm) for i in cfg.fused_stages])
        self.upsamples = nn.ModuleList([BicubicUpsample(width, 4), BicubicUpsample(width, 2), nn.Identity()])
        self.middle = nn.Sequential(
            *[
                ResidualBlock(local_block("fmb", width, width, stride=1, expand_ratio=cfg.neck_expand, norm=norm, act=GELUTanh), residual=True)
                for _ in range(cfg.neck_depth)
            ]
        )
        self.output = ConvNormAct(width, cfg.embed_dim, 1, bias=True)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        fused = None
        for op, upsample, x in zip(self.input_ops, self.upsamples, features):
            x = upsample(op(x))
            fused = x if fused is None else fused + x
        return self.output(self.middle(fused))


class SamImageEncoder(nn.Module):
    """Image (N, 3, S, S) -> embedding (N, embed_dim, S/stride, S/stride), layer-normed over channels."""

    def __init__(self, cfg: SamConfig, eps: float):
        super().__init__()
        self.fused_stages = cfg.fused_stages
        self.backbone = Backbone(cfg.backbone, eps=eps)
        self.neck = SamNeck(cfg)
        self.norm = LayerNorm2d(cfg.embed_dim, eps=cfg.backbone.norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)  # called as a module: exported node names carry `backbone`, as module paths do
        return self.norm(self.neck([features[i] for i in self.fused_stages]))


class EfficientViTSam(nn.Module):
    """The whole promptable model; `forward` is the image encoder."""

    def __init__(self, cfg: SamConfig, eps: float = 1e-15):
        super().__init__()
        size = cfg.embedding_size
        self.cfg = cfg
        self.image_encoder = SamImageEncoder(cfg, eps=eps)
        self.prompt_encoder = PromptEncoder(
            embed_dim=cfg.embed_dim,
            image_embedding_size=(size, size),
            input_image_size=(cfg.prompt_frame, cfg.prompt_frame),
            mask_in_chans=cfg.mask_in_chans,
        )
        transformer = TwoWayTransformer(
            depth=cfg.decoder_depth,
            embedding_dim=cfg.embed_dim,
            num_heads=cfg.decoder_heads,
            mlp_dim=cfg.decoder_mlp_dim,
            norm_eps=cfg.backbone.norm_eps,
        )
        self.mask_decoder = MaskDecoder(
            transformer_dim=cfg.embed_dim,
            transformer=transformer,
            num_multimask_outputs=3,
            iou_head_depth=3,
            iou_head_hidden_dim=cfg.iou_head_width,
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.image_encoder(image)

    def decoder(self, masks: int = 4, fixed_points: Optional[int] = None) -> PromptDecoder:
        """The prompt decoder in SAM's ONNX form, sharing this model's weights: `masks` of SAM's
        mask tokens (4: all; see PromptDecoder), `fixed_points` for static-shape converters."""
        return PromptDecoder(self.prompt_encoder, self.mask_decoder, masks=masks, fixed_points=fixed_points)

    def set_attention(self, eps: float) -> None:
        set_attention(self, eps)

    def set_formulation(self, formulation: str) -> None:
        set_formulation(self, formulation)

    def formulation(self, formulation: str):
        """`with model.formulation("textbook"):` the block runs it, and the model is back on "deploy" after."""
        return in_formulation(self, formulation)
