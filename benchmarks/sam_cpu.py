"""EfficientViT-SAM on this x86 CPU, measured in one run: our encoder export against the reference
repository's, the prompt decoder per prompt size, and reduced precision on the trained tiny model.

    .venv/bin/python benchmarks/sam_cpu.py [--quick] [--sections encoder,decoder,precision]
        [--threads 2] [--json results.json] [--tiny]

1. encoder: L0@512 and XL0@1024 (random weights: speed only), the same weights exported twice and
   timed in turns on ONNX Runtime CPU. "reference" = the reference repository's
   deployment/onnx/export_encoder.py: its arithmetic (`set_formulation("textbook")`: token-first
   LiteMLA with a padded ones row, F.interpolate bicubic in the neck), plain torch.onnx.export
   (TorchScript), opset 17, constant folding, dynamic batch, no onnxslim, `input_image` ->
   `image_embeddings`. "ours" = `export_model(target="onnx")`: deploy formulation, onnxslim, its
   default opset (graph.default_opset; the table prints the one each graph has). Medians,
   reference/ours, max |diff|, ms per megapixel, and ONNX Runtime's per-op profile of both (share
   of kernel time per op type; "~ms" = share x median) beside each graph's op counts. XL0 costs
   seconds per run on 2 threads: warmup 1, 5 runs each, 3 profiled runs.
2. decoder: L0's prompt decoder (the same network for all five models) at 1, 4 and 16 points on
   ONNX Runtime and OpenVINO f32, all six taking turns in one run.
3. precision: efficientvit_sam_tiny@256 with its trained checkpoint (trained_sam.promptable_checkpoint,
   trained on first use, then cached), calibrated as benchmarks/sam_precision.py does (16 train
   digit mosaics), timed on a held-out mosaic: the encoder at INT8 and FP16 (each following its
   plan) against FP32 on ONNX Runtime in one run, then OpenVINO INT8 against f32 in another, with
   each export's parity against PyTorch (its manifest), its plan's node counts and the embedding's
   cosine to FP32; an export its parity gate refuses is listed as refused, untimed.
The CPU and the flags every figure depends on (avx512_vnni, avx512_bf16, AMX) are printed first
and saved with the results; runners taking turns do not spin and ONNX Runtime's workers are pinned.

Measured here (AMD EPYC, 2 cores shared with other jobs, load average ~4): `--quick` 3.0-4.2 min, the
full run 5.3-7.0 min, exports included, once the tiny checkpoint is cached (training it on the
first run took 29 min on the same busy host).
--tiny: efficientvit_sam_tiny with random weights in every section, a couple of runs each (a smoke
run of every section; an INT8/FP16 export its parity gate refuses is listed as refused).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

from evitdeploy.backends import runner_for
from evitdeploy.backends.onnxruntime.runner import OnnxRuntimeRunner
from evitdeploy.backends.promptable import artifact_models, decoder_bench_feed
from evitdeploy.data import load_inputs, preprocess
from evitdeploy.device.metrics import cosine_per_sample, time_turns
from evitdeploy.device.prompts import DECODER_INPUTS
from evitdeploy.errors import UserError
from evitdeploy.models import build_model, get_spec
from evitdeploy.models.trained_sam import promptable_checkpoint, promptable_data
from evitdeploy.precision.options import PrecisionOptions

from common import Exports, add_tiny_flag, cpu_facts, host_line, ort_op_profile, require

ENCODERS = {"l0": "efficientvit_sam_l0", "xl0": "efficientvit_sam_xl0"}
DECODER_OF = "l0"  # the decoder section's model (the prompt decoder is the same network for all five)
TINY = "efficientvit_sam_tiny"
TRAINED_TINY = True  # the precision section's weights (--tiny: random, no training on first use)
CALIBRATION_MOSAICS = 16
POINTS = (1, 4, 16)
REFERENCE_OPSET = 17  # export_encoder.py's default
# (warmup, runs per contender, profiled runs); XL0 at 1024 takes seconds per run on 2 threads
COUNTS = {
    "full": {"l0": (2, 20, 10), "xl0": (1, 5, 3), "decoder": (5, 50), "precision": (5, 50)},
    "quick": {"l0": (1, 5, 3), "decoder": (2, 10), "precision": (2, 10)},
    "tiny": {"tiny": (1, 2, 2), "decoder": (1, 2), "precision": (1, 2)},
}


def reference_export(model, spec, path: Path) -> None:
    """The reference's deployment/onnx/export_encoder.py, applied to our model in its textbook form."""
    import torch

    model.set_formulation("textbook")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (torch.randn(spec.input_shape),),
                str(path),
                dynamo=False,
                export_params=True,
                opset_version=REFERENCE_OPSET,
                do_constant_folding=True,
                input_names=["input_image"],
                output_names=["image_embeddings"],
                dynamic_axes={"input_image": {0: "batch_size"}},
            )
    finally:
        model.set_formulation("deploy")


