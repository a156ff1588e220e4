"""A candidate ONNX model run on images and scored against the FP32 outputs: what the plan's
search, the FP16 storage check and `evitdeploy plan` all measure."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from evitdeploy.device.metrics import classification_metrics, cosine_per_sample, segmentation_metrics
from evitdeploy.spec import CLASSIFICATION, ModelSpec


def outputs_of(path: Path, inputs: np.ndarray, input_name: str, optimize: bool = True) -> np.ndarray:
    """The model's first output for each input, one at a time (the artifacts have batch 1).
    `optimize=False` keeps every node as written (the FP16 storage emulation's casts must stay)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {input_name: inputs[i : i + 1]})[0] for i in range(len(inputs))])


def score_outputs(spec: ModelSpec, reference: np.ndarray, candidate: np.ndarray) -> dict:
    """Agreement of a candidate with the FP32 outputs: what the search and `plan` report.
    An image with any NaN/Inf output scores cosine -1, whatever its other values."""
    finite_values = np.isfinite(candidate)
    cleaned = np.where(finite_values, candidate, 0.0)
    finite_images = finite_values.reshape(len(candidate), -1).all(axis=1)
    cosine = np.where(finite_images, cosine_per_sample(reference, cleaned), -1.0)
    scores = {
        "cosine_min": float(cosine.min()),
        "cosine_mean": float(cosine.mean()),
        "max_abs_error": float(np.abs(reference.astype(np.float64) - cleaned).max()),
        "nonfinite": int((~finite_values).sum()),
    }
    metrics = classification_metrics if spec.task == CLASSIFICATION else segmentation_metrics
    scores.update(metrics(reference, cleaned))
    return scores
