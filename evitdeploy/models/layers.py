"""Convolutional building blocks of EfficientViT.

Module and attribute names follow timm's `efficientvit_mit` so that timm-layout state dicts
load without renaming; the reference repository's layout is mapped in `checkpoint.py`.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

NormFactory = Optional[Callable[[int], nn.Module]]
ActFactory = Optional[Callable[[], nn.Module]]


class GELUTanh(nn.Module):
    """GELU with the tanh approximation, as both reference implementations use."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate="tanh")


def _triple(value, n: int) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value] * n


class ConvNormAct(nn.Module):
    """Conv2d (same padding) -> optional norm -> optional activation."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        bias: bool = False,
        norm: NormFactory = None,
        act: ActFactory = None,
    ):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, groups=groups, bias=bias)
        self.norm = norm(out_channels) if norm else nn.Identity()
        self.act = act() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class DSConv(nn.Module):
    """Depthwise 3x3 then pointwise 1x1 (the B-series stem block)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: float, bias, norm, act):
        super().__init__()  # expand_ratio is always 1 here; kept for the two-conv blocks' shared signature
        bias, norm, act = _triple(bias, 2), _triple(norm, 2), _triple(act, 2)
        self.depth_conv = ConvNormAct(in_channels, in_channels, 3, stride=stride, groups=in_channels, bias=bias[0], norm=norm[0], act=act[0])
        self.point_conv = ConvNormAct(in_channels, out_channels, 1, stride=1, groups=1, bias=bias[1], norm=norm[1], act=act[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_conv(self.depth_conv(x))


class ConvBlock(nn.Module):
    """Two full 3x3 convolutions (the L-series stem block; 'ResBlock' in the reference)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: float, bias, norm, act):
        super().__init__()
        bias, norm, act = _triple(bias, 2), _triple(norm, 2), _triple(act, 2)
        mid = round(in_channels * expand_ratio)
        self.conv1 = ConvNormAct(in_channels, mid, 3, stride=stride, groups=1, bias=bias[0], norm=norm[0], act=act[0])
        self.conv2 = ConvNormAct(mid, out_channels, 3, stride=1, groups=1, bias=bias[1], norm=norm[1], act=act[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, depthwise 3x3, 1x1 project."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: float, bias, norm, act):
        super().__init__()
        bias, norm, act = _triple(bias, 3), _triple(norm, 3), _triple(act, 3)
        mid = round(in_channels * expand_ratio)
        self.inverted_conv = ConvNormAct(in_channels, mid, 1, stride=1, groups=1, bias=bias[0], norm=norm[0], act=act[0])
        self.depth_conv = ConvNormAct(mid, mid, 3, stride=stride, groups=mid, bias=bias[1], norm=norm[1], act=act[1])
        self.point_conv = ConvNormAct(mid, out_channels, 1, stride=1, groups=1, bias=bias[2], norm=norm[2], act=act[2])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_conv(self.depth_conv(self.inverted_conv(x)))


class FusedMBConv(nn.Module):
    """Full 3x3 expand then 1x1 project (the L-series early stages)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: float, bias, norm, act):
        super().__init__()
        bias, norm, act = _triple(bias, 2), _triple(norm, 2), _triple(act, 2)
        mid = round(in_channels * expand_ratio)
        self.spatial_conv = ConvNormAct(in_channels, mid, 3, stride=stride, groups=1, bias=bias[0], norm=norm[0], act=act[0])
        self.point_conv = ConvNormAct(mid, out_channels, 1, stride=1, groups=1, bias=bias[1], norm=norm[1], act=act[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_conv(self.spatial_conv(x))


class ResidualBlock(nn.Module):
    """main(x) (+ x when `residual`)."""

    def __init__(self, main: nn.Module, residual: bool):
        super().__init__()
        self.main = main
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.main(x)
        return out + x if self.residual else out


def local_block(
    kind: str,
    in_channels: int,
    out_channels: int,
    stride: int,
    expand_ratio: float,
    norm: NormFactory,
    act: ActFactory,
    fewer_norm: bool = False,
) -> nn.Module:
    """The reference's `build_local_block`: `fewer_norm` trades the inner norms for biases."""
    if kind == "mb":
        return MBConv(
            in_channels,
            out_channels,
            stride,
            expand_ratio=expand_ratio,
            bias=(True, True, False) if fewer_norm else False,
            norm=(None, None, norm) if fewer_norm else norm,
            act=(act, act, None),
        )
    two_conv = {"ds": DSConv, "conv": ConvBlock, "fmb": FusedMBConv}
    if kind in two_conv:
        return two_conv[kind](
            in_channels,
            out_channels,
            stride,
            expand_ratio,
            bias=(True, False) if fewer_norm else False,
            norm=(None, norm) if fewer_norm else norm,
            act=(act, None),
        )
    raise ValueError(f"unknown local block kind {kind!r}")


def _cubic_weights(t: float, a: float = -0.75) -> list[float]:
    """PyTorch's bicubic taps for fractional offset t (A = -0.75), at offsets -1, 0, 1, 2."""

    def near(x: float) -> float:  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x: float) -> float:  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def bicubic_phase_kernel(channels: int, factor: int) -> torch.Tensor:
    """(channels*factor^2, 1, 5, 5): one 5x5 filter per output phase, for a grouped conv."""
    taps = torch.zeros(factor, 5, dtype=torch.float64)
    for phase in range(factor):
        source = (phase + 0.5) / factor - 0.5  # align_corners=False, relative to the input pixel
        first = math.floor(source)
        for offset, weight in zip(range(first - 1, first + 3), _cubic_weights(source - first)):
            taps[phase, offset + 2] += weight
    phases = torch.einsum("yi,xj->yxij", taps, taps).reshape(factor * factor, 1, 5, 5)
    return phases.repeat(channels, 1, 1, 1).float()


class BicubicUpsample(nn.Module):
    """x`factor` bicubic upsampling with F.interpolate's numbers (align_corners=False, edges clamped).

    "conv" (deployment form): edge padding, one grouped 5x5 conv that computes every output phase,
    then pixel shuffle. Clamped taps are exactly edge padding, so the result equals
    F.interpolate's to float rounding. ONNX Runtime's cubic Resize took 39% of B1-seg's time at
    1024x2048 on CPU, and TFLite has no bicubic resize at all; conv + DepthToSpace run everywhere.
    "interpolate" is the textbook form, kept as the oracle.
    """

    def __init__(self, channels: int, factor: int):
        super().__init__()
        self.factor = factor
        self.formulation = "conv"
        # Not persistent: derived from (channels, factor), never part of a checkpoint.
        self.register_buffer("phase_kernel", bicubic_phase_kernel(channels, factor), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.formulation == "interpolate":
            return F.interpolate(x, scale_factor=self.factor, mode="bicubic", align_corners=False)
        x = F.pad(x, (2, 2, 2, 2), mode="replicate")
        phases = F.conv2d(x, self.phase_kernel.to(x.dtype), groups=x.shape[1])
        return F.pixel_shuffle(phases, self.factor)
