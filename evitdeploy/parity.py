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

from evitdeploy.spec import ModelSpec


@dataclass(frozen=True)
class Tolerances:
    max_abs: Optional[float] = None  # on logits; None = not gated
    min_cosine: float = 0.0
    min_top1: float = 0.0  # classification agreement
    min_pixel_agreement: float = 0.0  # segmentation

    def override(self, **values) -> "Tolerances":
        return replace(self, **{k: v for k, v in values.items() if v is not None})


DEFAULT_TOLERANCES = {
    "fp32": Tolerances(max_abs=1e-4, min_cosine=0.99999, min_top1=1.0, min_pixel_agreement=0.999),
    "fp16": Tolerances(max_abs=None, min_cosine=0.999, min_top1=0.99, min_pixel_agreement=0.99),
    "int8": Tolerances(max_abs=None, min_cosine=0.98, min_top1=0.9, min_pixel_agreement=0.95),
}


def tolerances_for(precision: str) -> Tolerances:
    return DEFAULT_TOLERANCES.get(precision, DEFAULT_TOLERANCES["fp32"])


def cosine_per_sample(ref: np.ndarray, cand: np.ndarray) -> np.ndarray:
    a = ref.reshape(len(ref), -1).astype(np.float64)
    b = cand.reshape(len(cand), -1).astype(np.float64)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(denom > 0, (a * b).sum(axis=1) / np.maximum(denom, 1e-300), 1.0)


def classification_metrics(ref: np.ndarray, cand: np.ndarray) -> dict:
    top1_ref = ref.argmax(axis=1)
    top5_cand = np.argsort(-cand, axis=1)[:, :5]
    return {
        "top1_agreement": float((cand.argmax(axis=1) == top1_ref).mean()),
        "top5_agreement": float((top5_cand == top1_ref[:, None]).any(axis=1).mean()),
    }


def segmentation_metrics(ref: np.ndarray, cand: np.ndarray) -> dict:
    ref_map, cand_map = ref.argmax(axis=1), cand.argmax(axis=1)
    ious = []
    for cls in np.union1d(np.unique(ref_map), np.unique(cand_map)):
        r, c = ref_map == cls, cand_map == cls
        ious.append((r & c).sum() / (r | c).sum())
    return {"pixel_agreement": float((ref_map == cand_map).mean()), "miou": float(np.mean(ious))}


def compare(
    spec: ModelSpec, reference: np.ndarray, candidate: np.ndarray, precision: str, tolerances: Tolerances
) -> dict:
    """A parity report (JSON-ready): metrics, the tolerances applied, failures, and a verdict."""
    if reference.shape != candidate.shape:
        return {
            "passed": False,
            "failures": [f"output shape {candidate.shape} differs from the reference's {reference.shape}"],
            "metrics": {},
            "tolerances": asdict(tolerances),
        }
    error = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    cosine = cosine_per_sample(reference, candidate)
    metrics = {
        "samples": int(len(reference)),
        "max_abs_error": float(error.max()),
        "mean_abs_error": float(error.mean()),
        "cosine_min": float(cosine.min()),
        "cosine_mean": float(cosine.mean()),
        "nonfinite_outputs": int((~np.isfinite(candidate)).sum()),
        "reference_abs_max": float(np.abs(reference).max()),
    }
    task = classification_metrics if spec.task == "classification" else segmentation_metrics
    metrics.update(task(reference, candidate))
    failures = []
    if metrics["nonfinite_outputs"]:
        failures.append(f"{metrics['nonfinite_outputs']} NaN/Inf values in the candidate's outputs")
    if tolerances.max_abs is not None and metrics["max_abs_error"] > tolerances.max_abs:
        failures.append(f"max abs error {metrics['max_abs_error']:.3g} > {tolerances.max_abs:.3g}")
    if metrics["cosine_min"] < tolerances.min_cosine:
        failures.append(f"min cosine {metrics['cosine_min']:.6f} < {tolerances.min_cosine}")
    if spec.task == "classification" and metrics["top1_agreement"] < tolerances.min_top1:
        failures.append(f"top-1 agreement {metrics['top1_agreement']:.4f} < {tolerances.min_top1}")
    if spec.task == "segmentation" and metrics["pixel_agreement"] < tolerances.min_pixel_agreement:
        failures.append(f"pixel agreement {metrics['pixel_agreement']:.5f} < {tolerances.min_pixel_agreement}")
    return {
        "passed": not failures,
        "failures": failures,
        "precision": precision,
        "metrics": metrics,
        "tolerances": asdict(tolerances),
    }


def run_parity(
    reference_runner, candidate_runner, spec: ModelSpec, inputs: np.ndarray, precision: str,
    tolerances: Tolerances, batch: int = 1,
) -> dict:
    """Feed the inputs, `batch` at a time (the artifact's batch), to both runners and compare."""
    refs, cands = [], []
    for start in range(0, len(inputs), batch):
        chunk = inputs[start : start + batch]
        if len(chunk) < batch:  # a static-batch artifact needs full batches: pad with the last input
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - len(chunk), axis=0)])
        feed = {spec.input_name: chunk}
        refs.append(reference_runner.infer(feed)[spec.output_name])
        outputs = candidate_runner.infer(feed)
        cands.append(outputs.get(spec.output_name, next(iter(outputs.values()))))
    count = len(inputs)
    return compare(spec, np.concatenate(refs)[:count], np.concatenate(cands)[:count], precision, tolerances)
