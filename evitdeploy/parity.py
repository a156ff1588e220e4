"""Accuracy parity: the same inputs through the reference and a candidate, metrics by task.

Classification: top-1 agreement, top-5 agreement (the reference's top-1 is in the candidate's
top 5), cosine similarity, max/mean absolute error on logits. Segmentation: pixel agreement of the
argmax maps and the mIoU of the candidate's argmax against the reference's, plus the same logit
errors. Tolerances depend on precision and can be overridden.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Optional

import numpy as np

from evitdeploy.device.metrics import compare_outputs, run_batches  # one implementation, also on the device
from evitdeploy.errors import UserError
from evitdeploy.spec import ModelSpec


@dataclass(frozen=True)
class Tolerances:
    max_abs: Optional[float] = None  # on logits; None = not gated
    min_cosine: float = 0.0
    min_top1: float = 0.0  # classification agreement
    min_pixel_agreement: float = 0.0  # segmentation
    min_mask_iou: float = 0.0  # promptable: per mask, the candidate's thresholded mask vs PyTorch's
    max_iou_error: Optional[float] = None  # promptable: the IoU prediction's absolute error

    def override(self, **values) -> "Tolerances":
        """A copy with the given gates replaced; a gate not passed keeps its value, and one passed
        as None is turned off (max_abs not gated, a minimum of 0)."""
        unknown = sorted(set(values) - set(self.__dataclass_fields__))
        if unknown:
            raise UserError(f"unknown tolerance {unknown[0]!r}", f"known tolerances: {', '.join(self.__dataclass_fields__)}")
        off = {name: None if name.startswith("max_") else 0.0 for name in values if values[name] is None}
        return replace(self, **{**values, **off})


DEFAULT_TOLERANCES = {
    "fp32": Tolerances(max_abs=1e-4, min_cosine=0.99999, min_top1=1.0, min_pixel_agreement=0.999, min_mask_iou=0.99, max_iou_error=1e-3),
    "fp16": Tolerances(max_abs=None, min_cosine=0.999, min_top1=0.99, min_pixel_agreement=0.99, min_mask_iou=0.98, max_iou_error=0.02),
    "bf16": Tolerances(max_abs=None, min_cosine=0.99, min_top1=0.98, min_pixel_agreement=0.98, min_mask_iou=0.95, max_iou_error=0.05),  # 8-bit significand
    "int8": Tolerances(max_abs=None, min_cosine=0.98, min_top1=0.9, min_pixel_agreement=0.95, min_mask_iou=0.85, max_iou_error=0.05),
}
# min_mask_iou gates the worst prompt (its best-rated mask; masks under 0.5% of the frame are not
# judged by IoU: device.prompts.MIN_MASK_SHARE). INT8 of the trained SAM reference: worst prompt
# 0.89-0.93, mean 0.965 (benchmarks/sam_precision.py measures the mean on prompts on real objects).
# A promptable model's low-res mask logits are gated by mask IoU, IoU-prediction error and cosine,
# not max_abs (their scale is the decoder's, tens of units).


def tolerances_for(precision: str) -> Tolerances:
    return DEFAULT_TOLERANCES.get(precision, DEFAULT_TOLERANCES["fp32"])


def compare(spec: ModelSpec, reference: np.ndarray, candidate: np.ndarray, precision: str, tolerances: Tolerances) -> dict:
    """A parity report (JSON-ready): metrics, the tolerances applied, failures, and a verdict."""
    return {**compare_outputs(spec.task, reference, candidate, tolerances=asdict(tolerances)), "precision": precision, "tolerances": asdict(tolerances)}


def parity_outputs(reference_runner, candidate_runner, spec: ModelSpec, inputs: np.ndarray, batch: int = 1):
    """(reference outputs, candidate outputs) for the inputs fed `batch` at a time (the artifact's batch)."""

    def through(runner):
        def infer(chunk):
            outputs = runner.infer({spec.input_name: chunk})
            return outputs.get(spec.output_name, next(iter(outputs.values())))

        return infer

    return run_batches(through(reference_runner), inputs, batch), run_batches(through(candidate_runner), inputs, batch)


def run_parity(
    reference_runner,
    candidate_runner,
    spec: ModelSpec,
    inputs: np.ndarray,
    precision: str,
    tolerances: Tolerances,
    batch: int = 1,
) -> dict:
    """Feed the inputs to both runners and compare."""
    references, candidates = parity_outputs(reference_runner, candidate_runner, spec, inputs=inputs, batch=batch)
    return compare(spec, references, candidates, precision=precision, tolerances=tolerances)
