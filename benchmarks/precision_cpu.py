"""Precision plans on ONNX Runtime CPU: accuracy and speed of INT8/FP16 against FP32, in one run.

    .venv/bin/python benchmarks/precision_cpu.py [--sections digits,b1,zoo,seg,fp16] [--threads 2]
        [--rounds 8] [--save results.json] [--tiny]

Trained references (evitdeploy.models.trained; cached after the first run): an EfficientViT-B0
digits classifier (held-out accuracy is the number users care about) and a B0 segmenter trained on
digit mosaics (mIoU on its labels). "naive" = onnxruntime.quantization.quantize_static on the same
FP32 ONNX with the same calibration images (QDQ, per-channel, every op type it quantizes, MinMax or
Percentile); "conv-only" = the same restricted to Conv. "plan" = `evitdeploy export --precision int8`
(or fp16). Latencies: contenders alternate in rounds (each round: a few warm-up runs, then timed
runs, every contender), medians over all samples; ratios are FP32 median / contender median.
--tiny: B0 at 64x64 and 64x128, a few images and runs, no digits_b1 (the digits section's code on
another checkpoint): a smoke run of every section.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evitdeploy import api
from evitdeploy.data import preprocess
from evitdeploy.precision.options import PrecisionOptions
from evitdeploy.requests import ExportRequest
from evitdeploy.precision.qdq import naive_quantize
from evitdeploy.models import trained
from evitdeploy.device.metrics import cosine_per_sample

from common import add_tiny_flag, medians_in_turns, ort_op_profile

SECTIONS = ("digits", "digits_b1", "b1", "zoo", "seg", "fp16")


@dataclass(frozen=True)
class Scale:
    digits_calib: int = 128  # INT8 calibration digits (FP16: half of them)
    digits_test: int = 0  # held-out digits (0: all)
    b1: tuple = ("efficientvit_b1", 224)  # the b1 section's model and size
    b1_calib: int = 64
    b1_photos: int = 16
    zoo: tuple = ("b0", "b1", "b2", "b3")
    zoo_size: int = 224
    zoo_calib: int = 32
    seg: tuple = (512, 1024)
    seg_calib: int = 32
    seg_test: int = 8
    fp16: tuple = (1024, 2048)
    fp16_calib: int = 4
    fp16_test: int = 2
    per_round: int = 15
    profiled_runs: int = 30


TINY = Scale(
    digits_calib=4,
    digits_test=8,
    b1=("efficientvit_b0", 64),
    b1_calib=2,
    b1_photos=2,
    zoo=("b0",),
    zoo_size=64,
    zoo_calib=2,
    seg=(64, 128),
    seg_calib=2,
    seg_test=1,
    fp16=(64, 128),
    fp16_calib=1,
    fp16_test=1,
    per_round=2,
    profiled_runs=2,
)


def session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def outputs(path: Path, inputs: np.ndarray, threads: int) -> np.ndarray:
    s = session(path, threads)
    name = s.get_inputs()[0].name
    return np.concatenate([s.run(None, {name: inputs[i : i + 1]})[0] for i in range(len(inputs))])


def cosine_min(reference: np.ndarray, candidate: np.ndarray) -> float:
    return float(cosine_per_sample(reference, candidate).min())


def latencies(paths: dict[str, Path], feed: np.ndarray, threads: int, rounds: int, per_round: int) -> dict:
    """Median ms per contender, contenders alternating in rounds."""
    sessions = {label: session(path, threads) for label, path in paths.items()}
    calls = {label: (lambda s=s: s.run(None, {s.get_inputs()[0].name: feed})) for label, s in sessions.items()}
    return medians_in_turns(calls, rounds, per_round, warmup=3)


def export(folder: Path, name: str, precision: str, checkpoint: Path, height: int, width: int, **reduced) -> Path:
    artifact = api.export_model(
        ExportRequest(
            model=name,
            target="onnx",
            precision=precision,
            output=folder / f"{name}-{precision}-{height}x{width}",
            checkpoint=checkpoint,
            height=height,
            width=width,
            force=True,
            reduced=PrecisionOptions(**reduced),
        ),
    )
    return artifact.folder


def digits_section(work: Path, args, family: str = "b0") -> dict:
    """Trained digits classifier at 64x64: accuracy of every INT8 flavour, and their speed."""
    checkpoint = trained.digits_checkpoint(family=family)
    train_images, _ = trained.digits_images("train")
    test_images, test_labels = trained.digits_images("test")
    spec = trained.digits_spec(64, family)
    name = f"efficientvit_{family}"
    scale = args.scale
    if scale.digits_test:
        test_images, test_labels = test_images[: scale.digits_test], test_labels[: scale.digits_test]
    work = work / f"digits_{family}"
    work.mkdir()
    calib_npz = work / "digits_train.npz"
    np.savez(calib_npz, image=train_images[: scale.digits_calib])
    fp32 = export(work, name, "fp32", checkpoint, 64, 64) / "model.onnx"
    started = time.perf_counter()
    plan_dir = export(work, name, "int8", checkpoint, 64, 64, calib=str(calib_npz), calib_count=scale.digits_calib)
    plan_seconds = time.perf_counter() - started
    fp16_dir = export(work, name, "fp16", checkpoint, 64, 64, calib=str(calib_npz), calib_count=max(1, scale.digits_calib // 2))
    calibration = preprocess(list(train_images[: scale.digits_calib]), spec, 64, 64)
    contenders = {
        "fp32": fp32,
        "naive int8 (minmax)": naive_quantize(fp32, work / "naive_minmax.onnx", calibration, "minmax", False),
        "naive int8 (percentile)": naive_quantize(fp32, work / "naive_pct.onnx", calibration, "percentile", False),
        "conv-only int8": naive_quantize(fp32, work / "conv_only.onnx", calibration, "minmax", True),
        "plan int8": plan_dir / "model.onnx",
        "plan fp16": fp16_dir / "model.onnx",
    }
    inputs = preprocess(list(test_images), spec, 64, 64)
    reference = outputs(fp32, inputs, args.threads)
    rows = {}
    for label, path in contenders.items():
        logits = reference if label == "fp32" else outputs(path, inputs, args.threads)
        rows[label] = {
            "accuracy": trained.classification_accuracy(logits, test_labels),
            "cosine_min": cosine_min(reference, logits),
            "nonfinite": int((~np.isfinite(logits)).sum()),
        }
    medians = latencies(contenders, inputs[:1], args.threads, args.rounds, scale.per_round)
    for label, row in rows.items():
        row["median_ms"] = medians[label]
        row["speed_vs_fp32"] = medians["fp32"] / medians[label]
    plan = json.loads((plan_dir / "manifest.json").read_text())["precision_plan"]
    return {"test_images": len(test_labels), "rows": rows, "plan_search": plan["search"], "export_int8_s": plan_seconds}


def op_profile(path: Path, feed: np.ndarray, threads: int, runs: int = 30) -> dict:
    """ONNX Runtime's per-op-type share of kernel time (%), the 10 largest."""
    name = session(path, threads).get_inputs()[0].name
    return {op: round(100 * share, 1) for op, share in ort_op_profile(path, {name: feed}, threads, runs)[:10]}