def op_counts(path: Path) -> Counter:
    import onnx

    return Counter(node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node)


def turn_runner(path: Path, threads: int) -> OnnxRuntimeRunner:
    """An ONNX Runtime session fit to take turns with another on the same cores."""
    return OnnxRuntimeRunner(path, threads=threads, spinning=False, pin_threads=True)


def sample_image(spec) -> np.ndarray:
    return load_inputs(spec, spec.height, spec.width, None, count=1)[0][:1]


def encoder_case(key: str, exports: Exports, scratch: Path, threads: int, counts: tuple) -> dict:
    warmup, count, profiled = counts
    name = ENCODERS[key]
    print(f"{name} @ {get_spec(name).height}: reference export vs ours, ONNX Runtime CPU", flush=True)
    ours = exports.artifact(name, "onnx", "fp32")
    model, spec = build_model(get_spec(name))  # seed 0: the weights the export drew (max |diff| below proves it)
    reference_path = scratch / f"{key}-reference.onnx"
    reference_export(model, spec, reference_path)
    x = sample_image(spec)
    feeds = {"reference": (reference_path, {"input_image": x}), "ours": (ours.model_file, {spec.input_name: x})}
    with turn_runner(reference_path, threads) as reference, turn_runner(ours.model_file, threads) as mine:
        out = {"reference": reference.infer(feeds["reference"][1])["image_embeddings"], "ours": mine.infer(feeds["ours"][1])[spec.output_name]}
        samples = time_turns([lambda: reference.infer(feeds["reference"][1]), lambda: mine.infer(feeds["ours"][1])], warmup=warmup, count=count)
    medians = dict(zip(feeds, (float(np.median(s)) for s in samples)))
    megapixels = spec.height * spec.width / 1e6
    profiles, counted = {}, {}
    for label, (path, feed) in feeds.items():
        shares = ort_op_profile(Path(path), feed, threads, runs=profiled)
        profiles[label] = [{"op": op, "share": round(share, 4), "approx_ms": round(share * medians[label], 2)} for op, share in shares]
        counted[label] = dict(op_counts(Path(path)).most_common())
    return {
        "model": name,
        "input": f"{spec.height}x{spec.width}",
        "warmup": warmup,
        "runs": count,
        "profiled_runs": profiled,
        "opset": {"reference": REFERENCE_OPSET, "ours": ours.manifest["export"]["opset"]},
        "median_ms": medians,
        "reference_over_ours": medians["reference"] / medians["ours"],
        "ms_per_megapixel": {label: m / megapixels for label, m in medians.items()},
        "max_abs_diff": float(np.abs(out["reference"] - out["ours"]).max()),
        "op_profile": profiles,
        "op_counts": counted,
    }


def decoder_section(exports: Exports, threads: int, counts: tuple) -> dict:
    warmup, count = counts
    name = ENCODERS[DECODER_OF]
    print(f"{name} prompt decoder: ONNX Runtime vs OpenVINO at {', '.join(map(str, POINTS))} points", flush=True)
    pairs = {"onnxruntime": artifact_models(exports.artifact(name, "onnx", "fp32")), "openvino": artifact_models(exports.artifact(name, "openvino", "fp32"))}
    spec = pairs["onnxruntime"]["encoder"].spec
    with runner_for(pairs["onnxruntime"]["encoder"], threads) as encoder:
        embedding = encoder.infer({spec.input_name: sample_image(spec)})[spec.output_name]
    feeds = {points: {k: v for k, v in decoder_bench_feed(spec, embedding, points).items() if k in DECODER_INPUTS} for points in POINTS}
    with contextlib.ExitStack() as stack:
        decoders = {runtime: stack.enter_context(runner_for(models["decoder"], threads, taking_turns=True)) for runtime, models in pairs.items()}
        labels = [(runtime, points) for runtime in decoders for points in POINTS]
        samples = time_turns([lambda r=runtime, p=points: decoders[r].infer(feeds[p]) for runtime, points in labels], warmup=warmup, count=count)
    medians = {f"{runtime} {points}pt": float(np.median(s)) for (runtime, points), s in zip(labels, samples)}
    return {
        "model": name,
        "warmup": warmup,
        "runs": count,
        "median_ms": medians,
        "onnxruntime_over_openvino": {points: medians[f"onnxruntime {points}pt"] / medians[f"openvino {points}pt"] for points in POINTS},
        "openvino_precision": pairs["openvino"]["decoder"].manifest["export"]["openvino"]["inference_precision"],
    }


