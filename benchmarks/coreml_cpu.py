"""The Core ML targets, measured in one run on this host (Linux: conversion and packages only).

    .venv/bin/python benchmarks/coreml_cpu.py

1. B1 at 224 (random init, the plan calibrated on photos): conversion time per precision (target:
   < 60 s) and package sizes.
2. The trained digits classifiers (B0, B1 at 64x64): package sizes FP16 / FP32 (target about half)
   and INT8 weights / FP32 (target about a quarter), ops by precision, ops the plan kept FP32.
Prediction (parity, latency) needs macOS: run the bundle's verify.py on a Mac.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path

import numpy as np

from evitdeploy import api
from evitdeploy.bundle import model_bytes
from evitdeploy.precision.options import PrecisionOptions
from evitdeploy.requests import ExportRequest
from evitdeploy.models import trained


def export(folder: Path, model: str, precision: str, height=None, width=None, checkpoint=None, calib=None, count=None):
    started = time.perf_counter()
    with contextlib.redirect_stderr(open("/dev/null", "w")):
        artifact = api.export_model(
            ExportRequest(
                model=model, target="coreml", precision=precision, output=folder / f"{model}-{precision}-{height}",
                checkpoint=checkpoint, height=height, width=width, reduced=PrecisionOptions(calib=calib, calib_count=count),
                force=True,
            ),
        )
    return artifact, time.perf_counter() - started


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="evitdeploy-bench-coreml-") as scratch:
        folder = Path(scratch)
        print("## 1. B1 at 224, random init: conversion and sizes")
        for precision in ("fp32", "fp16", "int8"):
            artifact, seconds = export(folder, "efficientvit_b1", precision, count=16)
            timing = artifact.manifest["export"]["seconds"]
            package = artifact.manifest["validation"]["package"]
            print(f"{precision}: convert {timing['convert_s']:.1f} s (plan {timing.get('precision_s', 0):.1f} s; whole export {seconds:.1f} s; target < 60 s); "
                  f"{model_bytes(artifact.manifest) / 1e6:.2f} MB; ops {package['ops_by_precision']}, {package['plan_fp32_ops']} kept FP32 by the plan")
        print("\n## 2. trained digits classifiers at 64x64: package sizes")
        np.savez(folder / "calib.npz", image=trained.digits_images("train")[0][:32])
        for family in ("b0", "b1"):
            sizes = {}
            for precision in ("fp32", "fp16", "int8"):
                artifact, _ = export(folder, f"efficientvit_{family}", precision, 64, 64, trained.digits_checkpoint(family=family), str(folder / "calib.npz"), 32)
                sizes[precision] = model_bytes(artifact.manifest)
                package = artifact.manifest["validation"]["package"]
                print(f"{family} {precision}: {sizes[precision] / 1e6:.2f} MB; ops {package['ops_by_precision']}; "
                      f"{package['plan_fp32_ops']} kept FP32 by the plan; {package['compressed_weight_ops']} compressed weight ops")
            print(f"{family}: FP16/FP32 {sizes['fp16'] / sizes['fp32']:.3f} (target ~0.5), INT8/FP32 {sizes['int8'] / sizes['fp32']:.3f} (target ~0.25)")


if __name__ == "__main__":
    main()
