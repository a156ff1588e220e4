"""OpenVINO on this x86 CPU, measured in one run: its speed and accuracy targets against ONNX Runtime
and NNCF (needs the openvino extra; NNCF's default INT8, the comparison, needs `pip install nncf` beside it).

    .venv/bin/python benchmarks/openvino_cpu.py [--sections speed,accuracy,profile] [--models b1,seg]
        [--threads 2] [--rounds 8] [--save results.json] [--tiny]

1. speed: B1@224 and Seg-B1@512x1024 (random weights; speed only), contenders taking turns in
   rounds (each round: every contender `--per-round` times, the order reversed every turn; medians
   over all samples): ONNX Runtime FP32 (our ONNX), OpenVINO f32, OpenVINO bf16 (CPUs with BF16),
   OpenVINO INT8 following our plan (`export -t openvino -p int8`), NNCF's default INT8 of the
   same FP32 IR with the same calibration images and the same compile settings.
   Targets: ours >= 0.9x NNCF default's speed (B1, Seg-B1); ours >= 1.8x ORT FP32 at B1 on a host
   with AMX or AVX512-BF16 (>= 1.5x with VNNI only).
2. accuracy: the trained digits classifiers (B0 and B1, 64x64, held-out split) as OpenVINO f32,
   bf16, INT8 (ours) and NNCF default INT8, against PyTorch FP32: per-image min cosine (target
   >= 0.99) and top-1 against FP32's (target within 0.5 point).
3. profile: where B1@224's time goes in OpenVINO (PERF_COUNT, share of real time by layer type and
   kernel) for bf16 and our INT8: why INT8 is or is not faster than the float graph on this CPU.
The CPU flags every figure depends on are printed first and saved with the results.
--tiny: B0 at 64x64 for speed and profile, the B0 digits classifier on 8 digits, a few runs (a smoke
run of every section).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from evitdeploy.backends import runner_for
from evitdeploy.backends.openvino.device import compile_ir, describe, has_bf16
from evitdeploy.data import load_inputs, preprocess
from evitdeploy.device.metrics import cosine_per_sample, time_turns
from evitdeploy.models import build_model, trained
from evitdeploy.precision.options import PrecisionOptions

from common import Exports, add_tiny_flag, cpu_facts, host_line, nncf_default, require

CASES = {
    "b1": ("efficientvit_b1", 224, 224, None),
    "seg": ("efficientvit_seg_b1_cityscapes", 512, 1024, 16),
    "tiny": ("efficientvit_b0", 64, 64, 2),
}  # (model, height, width, INT8 calibration images)
FAMILIES = ("b0", "b1")  # the accuracy section's trained digits classifiers
DIGITS = (0, 64)  # the accuracy section's held-out digits (0: all) and calibration digits
PROFILED = ("b1", 50)  # the profile section's case and runs


EXPORTS: dict = {}  # folder -> its Exports


def export(folder: Path, model: str, target: str, precision: str, height: int, width: int, **extra):
    exports = EXPORTS.setdefault(folder, Exports(folder, announce=True))
    return exports(model, target, precision, height=height, width=width, **extra)[0]


def ir_infer(model_dir: Path, precision: str, threads: int):
    properties = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
    request = compile_ir(model_dir, properties).create_infer_request()

    def infer(x):
        request.infer({0: x})
        return request.get_output_tensor(0).data.copy()

    infer.label = describe(properties)
    return infer


def artifact_infer(artifact, threads: int):
    runner = runner_for(artifact, threads).__enter__()
    name = artifact.spec.input_name
    return lambda x: runner.infer({name: x})[artifact.spec.output_name]


def contenders(folder: Path, model: str, height: int, width: int, calib_count, threads: int, bf16: bool, checkpoint=None, calib=None) -> dict:
    """name -> infer(x) for every contender of one model and size."""
    reduced = PrecisionOptions(calib=calib, calib_count=calib_count)
    onnx = export(folder, model, "onnx", "fp32", height, width, checkpoint=checkpoint)
    ours = export(folder, model, "openvino", "int8", height, width, checkpoint=checkpoint, reduced=reduced)
    f32 = export(folder, model, "openvino", "fp32", height, width, checkpoint=checkpoint)
    spec = ours.spec
    calibration = calibration_images(spec, calib, reduced.count_for(height, width))
    float_hint = "bf16" if bf16 else "f32"
    found = {
        "ORT FP32": artifact_infer(onnx, threads),
        "OV f32": ir_infer(f32.model_file, "f32", threads),
        **({"OV bf16": ir_infer(f32.model_file, "bf16", threads)} if bf16 else {}),
        f"OV INT8 ours ({ours.manifest['export']['openvino']['inference_precision']})": artifact_infer(ours, threads),
    }
    with contextlib.suppress(ImportError):
        found[f"NNCF default INT8 ({float_hint})"] = ir_infer(nncf_default(onnx.model_file, calibration, folder / f"{model}-nncf"), float_hint, threads)
    return found


def calibration_images(spec, calib, count: int) -> np.ndarray:
    from evitdeploy.precision.calibset import build_calibration_set

    return build_calibration_set(spec, calib, count, 0).inputs


def speed(args, bf16: bool) -> dict:
    results = {}
    for key in args.models.split(","):
        model, height, width, calib_count = CASES[key]
        print(f"{model} @ {height}x{width}", flush=True)
        with tempfile.TemporaryDirectory(prefix="evitdeploy-ovbench-") as scratch:
            found = contenders(Path(scratch), model, height, width, calib_count, args.threads, bf16)
            x = load_inputs(build_model_spec(model, height, width), height, width, None, count=1)[0]
            calls = [lambda infer=infer: infer(x) for infer in found.values()]
            samples = time_turns(calls, warmup=args.per_round, count=args.rounds * args.per_round, block=args.per_round)
        medians = {name: float(np.median(s)) for name, s in zip(found, samples)}
        base = medians["ORT FP32"]
        nncf = next((m for name, m in medians.items() if name.startswith("NNCF")), None)
        results[key] = {name: {"median_ms": m, "x_ort_fp32": base / m, **({"x_nncf_default": nncf / m} if nncf else {})} for name, m in medians.items()}
        for name, row in results[key].items():
            print(
                f"  {name:32s} {row['median_ms']:8.2f} ms   {row['x_ort_fp32']:5.2f}x ORT FP32"
                + (f"   {row['x_nncf_default']:5.2f}x NNCF default" if nncf else ""),
                flush=True,
            )
    return results


def build_model_spec(model: str, height: int, width: int):
    from evitdeploy.models import get_spec

    return get_spec(model).with_input(1, height, width)


def accuracy(args, bf16: bool) -> dict:
    import torch

    results = {}
    train, _ = trained.digits_images("train")
    test, labels = trained.digits_images("test")
    if DIGITS[0]:
        test, labels = test[: DIGITS[0]], labels[: DIGITS[0]]
    for family in FAMILIES:
        checkpoint = trained.digits_checkpoint(family=family)
        spec = trained.digits_spec(family=family)
        inputs = preprocess(list(test), spec, 64, 64)
        reference, _ = build_model(spec, checkpoint, 0, None)
        with torch.no_grad():
            fp32 = reference.eval()(torch.from_numpy(inputs)).numpy()
        fp32_top1 = trained.classification_accuracy(fp32, labels)
        print(f"digits {family.upper()} (PyTorch FP32 top-1 {100 * fp32_top1:.2f}%)", flush=True)
        with tempfile.TemporaryDirectory(prefix="evitdeploy-ovacc-") as scratch:
            np.savez(Path(scratch) / "calib.npz", image=train[: DIGITS[1]])
            found = contenders(Path(scratch), spec.name, 64, 64, DIGITS[1], args.threads, bf16, checkpoint=checkpoint, calib=str(Path(scratch) / "calib.npz"))
            rows = {}
            for name, infer in found.items():
                logits = np.concatenate([infer(inputs[i : i + 1]) for i in range(len(inputs))])
                top1 = trained.classification_accuracy(logits, labels)
                rows[name] = {"cosine_min": float(cosine_per_sample(fp32, logits).min()), "top1": top1, "top1_delta_pt": 100 * (top1 - fp32_top1)}
                print(f"  {name:32s} min cosine {rows[name]['cosine_min']:.4f}   top-1 {100 * top1:.2f}% ({rows[name]['top1_delta_pt']:+.2f} pt)", flush=True)
        results[family] = {"fp32_top1": fp32_top1, **rows}
    return results


def op_profile(model_dir: Path, precision: str, x: np.ndarray, threads: int, runs: int = 50) -> dict:
    """Share (%) of OpenVINO's real time per (layer type, kernel), over `runs` inferences."""
    properties = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads, "PERF_COUNT": True}
    request = compile_ir(model_dir, properties).create_infer_request()
    totals: dict = {}
    for _ in range(runs):
        request.infer({0: x})
        for info in request.profiling_info:
            if info.status == info.Status.EXECUTED:
                key = f"{info.node_type} {info.exec_type}"
                totals[key] = totals.get(key, 0.0) + info.real_time.total_seconds()
    whole = sum(totals.values()) or 1.0
    return {key: round(100 * value / whole, 1) for key, value in sorted(totals.items(), key=lambda kv: -kv[1])[:10]}