def digits_b1_section(work: Path, args) -> dict:
    """The same on an EfficientViT-B1 trained on the digits: the plan on a wider trained model."""
    return digits_section(work, args, "b1")


def b1_section(work: Path, args) -> dict:
    """B1 at 224 on real photos: speed vs accuracy of every INT8 flavour, the profile, and the time
    calibration + quantization take."""
    from evitdeploy.precision.calibset import build_calibration_set
    from evitdeploy.precision.plan import PrecisionPlan
    from evitdeploy.precision.ranges import Ranges
    from evitdeploy.precision.qdq import quantize
    from evitdeploy.models import get_spec

    scale = args.scale
    model, size = scale.b1
    fp32 = export(work, model, "fp32", None, size, size) / "model.onnx"
    started = time.perf_counter()
    int8_dir = export(work, model, "int8", None, size, size, calib_count=scale.b1_calib)
    seconds = time.perf_counter() - started
    manifest = json.loads((int8_dir / "manifest.json").read_text())
    plan = PrecisionPlan.from_dict(json.loads((int8_dir / "precision_plan.json").read_text()))
    ranges = Ranges.from_dict(json.loads((int8_dir / "ranges.json").read_text()))
    quantize(fp32, plan, ranges, work / "b1_float_hardswish.onnx", integer_hardswish_ops=False)
    spec = get_spec(model).with_input(1, size, size)
    calibration = build_calibration_set(spec, None, scale.b1_calib).inputs
    contenders = {
        "fp32": fp32,
        "naive int8": naive_quantize(fp32, work / "b1_naive.onnx", calibration, "minmax", False),
        "conv-only int8": naive_quantize(fp32, work / "b1_conv_only.onnx", calibration, "minmax", True),
        "plan int8, float HardSwish": work / "b1_float_hardswish.onnx",
        "plan int8": int8_dir / "model.onnx",
    }
    photos = build_calibration_set(spec, None, scale.b1_photos, seed=7).inputs
    reference = outputs(fp32, photos, args.threads)
    medians = latencies(contenders, photos[:1], args.threads, args.rounds, scale.per_round)
    rows = {}
    for label, path in contenders.items():
        logits = outputs(path, photos, args.threads)
        rows[label] = {
            "median_ms": medians[label],
            "speed_vs_fp32": medians["fp32"] / medians[label],
            "cosine_min": cosine_min(reference, logits),
            "top1_agreement": float((reference.argmax(1) == logits.argmax(1)).mean()),
        }
    return {
        "rows": rows,
        "profile_pct": {label: op_profile(contenders[label], photos[:1], args.threads, scale.profiled_runs) for label in ("fp32", "plan int8")},
        "export_int8_s": seconds,
        "precision_s": manifest["export"]["seconds"].get("precision_s"),
        "note": "random-init weights: speed and plumbing; cosine/top-1 are against its own FP32 on photos",
    }


