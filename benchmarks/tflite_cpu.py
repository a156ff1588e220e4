"""The TFLite/LiteRT targets, measured in one run on this host (needs the tflite extra).

    .venv/bin/python benchmarks/tflite_cpu.py [--sections convert,latency,trained] [--threads 2]

1. convert: litert-torch conversion time of B0 and B1 at 224 (target: B1 < 60 s, any precision)
   and FP32 parity of the .tflite against PyTorch on photos (target: max abs <= 1e-4).
2. latency: B0 and B1 at 224 on LiteRT/XNNPACK and on ONNX Runtime, FP32 and INT8 (the shared
   precision plan), same thread count, in alternating rounds; medians and the ratios (targets:
   INT8 faster than FP32 on XNNPACK; XNNPACK vs ONNX Runtime reported).
3. trained: the trained references as full-integer INT8 .tflite: the digits classifier's held-out
   accuracy vs FP32 (target: within 1 point) and per-image cosine (target >= 0.99); the mosaic
   segmenter's pixel agreement with FP32 at 128x256 and 512x1024 (target >= 97%) and mIoU.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from evitdeploy import api
from evitdeploy.bench import measure, summarize
from evitdeploy.data import preprocess
from evitdeploy.precision.options import PrecisionOptions
from evitdeploy.requests import CheckRequest, ExportRequest
from evitdeploy.models import trained
from evitdeploy.device.metrics import cosine_per_sample


def export(folder: Path, model: str, target: str, precision: str, height=None, width=None, checkpoint=None, calib=None, count=None):
    started = time.perf_counter()
    with contextlib.redirect_stderr(open("/dev/null", "w")):
        artifact = api.export_model(
            ExportRequest(
                model=model, target=target, precision=precision, output=folder / f"{model}-{target}-{precision}-{height}",
                checkpoint=checkpoint, height=height, width=width, reduced=PrecisionOptions(calib=calib, calib_count=count),
                force=True,
            ),
        )
    return artifact, time.perf_counter() - started


def runner(artifact, threads: int):
    return api.runner_for(artifact, threads, taking_turns=True)  # runners here alternate on the same cores


def logits(artifact, inputs: np.ndarray, threads: int) -> np.ndarray:
    with runner(artifact, threads) as r:
        return np.concatenate([r.infer({"image": inputs[i : i + 1]})[artifact.spec.output_name] for i in range(len(inputs))])


def section_convert(folder: Path) -> None:
    print("## 1. conversion (litert-torch) and FP32 parity vs PyTorch on 8 photos, 224x224")
    for model in ("efficientvit_b0", "efficientvit_b1"):
        artifact, seconds = export(folder, model, "tflite", "fp32")
        check = api.check_artifact(CheckRequest(path=artifact.folder, samples=8))
        convert_s = artifact.manifest["export"]["seconds"]["convert_s"]
        print(f"{model}: convert {convert_s:.1f} s (export incl. validation {seconds:.1f} s, target B1 < 60 s); "
              f"max abs {check['metrics']['max_abs_error']:.2e} (target <= 1e-4), min cosine {check['metrics']['cosine_min']:.8f}")


def alternating_medians(artifacts: dict, feed: dict, threads: int, rounds: int = 4, count: int = 30) -> dict:
    """Median ms of each artifact (a dict of them), all loaded, timed in alternating rounds so a
    shared host's drift hits every one alike."""
    runners = {key: runner(a, threads) for key, a in artifacts.items()}
    samples = {key: [] for key in runners}
    for r in runners.values():
        r.load()
    for _ in range(rounds):
        for key, r in runners.items():
            samples[key] += measure(lambda r=r: r.infer(feed), warmup=5, count=count)
    for r in runners.values():
        r.close()
    return {key: summarize(s)["median_ms"] for key, s in samples.items()}