def profile(args, bf16: bool) -> dict:
    model, height, width, calib_count = CASES[PROFILED[0]]
    print(f"per-op profile, {model} @ {height}x{width}", flush=True)
    results = {}
    with tempfile.TemporaryDirectory(prefix="evitdeploy-ovprof-") as scratch:
        f32 = export(Path(scratch), model, "openvino", "fp32", height, width)
        ours = export(Path(scratch), model, "openvino", "int8", height, width, reduced=PrecisionOptions(calib_count=calib_count))
        x = load_inputs(build_model_spec(model, height, width), height, width, None, count=1)[0]
        float_hint = "bf16" if bf16 else "f32"
        for label, artifact, hint in ((f"float ({float_hint})", f32, float_hint), (f"INT8 ours ({float_hint})", ours, float_hint)):
            results[label] = op_profile(artifact.model_file, hint, x, args.threads, runs=PROFILED[1])
            print(f"  {label}: " + ", ".join(f"{k} {v}%" for k, v in results[label].items()), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sections", default="speed,accuracy,profile")
    parser.add_argument("--models", default="b1,seg", help="speed section: b1 and/or seg")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--per-round", type=int, default=10)
    parser.add_argument("--save", type=Path)
    add_tiny_flag(parser)
    args = parser.parse_args()
    require(("openvino",), "the openvino extra: pip install -e '.[openvino]'", args.tiny)
    if args.tiny:
        global FAMILIES, DIGITS, PROFILED
        args.models, args.rounds, args.per_round = "tiny", 2, 2
        FAMILIES, DIGITS, PROFILED = ("b0",), (8, 4), ("tiny", 3)
    import openvino as ov

    core = ov.Core()
    facts = {**cpu_facts(args.threads), "openvino": ov.__version__, "openvino_capabilities": list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))}
    bf16 = has_bf16(core)
    print(f"{host_line(facts)}; OpenVINO {facts['openvino']} {facts['openvino_capabilities']}; {args.threads} threads", flush=True)
    results = {"host": facts, "threads": args.threads}
    if "speed" in args.sections:
        results["speed"] = speed(args, bf16)
    if "accuracy" in args.sections:
        results["accuracy"] = accuracy(args, bf16)
    if "profile" in args.sections:
        results["profile"] = profile(args, bf16)
    if args.save:
        args.save.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    sys.exit(main())
