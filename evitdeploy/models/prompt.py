"""SAM's prompt encoder and mask decoder, written for deployment.

EfficientViT-SAM uses Meta's `segment_anything` PromptEncoder, MaskDecoder and TwoWayTransformer
unchanged, but Meta's package cannot be imported beside our torch (its `__init__` imports
torchvision). So they are written here with exactly Meta's parameter and buffer names, so that a
Meta or EfficientViT-SAM state dict loads unchanged (`strict=True`); tests/test_sam_decoder.py
proves them equal to Meta's modules.

Where they differ from Meta:
- `PromptDecoder` is SAM's ONNX recipe (`segment_anything/utils/onnx.py`): labels pick the
  embeddings by multiplication, so the traced graph has no data-dependent control flow and the
  number of points stays dynamic.
- Batch: Meta repeats the image embedding once per prompt row, which suits a single image only;
  here an image batch of 1 is expanded to the prompt batch, and an equal one is paired row by row.
- The transformer's nn.LayerNorms take `norm_eps`, default 1e-6 as EfficientViT-SAM sets them
  (Meta's default is 1e-5); LayerNorm2d keeps Meta's 1e-6.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of an NCHW tensor (Meta's; not an nn.LayerNorm)."""

    def __init__(self, num_channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class PositionEmbeddingRandom(nn.Module):
    """Positional encoding by random spatial frequencies (a Gaussian matrix, a buffer)."""

    def __init__(self, num_pos_feats: int = 64, scale: Optional[float] = None):
        super().__init__()
        scale = 1.0 if scale is None or scale <= 0.0 else scale
        self.register_buffer("positional_encoding_gaussian_matrix", scale * torch.randn((2, num_pos_feats)))

    def _pe_encoding(self, coords: torch.Tensor) -> torch.Tensor:
        """(..., 2) coordinates in [0, 1] -> (..., 2 * num_pos_feats)."""
        coords = 2 * coords - 1
        coords = coords @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """The encoding of every cell centre of an (h, w) grid: (C, h, w)."""
        h, w = size
        grid = torch.ones((h, w), device=self.positional_encoding_gaussian_matrix.device, dtype=torch.float32)
        y_embed = (grid.cumsum(dim=0) - 0.5) / h
        x_embed = (grid.cumsum(dim=1) - 0.5) / w
        pe = self._pe_encoding(torch.stack([x_embed, y_embed], dim=-1))
        return pe.permute(2, 0, 1)

    def forward_with_coords(self, coords_input: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """(B, N, 2) pixel (x, y) coordinates in an image of size (h, w) -> (B, N, C)."""
        size = coords_input.new_tensor([image_size[1], image_size[0]])
        return self._pe_encoding((coords_input / size).to(torch.float))


class PromptEncoder(nn.Module):
    """Embeds points, boxes and a low-resolution mask into sparse and dense prompt embeddings."""

    def __init__(
        self,
        embed_dim: int,
        image_embedding_size: tuple[int, int],
        input_image_size: tuple[int, int],
        mask_in_chans: int,
        activation: type[nn.Module] = nn.GELU,
    ):
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = tuple(input_image_size)
        self.image_embedding_size = tuple(image_embedding_size)
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        self.num_point_embeddings = 4  # negative/positive point, box top-left/bottom-right
        self.point_embeddings = nn.ModuleList([nn.Embedding(1, embed_dim) for _ in range(self.num_point_embeddings)])
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            activation(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            activation(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """The positional encoding of the image embedding's grid: (1, C, emb_h, emb_w)."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def embed_points(self, point_coords: torch.Tensor, point_labels: torch.Tensor) -> torch.Tensor:
        """(B, N, 2) coordinates in the input frame and (B, N) labels (-1 padding, 0 negative,
        1 positive, 2/3 box top-left/bottom-right) -> (B, N, C). Labels select embeddings by
        multiplication: no data-dependent control flow."""
        embedding = self.pe_layer.forward_with_coords(point_coords + 0.5, self.input_image_size)
        labels = point_labels.unsqueeze(-1)
        padding = (labels == -1).to(embedding.dtype)
        embedding = embedding * (1 - padding) + self.not_a_point_embed.weight * padding
        for i in range(self.num_point_embeddings):
            embedding = embedding + self.point_embeddings[i].weight * (labels == i).to(embedding.dtype)
        return embedding

    def embed_masks(self, mask_input: torch.Tensor, has_mask_input: torch.Tensor) -> torch.Tensor:
        """(B, 1, 4*emb_h, 4*emb_w) mask and (B,) or (1,) 0/1 flag -> (B, C, emb_h, emb_w)."""
        has_mask = has_mask_input.reshape(-1, 1, 1, 1)
        no_mask = self.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return has_mask * self.mask_downscaling(mask_input) + (1 - has_mask) * no_mask

    def forward(
        self,
        points: Optional[tuple[torch.Tensor, torch.Tensor]],
        boxes: Optional[torch.Tensor],
        masks: Optional[torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Meta's eager interface: (sparse (B, N, C), dense (B, C, emb_h, emb_w)). Points without
        boxes get a padding point, as Meta's do; boxes (B, 4) are embedded as two corner points, in
        their own call, as Meta does (one call for all rounds the encoding's matmul differently)."""
        sparse = []
        if points is not None:
            coords, labels = points[0], points[1].to(points[0].dtype)
            if boxes is None:
                batch = coords.shape[0]
                coords = torch.cat([coords, coords.new_zeros((batch, 1, 2))], dim=1)
                labels = torch.cat([labels, labels.new_full((batch, 1), -1.0)], dim=1)
            sparse.append(self.embed_points(coords, labels))
        if boxes is not None:
            corners = boxes.new_tensor([[2.0, 3.0]]).expand(boxes.shape[0], -1)
            sparse.append(self.embed_points(boxes.reshape(-1, 2, 2), corners))
        batch = sparse[0].shape[0] if sparse else masks.shape[0] if masks is not None else 1
        weight = self.no_mask_embed.weight
        sparse = torch.cat(sparse, dim=1) if sparse else weight.new_empty((batch, 0, self.embed_dim))
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            dense = weight.reshape(1, -1, 1, 1).expand(batch, -1, *self.image_embedding_size)
        return sparse, dense


class MLPBlock(nn.Module):
    """Linear -> activation -> Linear (the transformer's feed-forward)."""

    def __init__(self, embedding_dim: int, mlp_dim: int, act: type[nn.Module] = nn.GELU):
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))


class MLP(nn.Module):
    """`num_layers` Linears with ReLU between them (the hypernetworks and the IoU head)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int, sigmoid_output: bool = False):
        super().__init__()
        self.num_layers = num_layers
        h = [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(n, k) for n, k in zip([input_dim] + h, h + [output_dim]))
        self.sigmoid_output = sigmoid_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = F.relu(layer(x)) if i < self.num_layers - 1 else layer(x)
        return torch.sigmoid(x) if self.sigmoid_output else x


class Attention(nn.Module):
    """Multi-head attention whose projections may downscale the embedding (internal_dim)."""

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1):
        super().__init__()
        self.embedding_dim = embedding_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads:
            raise ValueError(f"num_heads ({num_heads}) must divide the internal dim ({self.internal_dim})")
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.v_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    def _separate_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, heads, N, C / heads)."""
        return x.unflatten(-1, (self.num_heads, self.internal_dim // self.num_heads)).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_valid: Optional[torch.Tensor] = None) -> torch.Tensor:
        """`key_valid` (B, keys) bool: keys marked False get no weight (-inf before the softmax,
        so exp() gives exactly 0 and they add nothing to its sum)."""
        q = self._separate_heads(self.q_proj(q))
        k = self._separate_heads(self.k_proj(k))
        v = self._separate_heads(self.v_proj(v))
        attn = q @ k.permute(0, 1, 3, 2) / math.sqrt(self.internal_dim // self.num_heads)
        if key_valid is not None:
            attn = attn.masked_fill(~key_valid[:, None, None, :], float("-inf"))
        attn = torch.softmax(attn, dim=-1)
        out = (attn @ v).transpose(1, 2).flatten(2)
        return self.out_proj(out)


class TwoWayAttentionBlock(nn.Module):
    """Token self-attention, tokens -> image, MLP on tokens, image -> tokens."""

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int = 2048,
        activation: type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
        norm_eps: float = 1e-6,
    ):
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim, eps=norm_eps)
        self.cross_attn_token_to_image = Attention(embedding_dim, num_heads, downsample_rate=attention_downsample_rate)
        self.norm2 = nn.LayerNorm(embedding_dim, eps=norm_eps)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, act=activation)
        self.norm3 = nn.LayerNorm(embedding_dim, eps=norm_eps)
        self.norm4 = nn.LayerNorm(embedding_dim, eps=norm_eps)
        self.cross_attn_image_to_token = Attention(embedding_dim, num_heads, downsample_rate=attention_downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(
        self, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor, key_pe: torch.Tensor, token_valid: Optional[torch.Tensor] = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`token_valid` (B, tokens): tokens marked False are no key of either token attention."""
        if self.skip_first_layer_pe:
            queries = self.self_attn(q=queries, k=queries, v=queries, key_valid=token_valid)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q=q, k=q, v=queries, key_valid=token_valid)
        queries = self.norm1(queries)

        q, k = queries + query_pe, keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q=q, k=k, v=keys))
        queries = self.norm3(queries + self.mlp(queries))

        q, k = queries + query_pe, keys + key_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(q=k, k=q, v=queries, key_valid=token_valid))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """Prompt tokens and image tokens attending to each other, `depth` blocks deep."""

    def __init__(
        self,
        depth: int,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        activation: type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
        norm_eps: float = 1e-6,
    ):
        super().__init__()
        self.depth = depth
        self.embedding_dim = embedding_dim
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(
                embedding_dim=embedding_dim,
                num_heads=num_heads,
                mlp_dim=mlp_dim,
                activation=activation,
                attention_downsample_rate=attention_downsample_rate,
                skip_first_layer_pe=(i == 0),
                norm_eps=norm_eps,
            )
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(embedding_dim, num_heads, downsample_rate=attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim, eps=norm_eps)

    def forward(
        self, image_embedding: torch.Tensor, image_pe: torch.Tensor, point_embedding: torch.Tensor, token_valid: Optional[torch.Tensor] = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, h, w) image, its (B or 1, C, h, w) encoding, (B, T, C) tokens ->
        (tokens (B, T, C), image (B, h*w, C)); `token_valid` (B, T) masks padding tokens out as keys."""
        keys = image_embedding.flatten(2).permute(0, 2, 1)
        image_pe = image_pe.flatten(2).permute(0, 2, 1)
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries=queries, keys=keys, query_pe=point_embedding, key_pe=image_pe, token_valid=token_valid)
        q, k = queries + point_embedding, keys + image_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q=q, k=k, v=keys))
        return queries, keys


class MaskDecoder(nn.Module):
    """Predicts masks and their IoU from image and prompt embeddings (token 0: the single mask,
    tokens 1.. the multimask outputs)."""

    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: nn.Module,
        num_multimask_outputs: int = 3,
        activation: type[nn.Module] = nn.GELU,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ):
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            activation(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            activation(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, num_layers=3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, num_layers=iou_head_depth)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        point_valid: Optional[torch.Tensor] = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks 1.. and their IoU when `multimask_output`, else mask 0: what Meta's selects.
        `point_valid` (B, N) bool: which prompt tokens are real (see PromptDecoder's fixed points)."""
        masks, iou_pred = self.predict_masks(
            image_embeddings=image_embeddings,
            image_pe=image_pe,
            sparse_prompt_embeddings=sparse_prompt_embeddings,
            dense_prompt_embeddings=dense_prompt_embeddings,
            point_valid=point_valid,
        )
        if multimask_output:
            return masks[:, 1:], iou_pred[:, 1:]
        return masks[:, :1], iou_pred[:, :1]

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        point_valid: Optional[torch.Tensor] = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All mask tokens: masks (B, num_mask_tokens, 4*h, 4*w), IoU (B, num_mask_tokens). B is the
        prompt batch; an image (and dense embedding) batch of 1 is expanded to it."""
        batch = sparse_prompt_embeddings.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        output_tokens = output_tokens.unsqueeze(0).expand(batch, -1, -1)
        tokens = torch.cat((output_tokens, sparse_prompt_embeddings), dim=1)
        token_valid = None
        if point_valid is not None:  # the output tokens are always real
            token_valid = torch.cat([torch.ones(output_tokens.shape[:2], dtype=torch.bool), point_valid], dim=1)

        src = (image_embeddings + dense_prompt_embeddings).expand(batch, -1, -1, -1)
        pos_src = image_pe.expand(batch, -1, -1, -1)
        hs, src = self.transformer(src, pos_src, tokens, token_valid=token_valid)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : (1 + self.num_mask_tokens), :]

        # (B, h*w, C) -> (B, C, h, w): h and w are the image embedding's, fixed by the model
        src = src.transpose(1, 2).unflatten(-1, tuple(image_embeddings.shape[-2:]))
        upscaled = self.output_upscaling(src)
        hyper_in = torch.stack([mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1)
        masks = (hyper_in @ upscaled.flatten(2)).unflatten(-1, tuple(upscaled.shape[-2:]))
        return masks, self.iou_prediction_head(iou_token_out)


class PromptDecoder(nn.Module):
    """SAM's ONNX decoder (Meta's `SamOnnxModel` without upscaling and stability score): prompt
    embedding and mask decoding in one traceable graph with a dynamic number of points.

    Inputs: image_embeddings (B or 1, C, emb_h, emb_w); point_coords (B, N, 2) float, in the
    input_image_size frame; point_labels (B, N) float, -1 padding, 0 negative, 1 positive, 2/3 a
    box's top-left/bottom-right corner; mask_input (B or 1, 1, 4*emb_h, 4*emb_w); has_mask_input
    (B,) or (1,) float 0/1. Outputs: low_res_masks (B, M, 4*emb_h, 4*emb_w) logits and
    iou_predictions (B, M) for `masks` M of SAM's mask tokens: 4, all (token 0 the single-mask
    output, 1..3 the multimask ones: device.prompts.shown_masks picks what a user sees), 3 the
    multimask ones, 1 the single one.

    `fixed_points` N: a decoder for static-shape converters (TFLite, Core ML), taking exactly N
    points and one more input, point_count (B,) float: how many are the prompt's. Padding a prompt
    with "not a point" tokens does not leave SAM's masks alone (every token is a key of the token
    self-attention and the image-to-token attention: on efficientvit_sam_tiny, padding the parity
    prompts to 8 points moved the masks to a mask IoU of 0.33), so the padding tokens are masked out
    as keys; nothing else reads them, so the masks are the unpadded decoder's (tests: 1.5e-7).
    """

    input_names = ("image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input")
    output_names = ("low_res_masks", "iou_predictions")

    TOKENS = {4: slice(0, 4), 3: slice(1, 4), 1: slice(0, 1)}  # SAM's mask tokens each `masks` returns

    def __init__(self, prompt_encoder: PromptEncoder, mask_decoder: MaskDecoder, masks: int = 4, fixed_points: Optional[int] = None):
        super().__init__()
        if masks not in self.TOKENS:
            raise ValueError(f"a decoder returns 4, 3 or 1 masks, not {masks}")
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.tokens = self.TOKENS[masks]
        self.fixed_points = fixed_points
        if fixed_points:
            self.input_names = PromptDecoder.input_names + ("point_count",)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        point_count: Optional[torch.Tensor] = None,
    ):
        """(low_res_masks, iou_predictions); with `fixed_points`, a dict of them by name (what
        static-shape converters name their outputs after)."""
        sparse = self.prompt_encoder.embed_points(point_coords, point_labels)
        dense = self.prompt_encoder.embed_masks(mask_input, has_mask_input)
        point_valid = None
        if self.fixed_points:
            point_valid = torch.arange(self.fixed_points, dtype=point_count.dtype) < point_count.reshape(-1, 1)
        masks, iou = self.mask_decoder.predict_masks(
            image_embeddings=image_embeddings,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            point_valid=point_valid,
        )
        if self.tokens != self.TOKENS[4]:  # all four: no slice (coremltools has no lowering for a full slice's alias)
            masks, iou = masks[:, self.tokens], iou[:, self.tokens]
        return dict(zip(self.output_names, (masks, iou))) if self.fixed_points else (masks, iou)
