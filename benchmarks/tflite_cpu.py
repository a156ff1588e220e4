"""The TFLite/LiteRT targets, measured in one run on this host (needs the tflite extra).

    .venv/bin/python benchmarks/tflite_cpu.py [--sections convert,latency,trained] [--threads 2] [--tiny]

1. convert: litert-torch conversion time of B0 and B1 at 224 (target: B1 < 60 s, any precision)
   and FP32 parity of the .tflite against PyTorch on photos (target: max abs <= 1e-4).
2. latency: B0 and B1 at 224 on LiteRT/XNNPACK and on ONNX Runtime, FP32 and INT8 (the shared
   precision plan), same thread count, in alternating rounds; medians and the ratios (targets:
   INT8 faster than FP32 on XNNPACK; XNNPACK vs ONNX Runtime reported).
3. trained: the trained references as full-integer INT8 .tflite: the digits classifier's held-out
   accuracy vs FP32 (target: within 1 point) and per-image cosine (target >= 0.99); the mosaic
   segmenter's pixel agreement with FP32 at 128x256 and 512x1024 (target >= 97%) and mIoU.
--tiny: B0 only at 64x64, a few images and runs, the mosaic at 64x128 (a smoke run of every section).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evitdeploy import api
from evitdeploy.data import preprocess
from evitdeploy.precision.options import PrecisionOptions
from evitdeploy.requests import CheckRequest
from evitdeploy.models import trained
from evitdeploy.device.metrics import cosine_per_sample

from common import Exports, add_tiny_flag, alternating_medians, outputs_per_image, require


@dataclass(frozen=True)
class Scale:
    models: tuple = ("efficientvit_b0", "efficientvit_b1")
    size: int = 224  # convert and latency sections
    photos: int = 8  # check's samples
    calib: int = 32  # latency section's INT8 calibration photos
    rounds: int = 4
    runs: int = 30  # per round
    digits: int = 0  # held-out digits (0: all)
    digits_calib: int = 64
    mosaics: tuple = ((128, 256), (512, 1024))
    mosaic_calib: int = 16
    mosaic_test: int = 4


TINY = Scale(
    models=("efficientvit_b0",), size=64, photos=2, calib=2, rounds=2, runs=3, digits=8, digits_calib=4, mosaics=((64, 128),), mosaic_calib=2, mosaic_test=1
)


def export(exports: Exports, model: str, target: str, precision: str, height=None, width=None, checkpoint=None, calib=None, count=None):
    return exports(model, target, precision, checkpoint=checkpoint, height=height, width=width, reduced=PrecisionOptions(calib=calib, calib_count=count))


def section_convert(exports: Exports, scale: Scale) -> None:
    print(f"## 1. conversion (litert-torch) and FP32 parity vs PyTorch on {scale.photos} photos, {scale.size}x{scale.size}")
    for model in scale.models:
        artifact, seconds = export(exports, model, "tflite", "fp32", scale.size, scale.size)
        check = api.check_artifact(CheckRequest(path=artifact.folder, samples=scale.photos))
        convert_s = artifact.manifest["export"]["seconds"]["convert_s"]
        print(
            f"{model}: convert {convert_s:.1f} s (export incl. validation {seconds:.1f} s, target B1 < 60 s); "
            f"max abs {check['metrics']['max_abs_error']:.2e} (target <= 1e-4), min cosine {check['metrics']['cosine_min']:.8f}"
        )


def section_latency(exports: Exports, threads: int, scale: Scale) -> None:
    size = scale.size
    print(
        f"\n## 2. latency at {size}x{size}, {threads} threads, {scale.rounds} alternating rounds of {scale.runs} runs "
        f"(median of all {scale.rounds * scale.runs})"
    )
    for model in scale.models:
        artifacts = {
            (t, p): export(exports, model, t, p, size, size, count=scale.calib if p == "int8" else None)[0]
            for t in ("tflite", "onnx")
            for p in ("fp32", "int8")
        }
        feed = {"image": preprocess(trained.digits_images("test")[0][:1], artifacts["onnx", "fp32"].spec, size, size)}
        medians = alternating_medians(artifacts, feed, threads, scale.rounds, scale.runs)
        cells = "  ".join(f"{t}/{p} {medians[t, p]:.3f} ms" for t, p in medians)
        print(f"{model}: {cells}")
        print(
            f"  INT8 speedup over FP32: XNNPACK {medians['tflite', 'fp32'] / medians['tflite', 'int8']:.2f}x, "
            f"ONNX Runtime {medians['onnx', 'fp32'] / medians['onnx', 'int8']:.2f}x; "
            f"XNNPACK vs ONNX Runtime (ORT ms / XNNPACK ms): FP32 {medians['onnx', 'fp32'] / medians['tflite', 'fp32']:.2f}x, "
            f"INT8 {medians['onnx', 'int8'] / medians['tflite', 'int8']:.2f}x"
        )


def section_trained(exports: Exports, folder: Path, threads: int, scale: Scale) -> None:
    print("\n## 3. trained references, full-integer INT8 .tflite (the shared plan) vs FP32 .tflite")
    train, _ = trained.digits_images("train")
    np.savez(folder / "digits-calib.npz", image=train[: scale.digits_calib])
    test, labels = trained.digits_images("test")
    if scale.digits:
        test, labels = test[: scale.digits], labels[: scale.digits]
    inputs = preprocess(list(test), trained.digits_spec(), 64, 64)
    results = {}
    for precision in ("fp32", "int8"):
        artifact, _ = export(
            exports, "efficientvit_b0", "tflite", precision, 64, 64, trained.digits_checkpoint(), str(folder / "digits-calib.npz"), scale.digits_calib
        )
        results[precision] = outputs_per_image(artifact, inputs, threads)
    accuracy = {p: trained.classification_accuracy(v, labels) for p, v in results.items()}
    cosine = cosine_per_sample(results["fp32"], results["int8"])
    print(
        f"digits B0 64x64 ({len(labels)} held-out): FP32 {100 * accuracy['fp32']:.2f}%, INT8 {100 * accuracy['int8']:.2f}% "
        f"(target within 1 point); per-image cosine min {cosine.min():.5f}, median {np.median(cosine):.5f} (target >= 0.99)"
    )
    for height, width in scale.mosaics:
        calib, _ = trained.digit_mosaics(scale.mosaic_calib, height, width, seed=1, split="train")
        np.savez(folder / f"mosaic-calib-{height}.npz", image=calib)
        photos, truth = trained.digit_mosaics(scale.mosaic_test, height, width, seed=2, split="test")
        inputs = preprocess(list(photos), trained.mosaic_spec(height, width), height, width)
        results = {}
        for precision in ("fp32", "int8"):
            artifact, _ = export(
                exports,
                "efficientvit_seg_b0_cityscapes",
                "tflite",
                precision,
                height,
                width,
                trained.mosaic_checkpoint(),
                str(folder / f"mosaic-calib-{height}.npz"),
                scale.mosaic_calib,
            )
            results[precision] = outputs_per_image(artifact, inputs, threads)
        agreement = float((results["fp32"].argmax(1) == results["int8"].argmax(1)).mean())
        miou = {p: trained.segmentation_scores(v, truth)["miou"] for p, v in results.items()}
        print(
            f"mosaic Seg-B0 {height}x{width} ({len(photos)} test mosaics): pixel agreement INT8 vs FP32 {100 * agreement:.2f}% (target >= 97%); "
            f"mIoU FP32 {miou['fp32']:.4f}, INT8 {miou['int8']:.4f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sections", default="convert,latency,trained")
    parser.add_argument("--threads", type=int, default=2)
    add_tiny_flag(parser)
    args = parser.parse_args()
    require(("ai_edge_litert", "litert_torch"), "the tflite extra: pip install -e '.[tflite]'", args.tiny)
    scale = TINY if args.tiny else Scale()
    sections = args.sections.split(",")
    with tempfile.TemporaryDirectory(prefix="evitdeploy-bench-tflite-") as scratch:
        folder = Path(scratch)
        exports = Exports(folder)
        if "convert" in sections:
            section_convert(exports, scale)
        if "latency" in sections:
            section_latency(exports, args.threads, scale)
        if "trained" in sections:
            section_trained(exports, folder, args.threads, scale)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