def zoo_section(work: Path, args) -> dict:
    """INT8 plan vs FP32 at 224 across B0-B3: the wider the model, the more of its time is dense
    convolution (where INT8 wins) rather than per-element work (HardSwish, where it cannot)."""
    from evitdeploy.precision.calibset import build_calibration_set
    from evitdeploy.models import get_spec

    rows, scale, size = {}, args.scale, args.scale.zoo_size
    for family in scale.zoo:
        name = f"efficientvit_{family}"
        fp32 = export(work, name, "fp32", None, size, size) / "model.onnx"
        int8 = export(work, name, "int8", None, size, size, calib_count=scale.zoo_calib) / "model.onnx"
        photos = build_calibration_set(get_spec(name).with_input(1, size, size), None, 8, seed=7).inputs
        medians = latencies({"fp32": fp32, "plan int8": int8}, photos[:1], args.threads, args.rounds, max(1, scale.per_round * 2 // 3))
        rows[family] = {
            "fp32_ms": medians["fp32"],
            "int8_ms": medians["plan int8"],
            "speed_vs_fp32": medians["fp32"] / medians["plan int8"],
            "cosine_min": cosine_min(outputs(fp32, photos, args.threads), outputs(int8, photos, args.threads)),
            "int8_mb": int8.stat().st_size / 1e6,
            "fp32_mb": fp32.stat().st_size / 1e6,
        }
    return {"rows": rows, "note": "random-init weights: speed; cosine against its own FP32 on photos"}


def seg_section(work: Path, args) -> dict:
    """Trained mosaic segmenter at 512x1024: INT8 pixel agreement with FP32 and mIoU on its labels."""
    checkpoint = trained.mosaic_checkpoint()
    scale = args.scale
    height, width = scale.seg
    calib_photos, _ = trained.digit_mosaics(scale.seg_calib, height, width, seed=1, split="train")
    calib_npz = work / "mosaics_train.npz"
    np.savez(calib_npz, image=calib_photos)
    model = "efficientvit_seg_b0_cityscapes"
    fp32 = export(work, model, "fp32", checkpoint, height, width) / "model.onnx"
    int8_dir = export(work, model, "int8", checkpoint, height, width, calib=str(calib_npz), calib_count=scale.seg_calib)
    test_photos, test_labels = trained.digit_mosaics(scale.seg_test, height, width, seed=2, split="test")
    spec = trained.mosaic_spec(height, width)
    inputs = preprocess(list(test_photos), spec, height, width)
    reference = outputs(fp32, inputs, args.threads)
    candidate = outputs(int8_dir / "model.onnx", inputs, args.threads)
    medians = latencies({"fp32": fp32, "plan int8": int8_dir / "model.onnx"}, inputs[:1], args.threads, max(2, args.rounds // 4), max(1, scale.per_round // 3))
    return {
        "pixel_agreement_with_fp32": float((reference.argmax(1) == candidate.argmax(1)).mean()),
        "fp32": trained.segmentation_scores(reference, test_labels),
        "int8": trained.segmentation_scores(candidate, test_labels),
        "cosine_min": cosine_min(reference, candidate),
        "median_ms": medians,
        "speed_vs_fp32": medians["fp32"] / medians["plan int8"],
    }


def fp16_section(work: Path, args) -> dict:
    """Trained mosaic segmenter at 1024x2048: plain FP16 vs the plan, and the measured headroom.

    Two FP16 views: the FP16 ONNX on ONNX Runtime CPU (which computes chains of ops it has no FP16
    kernel for in FP32, hiding overflow inside them) and the FP16 storage emulation (every tensor
    an FP16 node writes rounded to FP16: what a GPU's FP16 kernels store)."""
    from evitdeploy.precision.plan import PrecisionPlan
    from evitdeploy.precision.fp16 import convert, storage_emulation
    from evitdeploy.precision.evaluate import outputs_of

    checkpoint = trained.mosaic_checkpoint()
    scale = args.scale
    height, width = scale.fp16
    model = "efficientvit_seg_b0_cityscapes"
    calib_photos, _ = trained.digit_mosaics(scale.fp16_calib, height, width, seed=3, split="train")
    calib_npz = work / "mosaics_2048.npz"
    np.savez(calib_npz, image=calib_photos)
    fp32_dir = export(work, model, "fp32", checkpoint, height, width)
    plan_dir = export(work, model, "fp16", checkpoint, height, width, calib=str(calib_npz), calib_count=scale.fp16_calib)
    fp32 = fp32_dir / "model.onnx"
    plan = PrecisionPlan.from_dict(json.loads((plan_dir / "precision_plan.json").read_text()))
    convert(fp32, None, work / "plain_fp16.onnx")
    storage_emulation(fp32, None, work / "plain_storage.onnx")
    storage_emulation(fp32, plan, work / "plan_storage.onnx")
    test_photos, test_labels = trained.digit_mosaics(scale.fp16_test, height, width, seed=4, split="test")
    inputs = preprocess(list(test_photos), trained.mosaic_spec(height, width), height, width)
    reference = outputs(fp32, inputs, args.threads)
    ranges = json.loads((plan_dir / "ranges.json").read_text())["tensors"]
    attention = [r["absmax"] for r in ranges.values() if r["module"].endswith("context_module.main") and r["op"] in ("MatMul", "ReduceSum")]
    result = {
        "logit_range": float(reference.max() - reference.min()),
        "fp32_miou": trained.segmentation_scores(reference, test_labels)["miou"],
        "largest_attention_sum_absmax": max(attention),
        "largest_tensor_absmax": max(r["absmax"] for r in ranges.values()),
        "fp16_headroom_of_largest_tensor": 65504.0 / max(r["absmax"] for r in ranges.values()),
        "attention_eps": plan.settings.get("attention_eps"),
    }
    views = {
        "plain fp16 (ORT CPU)": (work / "plain_fp16.onnx", True),
        "plan fp16 (ORT CPU)": (plan_dir / "model.onnx", True),
        "plain fp16 (storage emulation)": (work / "plain_storage.onnx", False),
        "plan fp16 (storage emulation)": (work / "plan_storage.onnx", False),
    }
    for label, (path, optimize) in views.items():
        logits = outputs_of(path, inputs, "image", optimize=optimize)
        finite = np.isfinite(logits)
        error = np.abs(np.where(finite, logits, 0) - reference).max()
        result[label] = {
            "nonfinite": int((~finite).sum()),
            "max_abs_error": float(error),
            "max_abs_error_over_logit_range": float(error / result["logit_range"]),
            "miou": trained.segmentation_scores(np.where(finite, logits, 0), test_labels)["miou"],
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--save", type=Path)
    add_tiny_flag(parser)
    args = parser.parse_args()
    args.scale = TINY if args.tiny else Scale()
    if args.tiny:
        args.rounds = 2
        if args.sections == ",".join(SECTIONS):
            args.sections = ",".join(s for s in SECTIONS if s != "digits_b1")
    chosen = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        sys.exit(f"unknown section {unknown[0]!r}; choose from {', '.join(SECTIONS)}")
    results = {}
    with tempfile.TemporaryDirectory(prefix="evitdeploy-precision-") as scratch:
        for name in chosen:
            started = time.perf_counter()
            results[name] = globals()[f"{name}_section"](Path(scratch), args)
            results[name]["section_s"] = time.perf_counter() - started
            print(json.dumps({name: results[name]}, indent=2, default=float), flush=True)
    if args.save:
        args.save.write_text(json.dumps(results, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
