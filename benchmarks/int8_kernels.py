"""INT8 on the x86 kernels that run it, measured in one run (`make bench-int8-kernels`).

    .venv/bin/python benchmarks/int8_kernels.py [--sections accuracy,speed] [--threads 2] [--rounds 4] [--digits 256] [--tiny]

1. accuracy: the trained references, INT8 following the plan, made for any x86 (7-bit weights on
   the GEMM convolutions; OpenVINO: NNCF's overflow fix, f32 float remainder) and for VNNI (full 8
   bits), for ONNX Runtime and OpenVINO, run on this host's kernels and on AVX2-only kernels (QEMU
   user mode, `-cpu Haswell`: real AVX2 code, no VNNI; correctness only, never timing):
   digits B0 at 64x64 (`--digits` held-out digits) and mosaic Seg-B0 at 256x512 (4 test mosaics).
   Per-image min cosine to the FP32 ONNX model on this host (target >= 0.99), top-1 / mIoU against
   FP32's. A VNNI OpenVINO model validated at bf16 cannot compile on a CPU without BF16: under QEMU
   it runs at f32, marked so.
2. speed: B1 at 224 (random init, `--search-budget 0` so both schemes quantize the same nodes):
   any vs vnni on this host, ONNX Runtime and OpenVINO, timed in alternating rounds.
The CPU flags every figure depends on are printed first.
--tiny: 8 digits, the mosaic at 128x256 (8 calibration mosaics), the speed section on the digits B0
with a few runs (a smoke run of every section; the AVX2-only columns still need QEMU).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evitdeploy import emulation
from evitdeploy.data import preprocess
from evitdeploy.device import cpu
from evitdeploy.device.metrics import cosine_per_sample
from evitdeploy.models import trained
from evitdeploy.precision.options import PrecisionOptions

from common import Exports, add_tiny_flag, alternating_medians, cpu_facts, require

QEMU = emulation.qemu()
# A model for VNNI is refused where the CPU has none (its sums saturate here): made only on VNNI/AMX hosts.
TARGETS = ("any",) if cpu.kernel_class() in cpu.SATURATING else ("any", "vnni")
BACKENDS = {"onnx": "ONNX Runtime", "openvino": "OpenVINO"}


@dataclass(frozen=True)
class Scale:
    digits_calib: int = 64
    mosaic: tuple = (256, 512)
    mosaic_calib: int = 16
    mosaic_test: int = 4
    speed: tuple = ("efficientvit_b1", 224)  # the speed section's model and size
    speed_trained: bool = False  # the speed section on the trained digits (random B0 at 64x64 ties its logits: INT8 missed its export gate)
    runs: int = 30  # per round


# the segmenter at its trained size: OpenVINO INT8 at 64x128 on 2 mosaics missed its export gate (pixel agreement 0.945 < 0.95)
TINY = Scale(digits_calib=4, mosaic=(128, 256), mosaic_calib=8, mosaic_test=1, speed=("efficientvit_b0", 64), speed_trained=True, runs=3)
EXPORTS: dict = {}  # folder -> its Exports


def export(
    folder: Path, model: str, target: str, precision: str, height: int, width: int, *, checkpoint=None, calib=None, count=None, kernels=None, budget: int = 6
):
    exports = EXPORTS.setdefault(folder, Exports(folder))
    return exports.artifact(
        model,
        target,
        precision,
        checkpoint=checkpoint,
        height=height,
        width=width,
        reduced=PrecisionOptions(calib=calib, calib_count=count, int8_kernels=kernels, search_budget=budget),
    )


def section_accuracy(folder: Path, digits_count: int, scale: Scale) -> None:
    print("\n## 1. accuracy: INT8 (plan) for any x86 vs for VNNI, on this host's kernels and on AVX2-only kernels (QEMU -cpu Haswell)")
    if QEMU is None:
        print("(qemu-x86_64 is not installed: apt-get install qemu-user; AVX2-only columns skipped)")
    train, _ = trained.digits_images("train")
    np.savez(folder / "digits-calib.npz", image=train[: scale.digits_calib])
    test, labels = trained.digits_images("test")
    cases = [
        (
            "digits B0 64x64",
            "efficientvit_b0",
            64,
            64,
            trained.digits_checkpoint(),
            str(folder / "digits-calib.npz"),
            scale.digits_calib,
            preprocess(list(test[:digits_count]), trained.digits_spec(), 64, 64),
            labels[:digits_count],
        ),
    ]
    height, width = scale.mosaic
    calib, _ = trained.digit_mosaics(scale.mosaic_calib, height, width, seed=1, split="train")
    np.savez(folder / "mosaic-calib.npz", image=calib)
    photos, truth = trained.digit_mosaics(scale.mosaic_test, height, width, seed=2, split="test")
    cases.append(
        (
            f"mosaic Seg-B0 {height}x{width}",
            "efficientvit_seg_b0_cityscapes",
            height,
            width,
            trained.mosaic_checkpoint(),
            str(folder / "mosaic-calib.npz"),
            scale.mosaic_calib,
            preprocess(list(photos), trained.mosaic_spec(height, width), height, width),
            truth,
        )
    )
    print("| model | backend | made for | plan FP32 blocks | kernels | inference | min cosine | top-1 / mIoU (FP32) |")
    print("|---|---|---|---|---|---|---:|---:|")
    for title, model, height, width, checkpoint, calibration, count, inputs, truth in cases:
        fp32 = export(folder, model, "onnx", "fp32", height, width, checkpoint=checkpoint)
        artifacts = {
            f"{target}-{kernels}": export(folder, model, target, "int8", height, width, checkpoint=checkpoint, calib=calibration, count=count, kernels=kernels)
            for target in BACKENDS
            for kernels in TARGETS
        }
        models = {"fp32": emulation.model_of(fp32), **{key: emulation.model_of(a) for key, a in artifacts.items()}}
        runs = {"this host (" + cpu.kernel_class() + ")": emulation.outputs(models, inputs, on_avx2=False)}
        if QEMU:
            runs["AVX2 only (QEMU)"] = emulation.outputs({k: v for k, v in models.items() if k != "fp32"}, inputs, on_avx2=True)
        reference = runs[next(iter(runs))][0]["fp32"]
        score = _scorer(model, truth)
        for key, artifact in artifacts.items():
            blocks = ", ".join(artifact.manifest["precision_plan"]["summary"]["float_groups"]) or "none"
            for kernels, (found, precisions) in runs.items():
                cosine = cosine_per_sample(reference, found[key]).min()
                print(
                    f"| {title} | {BACKENDS[artifact.target]} | {artifact.manifest['int8_kernels']['target']} "
                    f"({artifact.manifest['int8_kernels']['weight_bits']}-bit) | {blocks} | {kernels} | {precisions[key]} | "
                    f"{cosine:.4f} | {score(found[key])} ({score(reference)}) |"
                )


def _scorer(model: str, truth):
    if "seg" in model:
        return lambda logits: f"{trained.segmentation_scores(logits, truth)['miou']:.4f}"
    return lambda logits: f"{100 * trained.classification_accuracy(logits, truth):.2f}%"


def section_speed(folder: Path, threads: int, rounds: int, scale: Scale) -> None:
    if len(TARGETS) == 1:
        print("\n## 2. speed: skipped, this CPU has no VNNI: only the 7-bit scheme is made here")
        return
    model, size = scale.speed
    print(
        f"\n## 2. speed: {model} at {size}, {'trained digits' if scale.speed_trained else 'random init'}, rules-only plan (--search-budget 0), {threads} threads, {rounds} alternating rounds of {scale.runs}"
    )
    weights = {}
    if scale.speed_trained:
        np.savez(folder / "speed-calib.npz", image=trained.digits_images("train")[0][: scale.digits_calib])
        weights = {"checkpoint": trained.digits_checkpoint(), "calib": str(folder / "speed-calib.npz"), "count": scale.digits_calib}
    artifacts = {
        (target, kernels): export(folder, model, target, "int8", size, size, kernels=kernels, budget=0, **weights) for target in BACKENDS for kernels in TARGETS
    }
    artifacts[("onnx", "fp32")] = export(folder, model, "onnx", "fp32", size, size, checkpoint=weights.get("checkpoint"))
    feed = {"image": preprocess(trained.digits_images("test")[0][:1], artifacts[("onnx", "fp32")].spec, size, size)}
    medians = alternating_medians(artifacts, feed, threads, rounds=rounds, count=scale.runs)
    for target in BACKENDS:
        precision = {k: artifacts[target, k].manifest["export"].get("openvino", {}).get("inference_precision", "-") for k in TARGETS}
        print(
            f"{BACKENDS[target]}: any (7-bit, float part {precision['any']}) {medians[target, 'any']:.3f} ms, "
            f"vnni (8-bit, float part {precision['vnni']}) {medians[target, 'vnni']:.3f} ms: "
            f"any/vnni time {medians[target, 'any'] / medians[target, 'vnni']:.3f}; vs ORT FP32 {medians['onnx', 'fp32']:.3f} ms: "
            f"any {medians['onnx', 'fp32'] / medians[target, 'any']:.2f}x, vnni {medians['onnx', 'fp32'] / medians[target, 'vnni']:.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sections", default="accuracy,speed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--digits", type=int, default=256, help="held-out digits for the accuracy section")
    add_tiny_flag(parser)
    args = parser.parse_args()
    require(("openvino",), "the openvino extra: pip install -e '.[openvino]'", args.tiny)
    scale = TINY if args.tiny else Scale()
    if args.tiny:
        args.digits, args.rounds = 8, 2
    print(json.dumps(cpu_facts(args.threads)))
    sections = args.sections.split(",")
    with tempfile.TemporaryDirectory(prefix="evitdeploy-bench-int8-kernels-") as scratch:
        if "accuracy" in sections:
            section_accuracy(Path(scratch), args.digits, scale)
        if "speed" in sections:
            section_speed(Path(scratch), args.threads, args.rounds, scale)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