def section_latency(folder: Path, threads: int) -> None:
    print(f"\n## 2. latency at 224x224, {threads} threads, 4 alternating rounds of 30 runs (median of all 120)")
    for model in ("efficientvit_b0", "efficientvit_b1"):
        artifacts = {(t, p): export(folder, model, t, p, count=32)[0] for t in ("tflite", "onnx") for p in ("fp32", "int8")}
        feed = {"image": preprocess(trained.digits_images("test")[0][:1], artifacts["onnx", "fp32"].spec, 224, 224)}
        medians = alternating_medians(artifacts, feed, threads)
        cells = "  ".join(f"{t}/{p} {medians[t, p]:.3f} ms" for t, p in medians)
        print(f"{model}: {cells}")
        print(f"  INT8 speedup over FP32: XNNPACK {medians['tflite', 'fp32'] / medians['tflite', 'int8']:.2f}x, "
              f"ONNX Runtime {medians['onnx', 'fp32'] / medians['onnx', 'int8']:.2f}x; "
              f"XNNPACK vs ONNX Runtime (ORT ms / XNNPACK ms): FP32 {medians['onnx', 'fp32'] / medians['tflite', 'fp32']:.2f}x, "
              f"INT8 {medians['onnx', 'int8'] / medians['tflite', 'int8']:.2f}x")


def section_trained(folder: Path, threads: int) -> None:
    print("\n## 3. trained references, full-integer INT8 .tflite (the shared plan) vs FP32 .tflite")
    train, _ = trained.digits_images("train")
    np.savez(folder / "digits-calib.npz", image=train[:64])
    test, labels = trained.digits_images("test")
    inputs = preprocess(list(test), trained.digits_spec(), 64, 64)
    results = {}
    for precision in ("fp32", "int8"):
        artifact, _ = export(folder, "efficientvit_b0", "tflite", precision, 64, 64, trained.digits_checkpoint(), str(folder / "digits-calib.npz"), 64)
        results[precision] = logits(artifact, inputs, threads)
    accuracy = {p: trained.classification_accuracy(v, labels) for p, v in results.items()}
    cosine = cosine_per_sample(results["fp32"], results["int8"])
    print(f"digits B0 64x64 ({len(labels)} held-out): FP32 {100 * accuracy['fp32']:.2f}%, INT8 {100 * accuracy['int8']:.2f}% "
          f"(target within 1 point); per-image cosine min {cosine.min():.5f}, median {np.median(cosine):.5f} (target >= 0.99)")
    for height, width in ((128, 256), (512, 1024)):
        calib, _ = trained.digit_mosaics(16, height, width, seed=1, split="train")
        np.savez(folder / f"mosaic-calib-{height}.npz", image=calib)
        photos, truth = trained.digit_mosaics(4, height, width, seed=2, split="test")
        inputs = preprocess(list(photos), trained.mosaic_spec(height, width), height, width)
        results = {}
        for precision in ("fp32", "int8"):
            artifact, seconds = export(folder, "efficientvit_seg_b0_cityscapes", "tflite", precision, height, width,
                                       trained.mosaic_checkpoint(), str(folder / f"mosaic-calib-{height}.npz"), 16)
            results[precision] = logits(artifact, inputs, threads)
        agreement = float((results["fp32"].argmax(1) == results["int8"].argmax(1)).mean())
        miou = {p: trained.segmentation_scores(v, truth)["miou"] for p, v in results.items()}
        print(f"mosaic Seg-B0 {height}x{width} (4 test mosaics): pixel agreement INT8 vs FP32 {100 * agreement:.2f}% (target >= 97%); "
              f"mIoU FP32 {miou['fp32']:.4f}, INT8 {miou['int8']:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sections", default="convert,latency,trained")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    sections = args.sections.split(",")
    with tempfile.TemporaryDirectory(prefix="evitdeploy-bench-tflite-") as scratch:
        folder = Path(scratch)
        if "convert" in sections:
            section_convert(folder)
        if "latency" in sections:
            section_latency(folder, args.threads)
        if "trained" in sections:
            section_trained(folder, args.threads)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