def tiny_checkpoint():
    """The trained tiny reference's weights: trained on first use, then cached (None: random weights)."""
    if not TRAINED_TINY:
        return None
    started = time.perf_counter()
    path = promptable_checkpoint()
    print(f"  trained checkpoint {path.name}: {time.perf_counter() - started:.0f} s", flush=True)
    return path


def parity_summary(artifact) -> dict:
    """The export's own parity against PyTorch (its manifest's validation), numbers only."""
    checks = artifact.manifest.get("validation", {}).get("checks") or [{}]
    return {k: v for k, v in checks[0].get("metrics", {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def precision_section(exports: Exports, scratch: Path, threads: int, counts: tuple) -> dict:
    warmup, count = counts
    print(f"{TINY} @ 256: INT8 and FP16 (planned) against FP32, encoder", flush=True)
    checkpoint = tiny_checkpoint()
    calibration = scratch / "mosaics_sam_256_train.npz"  # benchmarks/sam_precision.py's calibration images
    np.savez(calibration, image=promptable_data(CALIBRATION_MOSAICS, seed=3, split="train")[0])
    reduced = PrecisionOptions(calib=str(calibration))
    spec = exports.artifact(TINY, "onnx", "fp32", checkpoint=checkpoint).spec
    x = preprocess(list(promptable_data(1, seed=7, split="test")[0]), spec, spec.height, width=spec.width)  # a held-out mosaic
    results = {
        "model": TINY,
        "weights": checkpoint.name if checkpoint else "random",
        "warmup": warmup,
        "runs": count,
        "calibration": f"{CALIBRATION_MOSAICS} train digit mosaics (seed 3)",
    }
    for target, precisions in (("onnx", ("fp32", "int8", "fp16")), ("openvino", ("fp32", "int8"))):
        rows, runners = {}, {}
        for precision in precisions:
            try:
                artifact = exports.artifact(TINY, target, precision, checkpoint=checkpoint, reduced=reduced if precision != "fp32" else PrecisionOptions())
            except UserError as refused:  # the export's parity gate: nothing to time, the refusal is the result
                if precision == "fp32":
                    raise
                print(f"  export {target} {precision} refused: {refused.message}", flush=True)
                rows[precision] = {"export": f"refused: {refused.message}"}
                continue
            recorded = artifact.manifest.get("export", {}).get("openvino", {}).get("inference_precision")
            rows[precision] = {
                "export": "passed its parity gate",
                "inference_precision": recorded,
                "parity_vs_pytorch": parity_summary(artifact),
                "plan_nodes": artifact.manifest.get("precision_plan", {}).get("summary", {}).get("nodes"),
            }
            runners[precision] = runner_for(artifact_models(artifact)["encoder"], threads, taking_turns=True)
        with contextlib.ExitStack() as stack:
            encoders = {p: stack.enter_context(r) for p, r in runners.items()}
            embeddings = {p: r.infer({spec.input_name: x})[spec.output_name] for p, r in encoders.items()}
            samples = time_turns([lambda r=r: r.infer({spec.input_name: x}) for r in encoders.values()], warmup=warmup, count=count)
        medians = {p: float(np.median(s)) for p, s in zip(encoders, samples)}
        for precision in encoders:
            rows[precision].update(
                median_ms=medians[precision],
                x_fp32=medians["fp32"] / medians[precision],
                embedding_cosine_vs_fp32=float(cosine_per_sample(embeddings["fp32"], embeddings[precision]).min()),
            )
        results[target] = rows
    return results


def render(results: dict) -> None:
    """The tables, after everything is measured (progress lines came before)."""
    print()
    for case in results.get("encoder", {}).values():
        m = case["median_ms"]
        print(
            f"## Encoder {case['model']} @ {case['input']}, ONNX Runtime CPU, {results['threads']} threads, "
            f"warmup {case['warmup']} + {case['runs']} runs each, taking turns"
        )
        print(f"  {'':10s} {'opset':>5s} {'median ms':>10s} {'ms/MP':>8s}")
        for label in ("reference", "ours"):
            print(f"  {label:10s} {case['opset'][label]:5d} {m[label]:10.1f} {case['ms_per_megapixel'][label]:8.1f}")
        print(f"  reference/ours {case['reference_over_ours']:.2f}x   max |reference - ours| {case['max_abs_diff']:.1e}")
        print(f"  ORT profile ({case['profiled_runs']} runs; share of kernel time, ~ms = share x median; [nodes in graph]):")
        for label in ("reference", "ours"):
            counted = case["op_counts"][label]
            top = ", ".join(f"{r['op']} {100 * r['share']:.0f}% ~{r['approx_ms']:.0f}ms [{counted.get(r['op'], '?')}]" for r in case["op_profile"][label][:7])
            print(f"    {label:10s} {top}")
        for op in ("Transpose", "Pad", "Resize", "Reshape", "Concat"):
            cells = []
            for label in ("reference", "ours"):
                timed = next((r for r in case["op_profile"][label] if r["op"] == op), {"share": 0.0, "approx_ms": 0.0})
                cells.append(f"{label} {case['op_counts'][label].get(op, 0):3d} nodes {100 * timed['share']:4.1f}% ~{timed['approx_ms']:5.1f}ms")
            print(f"    {op:10s} " + "   ".join(cells))
        print()
    if results.get("encoder"):
        print(
            "## Encoder ms per megapixel, FP32 on ONNX Runtime (ours): "
            + ", ".join(f"{case['model']} @ {case['input']} {case['ms_per_megapixel']['ours']:.0f}" for case in results["encoder"].values())
        )
        print()
    if "decoder" in results:
        d = results["decoder"]
        print(f"## Prompt decoder ({d['model']}), {results['threads']} threads, warmup {d['warmup']} + {d['runs']} runs each, six taking turns")
        print(f"  {'points':>6s} {'ORT ms':>8s} {'OV ms':>8s} {'ORT/OV':>7s}")
        for points in POINTS:
            m = d["median_ms"]
            print(f"  {points:6d} {m[f'onnxruntime {points}pt']:8.2f} {m[f'openvino {points}pt']:8.2f} {d['onnxruntime_over_openvino'][points]:6.2f}x")
        print()
    if "precision" in results:
        p = results["precision"]
        print(
            f"## {p['model']} encoder @ 256 ({p['weights']}), {results['threads']} threads, warmup {p['warmup']} + {p['runs']} runs each, "
            "taking turns per runtime"
        )
        print(f"  {'runtime':10s} {'precision':12s} {'median ms':>10s} {'x FP32':>7s} {'cos vs FP32':>11s}  {'plan (nodes)':22s} export (parity vs PyTorch)")
        for target in ("onnx", "openvino"):
            for precision, row in p[target].items():
                if "median_ms" not in row:
                    print(f"  {target:10s} {precision:12s} {'-':>10s} {'-':>7s} {'-':>11s}  {'-':22s} {row['export']}")
                    continue
                shown = f"{precision} ({row['inference_precision']})" if row["inference_precision"] else precision
                parity = ", ".join(f"{k} {v:.4g}" for k, v in row["parity_vs_pytorch"].items() if k in ("mask_iou_min", "low_res_cosine_min"))
                nodes = " ".join(f"{k} {v}" for k, v in (row["plan_nodes"] or {}).items()) or "-"
                print(
                    f"  {target:10s} {shown:12s} {row['median_ms']:10.2f} {row['x_fp32']:6.2f}x {row['embedding_cosine_vs_fp32']:11.5f}  "
                    f"{nodes:22s} {row['export']}{f' ({parity})' if parity else ''}"
                )
        print()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="L0 and tiny only, few runs: a smoke run of every section")
    parser.add_argument("--sections", default="encoder,decoder,precision")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write every figure, the host and its CPU flags here")
    add_tiny_flag(parser)
    args = parser.parse_args(argv)
    require(("openvino",), "the openvino extra: pip install -e '.[openvino]'", args.tiny)
    import torch

    if args.tiny:
        global ENCODERS, DECODER_OF, TRAINED_TINY, CALIBRATION_MOSAICS
        ENCODERS, DECODER_OF, TRAINED_TINY, CALIBRATION_MOSAICS = {"tiny": TINY}, "tiny", False, 2
    torch.set_num_threads(args.threads)
    counts = COUNTS["tiny" if args.tiny else "quick" if args.quick else "full"]
    started = time.perf_counter()
    facts = cpu_facts(args.threads)
    print(f"{host_line(facts)}; {args.threads} threads", flush=True)
    results = {"host": facts, "threads": args.threads, "quick": args.quick}
    with tempfile.TemporaryDirectory(prefix="evitdeploy-sambench-") as scratch:
        exports = Exports(Path(scratch), announce=True)
        if "encoder" in args.sections:
            results["encoder"] = {key: encoder_case(key, exports, Path(scratch), args.threads, counts[key]) for key in ENCODERS if key in counts}
        if "decoder" in args.sections:
            results["decoder"] = decoder_section(exports, args.threads, counts["decoder"])
        if "precision" in args.sections:
            results["precision"] = precision_section(exports, Path(scratch), args.threads, counts["precision"])
    results["wall_s"] = time.perf_counter() - started
    results["load_average_1m_end"] = cpu_facts(args.threads)["load_average_1m"]
    render(results)
    print(f"total {results['wall_s'] / 60:.1f} min; load average {facts['load_average_1m']:.1f} at start, {results['load_average_1m_end']:.1f} at end")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
