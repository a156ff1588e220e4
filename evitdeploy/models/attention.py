"""LiteMLA: multi-scale ReLU linear attention, written for deployment.

The default ("channel_first") formulation keeps tokens on the last axis, so no N-sized tensor is
transposed and no ones-row is padded onto v:

    kv  = v @ k^T              (d x d per head)
    num = kv @ q               (d x N)
    den = sum_N(k)^T @ q       (1 x N)   # the normalizer
    out = num / (den + eps)

"token_first" is the textbook formulation (timm's and the reference's): tokens on axis -2, a ones
row padded onto v, the normalizer read back as the last row. Both give the same numbers; it is
kept as the naive baseline for benchmarks and as an oracle in tests.

No data-dependent control flow: the reference switches to quadratic attention when H*W <= dim,
which a traced graph would freeze; the linear form is exact for every size, so we always use it.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from evitdeploy.models.layers import ConvNormAct, NormFactory

_REDUCED = (torch.float16, torch.bfloat16)


class LiteMLA(nn.Module):
    """Lightweight multi-scale linear attention (Cai et al., ICCV 2023)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        head_dim: int,
        norm: NormFactory,
        scales: tuple[int, ...] = (5,),
        eps: float = 1e-5,
    ):
        super().__init__()
        self.eps = eps
        self.dim = head_dim
        self.formulation = "channel_first"
        # The float32 island below. Off only to reproduce what an exported graph does under a bare
        # FP16 build (`trtexec --fp16`): precision.torch_plan's "plain" FP16.
        self.fp32_island = True
        heads = in_channels // head_dim
        total_dim = heads * head_dim
        self.qkv = ConvNormAct(in_channels, 3 * total_dim, 1)
        self.aggreg = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Conv2d(3 * total_dim, 3 * total_dim, s, padding=s // 2, groups=3 * total_dim, bias=False),
                    nn.Conv2d(3 * total_dim, 3 * total_dim, 1, groups=3 * heads, bias=False),
                )
                for s in scales
            ]
        )
        self.kernel_func = nn.ReLU()
        self.proj = ConvNormAct(total_dim * (1 + len(scales)), out_channels, 1, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x)
        qkv = torch.cat([qkv] + [op(qkv) for op in self.aggreg], dim=1)
        b, _, h, w = qkv.shape
        # (B, groups, 3*dim, N): per group the channels are [q | k | v], as in both references.
        qkv = qkv.reshape(b, -1, 3 * self.dim, h * w)
        q, k, v = qkv.split(self.dim, dim=2)
        q, k = self.kernel_func(q), self.kernel_func(k)
        out = self._attend(q, k, v)
        return self.proj(out.reshape(b, -1, h, w))

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # k^T v sums over every token, so its magnitude grows with H*W: in FP16 it can overflow
        # and eps=1e-15 rounds to 0. Compute this island in float32 whenever the surrounding
        # compute is reduced precision (autocast or a .half() model), then cast back.
        dtype = v.dtype
        device = q.device.type
        reduced = dtype in _REDUCED or (device != "meta" and torch.is_autocast_enabled(device))
        if reduced and self.fp32_island:
            with torch.autocast(device_type=device, enabled=False):
                out = self._linear_attention(q.float(), k.float(), v.float())
            return out.to(dtype)
        return self._linear_attention(q, k, v)

    def _linear_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.formulation == "token_first":
            return token_first_attention(q, k, v, eps=self.eps)
        kv = v @ k.transpose(-1, -2)
        num = kv @ q
        den = k.sum(dim=-1, keepdim=True).transpose(-1, -2) @ q
        return num / (den + self.eps)


def token_first_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float) -> torch.Tensor:
    """The textbook formulation on (B, G, d, N) inputs; returns (B, G, d, N)."""
    q, k, v = q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2)
    v = F.pad(v, (0, 1), mode="constant", value=1.0)
    out = q @ (k.transpose(-1, -2) @ v)
    out = out[..., :-1] / (out[..., -1:] + eps)
    return out.transpose(-1, -2)
