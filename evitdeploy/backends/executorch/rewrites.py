"""Graph rewrites the ExecuTorch lowering needs to keep the model's arithmetic.

Tanh GELU (EfficientViT-L and the SAM backbones and necks): ExecuTorch's XNNPACK delegate ignores
GELU's `approximate` argument and runs the exact (erf) GELU, up to 4.7e-4 off per activation
(upstream: pytorch/executorch#22851, which needs a re-export and a newer runtime). Measured on the
trained efficientvit_sam_tiny: best-mask IoU 0.988 against PyTorch on 64 prompts, all of it from
the encoder. Spelled out as 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), the same function,
XNNPACK takes its tanh, multiplies and adds.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator

import torch

from evitdeploy.models.layers import GELUTanh

_SCALE = math.sqrt(2.0 / math.pi)


class SpelledOutTanhGELU(GELUTanh):
    """GELUTanh in elementary ops (no aten.gelu for a delegate to misread)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x * (1.0 + torch.tanh(_SCALE * (x + 0.044715 * x * x * x)))


@contextlib.contextmanager
def tanh_gelu_spelled_out(model) -> Iterator[int]:
    """Within the block every GELUTanh of `model` computes in elementary ops (module paths, and so
    the precision plan's names, are unchanged); yields how many were rewritten."""
    found = [m for m in model.modules() if type(m) is GELUTanh]
    for module in found:
        module.__class__ = SpelledOutTanhGELU
    try:
        yield len(found)
    finally:
        for module in found:
            module.__class__ = GELUTanh
