"""Rewrites the ExecuTorch lowering needs: the same arithmetic, in ops XNNPACK takes as meant.

- Tanh GELU (EfficientViT-L, the SAM backbones and necks): ExecuTorch's XNNPACK delegate ignores
  GELU's `approximate` argument and runs the exact (erf) GELU, up to 4.7e-4 off per activation
  (upstream: pytorch/executorch#22851, which needs a re-export and a newer runtime). Measured on the
  trained efficientvit_sam_tiny: best-mask IoU 0.988 against PyTorch on 64 prompts, all of it from
  the encoder. Spelled out as 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), the same function,
  XNNPACK takes its tanh, multiplies and adds.
- LiteMLA's three 4-D matmuls ((B, groups, d, N)): torch.export decomposes each into expand +
  bmm, and ExecuTorch's `expand_copy` is a real copy on its portable kernels, outside XNNPACK
  (measured: 0.6 ms of B1's 5.1 ms at 224). Written as bmm on (B*groups, d, N) there is no expand.

Each rewrite swaps a module's class for a subclass within the block, so module paths (and the
precision plan's names) are unchanged and the model is itself again afterwards.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator

import torch

from evitdeploy.models.attention import LiteMLA
from evitdeploy.models.layers import GELUTanh

_SCALE = math.sqrt(2.0 / math.pi)


class SpelledOutTanhGELU(GELUTanh):
    """GELUTanh in elementary ops (no aten.gelu for a delegate to misread)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x * (1.0 + torch.tanh(_SCALE * (x + 0.044715 * x * x * x)))


class BatchedLiteMLA(LiteMLA):
    """LiteMLA's channel-first linear attention as 3-D bmm (no expand for torch.export to add)."""

    def _linear_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.formulation == "token_first":
            return super()._linear_attention(q, k, v)
        b, groups, dim, tokens = q.shape
        q, k, v = (t.reshape(b * groups, dim, tokens) for t in (q, k, v))
        kv = torch.bmm(v, k.transpose(1, 2))
        num = torch.bmm(kv, q)
        ones = torch.ones(b * groups, 1, tokens, dtype=k.dtype, device=k.device)
        den = torch.bmm(torch.bmm(ones, k.transpose(1, 2)), q)  # sum_N(k)^T q, the sum as a matmul XNNPACK takes
        return (num / (den + self.eps)).reshape(b, groups, dim, tokens)


REWRITES = {GELUTanh: SpelledOutTanhGELU, LiteMLA: BatchedLiteMLA}


@contextlib.contextmanager
def rewritten(model) -> Iterator[dict]:
    """Within the block every module of a class in REWRITES computes as its rewrite; yields how
    many of each were rewritten (for the manifest)."""
    found = [(m, type(m)) for m in model.modules() if type(m) in REWRITES]
    for module, cls in found:
        module.__class__ = REWRITES[cls]
    try:
        yield {REWRITES[cls].__name__: sum(1 for _, c in found if c is cls) for cls in {c for _, c in found}}
    finally:
        for module, cls in found:
            module.__class__ = cls
