"""Parity metrics and latency: the one implementation, run by evitdeploy and by a bundle's verify.py.

Pure numpy, so the device and the host that made a bundle compute parity, time a model and
summarize its latency in exactly the same way.
"""

import time

import numpy as np

from .tasks import CLASSIFICATION, SEGMENTATION


def _unit_rows(x: np.ndarray) -> tuple:
    """(each row scaled to unit length, which rows are all zero); scaled by the row's max first,
    so tiny or huge outputs neither underflow nor overflow the norm. NaN/Inf rows become NaN."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        scale = np.abs(x).max(axis=1, keepdims=True) if x.shape[1] else np.zeros((len(x), 1))
        zero = scale[:, 0] == 0
        x = x / np.where(scale == 0, 1.0, scale)
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        return x / np.where(norm == 0, 1.0, norm), zero


def cosine_per_sample(ref: np.ndarray, cand: np.ndarray) -> np.ndarray:
    a, a_zero = _unit_rows(ref.reshape(len(ref), -1).astype(np.float64))
    b, b_zero = _unit_rows(cand.reshape(len(cand), -1).astype(np.float64))
    # Only two all-zero outputs agree (1.0); an all-zero output against a live one is 0.0 (a dead
    # candidate must fail the cosine gate). NaN/Inf in a sample make its cosine NaN.
    return np.where(a_zero & b_zero, 1.0, (a * b).sum(axis=1))


# A reference whose best two classes are closer than this share of its logit range has no top-1 to
# agree with: a random-weight model's logits barely depend on the photo (B0 at 64x64: the best two
# 3e-4 apart on a range of ~2), so any rounding flips its argmax. Such samples are counted
# (top1_undecided) and still judged by the cosine and max-abs gates, as masks too small for IoU are.
TOP1_TIE_SHARE = 1e-3


def classification_metrics(ref: np.ndarray, cand: np.ndarray) -> dict:
    top1_ref = ref.argmax(axis=1)
    top5_cand = np.argsort(-cand, axis=1)[:, :5]
    best_two = np.sort(ref, axis=1)[:, -2:] if ref.shape[1] > 1 else np.concatenate([ref, ref - 1], axis=1)
    decided = (best_two[:, 1] - best_two[:, 0]) > TOP1_TIE_SHARE * (ref.max(axis=1) - ref.min(axis=1))
    agree = cand.argmax(axis=1) == top1_ref
    return {
        "top1_agreement": float(agree[decided].mean()) if decided.any() else 1.0,
        "top1_undecided": int((~decided).sum()),
        "top5_agreement": float((top5_cand == top1_ref[:, None]).any(axis=1).mean()),
    }


def segmentation_metrics(ref: np.ndarray, cand: np.ndarray) -> dict:
    ref_map, cand_map = ref.argmax(axis=1), cand.argmax(axis=1)
    ious = []
    for cls in np.union1d(np.unique(ref_map), np.unique(cand_map)):
        r, c = ref_map == cls, cand_map == cls
        ious.append((r & c).sum() / (r | c).sum())
    return {"pixel_agreement": float((ref_map == cand_map).mean()), "miou": float(np.mean(ious))}


def compare_outputs(task: str, reference: np.ndarray, candidate: np.ndarray, tolerances: dict) -> dict:
    """Metrics and a verdict. tolerances: max_abs (None: not gated), min_cosine, min_top1, min_pixel_agreement."""
    if reference.shape != candidate.shape:
        return {"passed": False, "failures": [f"output shape {candidate.shape} differs from the reference's {reference.shape}"], "metrics": {}}
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
    metrics.update((classification_metrics if task == CLASSIFICATION else segmentation_metrics)(reference, candidate))
    failures = []
    max_abs, min_cosine = tolerances.get("max_abs"), tolerances.get("min_cosine")  # a missing tolerance is not gated
    min_top1, min_pixels = tolerances.get("min_top1"), tolerances.get("min_pixel_agreement")
    if metrics["nonfinite_outputs"]:
        failures.append(f"{metrics['nonfinite_outputs']} NaN/Inf values in the candidate's outputs")
    if max_abs is not None and metrics["max_abs_error"] > max_abs:
        failures.append(f"max abs error {metrics['max_abs_error']:.3g} > {max_abs:.3g}")
    if min_cosine is not None and metrics["cosine_min"] < min_cosine:
        failures.append(f"min cosine {metrics['cosine_min']:.6f} < {min_cosine}")
    if task == CLASSIFICATION and min_top1 is not None and metrics["top1_agreement"] < min_top1:
        failures.append(f"top-1 agreement {metrics['top1_agreement']:.4f} < {min_top1}")
    if task == SEGMENTATION and min_pixels is not None and metrics["pixel_agreement"] < min_pixels:
        failures.append(f"pixel agreement {metrics['pixel_agreement']:.5f} < {min_pixels}")
    return {"passed": not failures, "failures": failures, "metrics": metrics}


def latency_stats(latency_samples_ms, batch: int = 1) -> dict:
    samples = np.asarray(latency_samples_ms, dtype=np.float64)
    median = float(np.median(samples))
    return {
        "count": int(samples.size),
        "median_ms": median,
        "p90_ms": float(np.percentile(samples, 90)),
        "p99_ms": float(np.percentile(samples, 99)),
        "mean_ms": float(samples.mean()),
        "std_ms": float(samples.std(ddof=1)) if samples.size > 1 else 0.0,
        "min_ms": float(samples.min()),
        "max_ms": float(samples.max()),
        "throughput_per_s": batch * 1e3 / median if median > 0 else float("inf"),
    }


def run_batches(infer, inputs: np.ndarray, batch: int) -> np.ndarray:
    """All inputs through the model `batch` at a time; a short last batch is padded, then cut."""
    outputs = []
    for start in range(0, len(inputs), batch):
        chunk = inputs[start : start + batch]
        if len(chunk) < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - len(chunk), axis=0)])
        outputs.append(np.asarray(infer(chunk), dtype=np.float32))
    return np.concatenate(outputs)[: len(inputs)]


def _timed(call) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1e3


def time_turns(calls, warmup: int = 0, count=None, min_time_s: float = 0.0, block: int = 1, max_count: int = 100000) -> list:
    """The one timing loop: latency samples in ms, one list per callable in `calls`.

    `warmup` untimed rounds, then timed turns until each call has at least `count` samples
    (default 50, or 1 with a minimum time) and `min_time_s` has passed; at most `max_count`.
    Several calls take turns, `block` runs each, the order reversed every turn (A B, then B A):
    drift of a shared machine (another job, throttling, frequency changes) lands on all alike
    instead of on whichever ran second, and going first gives no cache advantage.
    """
    for _ in range(warmup):
        for call in calls:
            call()
    wanted = count if count is not None else (1 if min_time_s else 50)
    samples = [[] for _ in calls]
    started = time.perf_counter()
    turn = 0
    while len(samples[0]) < max_count:
        order = range(len(calls)) if turn % 2 == 0 else range(len(calls) - 1, -1, -1)
        for index in order:
            samples[index].extend(_timed(calls[index]) for _ in range(block))
        turn += 1
        if min(len(s) for s in samples) >= wanted and time.perf_counter() - started >= min_time_s:
            break
    return samples


def time_model(infer, batch_input: np.ndarray, warmup: int, count: int) -> list:
    """`count` latency samples (ms) of `infer(batch_input)` after `warmup` runs; none for count 0."""
    return time_turns([lambda: infer(batch_input)], warmup, count)[0] if count > 0 else []
