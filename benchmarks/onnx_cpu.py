"""ONNX Runtime CPU latency: our export vs PyTorch eager vs a naive export, in one run.

    .venv/bin/python benchmarks/onnx_cpu.py [--threads 2] [--cases b0,b1,l1,seg512,seg1024,seg2048]
        [--min-seconds 3] [--profile-l1] [--save results.json] [--tiny]

"naive" = the textbook formulation (LiteMLA with tokens on axis -2 and a ones row padded onto v;
F.interpolate bicubic: timm's and the reference's) with the same weights, exported with plain torch.onnx.export (opset 17)
and no graph preparation. "ours" = `evitdeploy export` (channel-first LiteMLA, conv bicubic, onnxslim).
"eager" = PyTorch running the textbook formulation (the reference).
All three run with `threads` intra-op threads; ORT uses ENABLE_ALL. Rounds alternate between the
contenders so that load changes on a shared host hit all of them alike; medians over all samples.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from evitdeploy.bench import measure, summarize
from evitdeploy.data import load_inputs
from evitdeploy.backends.options import ExportOptions
from evitdeploy.backends import export
from evitdeploy.models import build_model, get_spec
from evitdeploy.backends.onnxruntime.runner import OnnxRuntimeRunner
from evitdeploy.backends.torch.runner import TorchRunner

from common import add_tiny_flag, naive_export, ort_op_profile

CASES = {
    "b0": ("efficientvit_b0", 224, 224),
    "b1": ("efficientvit_b1", 224, 224),
    "l1": ("efficientvit_l1", 224, 224),
    "seg512": ("efficientvit_seg_b1_cityscapes", 512, 512),
    "seg1024": ("efficientvit_seg_b1_cityscapes", 1024, 1024),
    "seg2048": ("efficientvit_seg_b1_cityscapes", 1024, 2048),
    "tiny": ("efficientvit_b0", 64, 64),  # --tiny
}


def run_case(key: str, threads: int, min_seconds: float, rounds: int, workdir: Path, profile: bool) -> dict:
    name, h, w = CASES[key]
    spec = get_spec(name).with_input(1, h, w)
    model, spec = build_model(spec)
    inputs, source = load_inputs(spec, h, w, count=1)
    feed = {spec.input_name: inputs}
    ours_dir = workdir / f"{key}-ours"
    started = time.perf_counter()
    export(model, spec, "onnx", ExportOptions(output=ours_dir, validation_inputs=inputs, validation_source=source))
    export_s = time.perf_counter() - started
    naive_path = workdir / f"{key}-naive.onnx"
    naive_export(model, spec, naive_path)  # leaves the model in its textbook form: eager = the reference

    contenders = {
        "eager": TorchRunner(model, spec, threads=threads),
        "naive": OnnxRuntimeRunner(naive_path, threads=threads, providers=["CPUExecutionProvider"]),
        "ours": OnnxRuntimeRunner(ours_dir / "model.onnx", threads=threads, providers=["CPUExecutionProvider"]),
    }
    samples = {k: [] for k in contenders}
    outputs = {}
    for label, runner in contenders.items():
        runner.load()
        outputs[label] = runner.infer(feed)[spec.output_name]
    per_round = min_seconds / rounds
    for _ in range(rounds):
        for label, runner in contenders.items():
            if label == "eager":  # TorchRunner sets torch's thread count on load and restores it on close
                runner.load()
            samples[label] += measure(lambda: runner.infer(feed), warmup=2, count=3, min_time_s=per_round)
            if label == "eager":
                runner.close()
    for runner in contenders.values():
        runner.close()
    stats = {k: summarize(v) for k, v in samples.items()}
    mp = h * w / 1e6
    result = {
        "case": key,
        "model": name,
        "input": f"{h}x{w}",
        "export_s": export_s,
        "median_ms": {k: s["median_ms"] for k, s in stats.items()},
        "samples": {k: s["count"] for k, s in stats.items()},
        "ours_vs_naive": stats["naive"]["median_ms"] / stats["ours"]["median_ms"],
        "ours_vs_eager": stats["eager"]["median_ms"] / stats["ours"]["median_ms"],
        "naive_vs_eager": stats["eager"]["median_ms"] / stats["naive"]["median_ms"],
        "ms_per_mp": {k: s["median_ms"] / mp for k, s in stats.items()},
        "max_abs_ours_vs_eager": float(np.abs(outputs["ours"] - outputs["eager"]).max()),
        "max_abs_naive_vs_eager": float(np.abs(outputs["naive"] - outputs["eager"]).max()),
    }
    if profile:
        result["op_profile_ours"] = ort_op_profile(ours_dir / "model.onnx", feed, threads)[:8]
        result["op_profile_naive"] = ort_op_profile(naive_path, feed, threads)[:8]
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--min-seconds", type=float, default=3.0, help="timed seconds per contender per case")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile-l1", action="store_true", help="ORT per-op profile for L1 (and B1)")
    parser.add_argument("--save", type=Path)
    add_tiny_flag(parser)
    args = parser.parse_args(argv)
    if args.tiny:
        args.cases, args.min_seconds, args.rounds, args.profile_l1 = "tiny", 0.05, 2, True
    torch.set_num_threads(args.threads)
    results = []
    workdir = Path(tempfile.mkdtemp(prefix="evit-bench-"))
    try:
        for key in args.cases.split(","):
            result = run_case(key, args.threads, args.min_seconds, args.rounds, workdir, args.profile_l1 and key in ("l1", "b1", "tiny"))
            results.append(result)
            m = result["median_ms"]
            print(
                f"{key:8s} {result['input']:>10s}  eager {m['eager']:8.2f} ms  naive {m['naive']:8.2f} ms  "
                f"ours {m['ours']:8.2f} ms | ours/naive {result['ours_vs_naive']:.2f}x  ours/eager "
                f"{result['ours_vs_eager']:.2f}x  naive/eager {result['naive_vs_eager']:.2f}x | ms/MP ours "
                f"{result['ms_per_mp']['ours']:.1f} naive {result['ms_per_mp']['naive']:.1f} | max|ours-eager| "
                f"{result['max_abs_ours_vs_eager']:.1e}  export {result['export_s']:.1f}s",
                flush=True,
            )
            for label in ("op_profile_ours", "op_profile_naive"):
                if label in result:
                    print(f"  {label}: " + ", ".join(f"{op} {share:.0%}" for op, share in result[label]), flush=True)
        seg = {r["case"]: r for r in results if r["case"].startswith("seg")}
        if "seg512" in seg and "seg2048" in seg:
            drift = seg["seg2048"]["ms_per_mp"]["ours"] / seg["seg512"]["ms_per_mp"]["ours"] - 1
            print(f"ms/MP drift 512x512 -> 1024x2048 (ours): {drift:+.1%}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.save:
        args.save.write_text(json.dumps({"threads": args.threads, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
