"""The Core ML targets, measured in one run on this host (Linux: conversion and packages only).

    .venv/bin/python benchmarks/coreml_cpu.py [--tiny]

1. B1 at 224 (random init, the plan calibrated on photos): conversion time per precision (target:
   < 60 s) and package sizes.
2. The trained digits classifiers (B0, B1 at 64x64): package sizes FP16 / FP32 (target about half)
   and INT8 weights / FP32 (target about a quarter), ops by precision, ops the plan kept FP32.
Prediction (parity, latency) needs macOS: run the bundle's verify.py on a Mac.
--tiny: B0 at 64x64 in section 1, the B0 digits classifier only, 4 calibration images (a smoke run).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from evitdeploy.artifact import model_size
from evitdeploy.precision.options import PrecisionOptions
from evitdeploy.models import trained

from common import Exports, add_tiny_flag, require


def export(exports: Exports, model: str, precision: str, height=None, width=None, checkpoint=None, calib=None, count=None):
    return exports(model, "coreml", precision, checkpoint=checkpoint, height=height, width=width, reduced=PrecisionOptions(calib=calib, calib_count=count))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_tiny_flag(parser)
    args = parser.parse_args()
    require(("coremltools",), "the coreml extra: pip install -e '.[coreml]'", args.tiny)
    # section 1's (model, size, calibration photos); section 2's families and calibration digits
    (model, size, count), families, digits = (("efficientvit_b0", 64, 2), ("b0",), 4) if args.tiny else (("efficientvit_b1", None, 16), ("b0", "b1"), 32)
    with tempfile.TemporaryDirectory(prefix="evitdeploy-bench-coreml-") as scratch:
        folder = Path(scratch)
        exports = Exports(folder)
        print(f"## 1. {model} at {size or 224}, random init: conversion and sizes")
        for precision in ("fp32", "fp16", "int8"):
            artifact, seconds = export(exports, model, precision, size, size, count=count)
            timing = artifact.manifest["export"]["seconds"]
            package = artifact.manifest["validation"]["package"]
            print(
                f"{precision}: convert {timing['convert_s']:.1f} s (plan {timing.get('precision_s', 0):.1f} s; whole export {seconds:.1f} s; target < 60 s); "
                f"{model_size(artifact.model_file) / 1e6:.2f} MB; ops {package['ops_by_precision']}, {package['plan_fp32_ops']} kept FP32 by the plan"
            )
        print("\n## 2. trained digits classifiers at 64x64: package sizes")
        np.savez(folder / "calib.npz", image=trained.digits_images("train")[0][:digits])
        for family in families:
            sizes = {}
            for precision in ("fp32", "fp16", "int8"):
                artifact, _ = export(
                    exports, f"efficientvit_{family}", precision, 64, 64, trained.digits_checkpoint(family=family), str(folder / "calib.npz"), digits
                )
                sizes[precision] = model_size(artifact.model_file)
                package = artifact.manifest["validation"]["package"]
                print(
                    f"{family} {precision}: {sizes[precision] / 1e6:.2f} MB; ops {package['ops_by_precision']}; "
                    f"{package['plan_fp32_ops']} kept FP32 by the plan; {package['compressed_weight_ops']} compressed weight ops"
                )
            print(f"{family}: FP16/FP32 {sizes['fp16'] / sizes['fp32']:.3f} (target ~0.5), INT8/FP32 {sizes['int8'] / sizes['fp32']:.3f} (target ~0.25)")


if __name__ == "__main__":
    main()
