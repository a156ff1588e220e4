"""The GPU checks in one command, for a host with an NVIDIA GPU (TensorRT optional): FP16 numerics of
the precision plan on CUDA, PyTorch latency, and TensorRT engines where TensorRT imports.

    python benchmarks/gpu_trt.py [--families b0,b1] [--height 1024 --width 2048] [--device cuda]
        [--sections numerics,torch_latency,tensorrt] [--orin-scale X] [--save results.json] [--tiny]

1. numerics: the trained digit-mosaic segmenters (Seg-B0 and Seg-B1, 11 classes, see
   evitdeploy.models.trained) at Cityscapes resolution, FP16 in PyTorch on the device: plain FP16
   (every op FP16, as a bare `trtexec --fp16` runs the exported graph) against the precision plan
   (the plan's FP32 modules kept FP32, what the TensorRT build pins under "obey"), both compared
   with FP32 on the same device: NaN/Inf, pixel agreement, cosine, mIoU on the mosaics' labels.
2. torch_latency: PyTorch eager FP32 vs plan-FP16 on the device, CUDA events around each forward
   after a warm-up (median/p90/p99). Not TensorRT: a floor for what an engine should beat.
3. tensorrt: `evitdeploy export -t trt` FP16 and INT8 of the trained segmenter (the typed graphs
   TensorRT >= 10 builds strongly typed). Where TensorRT
   imports (and on CUDA): engines (plan pinned, TensorRT-scheme QDQ), parity against FP32 PyTorch
   and GPU compute time from CUDA events like trtexec's, next to the published Jetson AGX Orin
   figure (TensorRT FP16, batch 1); `--orin-scale` is how many times faster than an AGX Orin this
   GPU is taken to be (no default: choose it from your own trtexec runs of a reference model);
   without it the raw ratio is printed. Without TensorRT: the device recipes and their estimates
   here (the FP16 storage check; the INT8 QDQ ONNX in the TensorRT scheme on ONNX Runtime CPU).

4. sam_numerics: the trained promptable model's encoder, plain FP16 and plan FP16 in PyTorch on the
   device against FP32 (NaN/Inf, cosine of the image embeddings); once, not per family.
At the end, one Markdown table of the numerics (each model, plain vs plan FP16).

Runs on a CPU too (`--device cpu --height 256 --width 512`) to check the script itself; the
plans are made on the CPU with ONNX Runtime either way (ranges at the measured resolution).
--tiny: Seg-B0 at 64x128, one test mosaic, a few timed runs, on CUDA where one is visible, else on
the CPU (a smoke run of every section; engines only with TensorRT on CUDA).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import add_tiny_flag

# TensorRT FP16, batch 1, data transfer included: mit-han-lab/efficientvit,
# applications/efficientvit_seg/README.md ("Jetson Orin" column, 1024x2048 Cityscapes).
PUBLISHED_AGX_ORIN_MS = {"b0": 9.9, "b1": 24.3, "b2": 46.5, "b3": 81.8}
SECTIONS = ("numerics", "torch_latency", "tensorrt", "sam_numerics")  # sam_numerics: once, not per family


def mosaic_data(height: int, width: int, count: int, split: str, seed: int):
    from evitdeploy.data import preprocess
    from evitdeploy.models import trained

    photos, labels = trained.digit_mosaics(count, height, width, seed=seed, split=split)
    return photos, preprocess(list(photos), trained.mosaic_spec(height, width), height, width), labels


PLANS: dict = {}


def make_plan(family: str, height: int, width: int, work: Path):
    """The trained segmenter's checkpoint, its FP16 plan at this resolution (ranges measured on two
    training mosaics) and the largest |tensor| FP32 reaches; made once per family."""
    from evitdeploy import api
    from evitdeploy.precision.plan import PrecisionPlan
    from evitdeploy.precision.options import PrecisionOptions
    from evitdeploy.models import trained
    from evitdeploy.requests import PlanRequest

    if family not in PLANS:
        checkpoint = trained.mosaic_checkpoint(family=family, progress=lambda s: print(f"… {s}", flush=True))
        photos, _, _ = mosaic_data(height, width, 2, "train", 3)
        np.savez(work / f"calib_{family}.npz", image=photos)
        started = time.perf_counter()
        made = api.plan_model(
            PlanRequest(
                model=f"efficientvit_seg_{family}_cityscapes",
                precision="fp16",
                checkpoint=checkpoint,
                height=height,
                width=width,
                reduced=PrecisionOptions(calib=str(work / f"calib_{family}.npz"), calib_count=2),
            ),
        )
        largest = max(r["absmax"] for r in made.pop("ranges")["tensors"].values())
        PLANS[family] = (checkpoint, PrecisionPlan.from_dict(made), largest, round(time.perf_counter() - started, 1))
    return PLANS[family]


def numerics(family: str, args, work: Path) -> dict:
    from evitdeploy.precision.torch_plan import fp16_numerics
    from evitdeploy.models import build_model, trained

    checkpoint, plan, largest, plan_s = make_plan(family, args.height, args.width, work)
    model, spec = build_model(trained.mosaic_spec(args.height, args.width, family), checkpoint, 0, None)
    _, inputs, labels = mosaic_data(args.height, args.width, args.images, "test", 4)
    result = fp16_numerics(model, spec, plan, inputs, args.device)
    summary = {"largest_tensor_absmax_fp32": largest, "plan_s": round(plan_s, 1)}
    for label, out in result["outputs"].items():
        entry = dict(result["reports"][label]["metrics"]) if label in result["reports"] else {}
        entry["labels_miou"] = trained.segmentation_scores(np.nan_to_num(out), labels)["miou"]
        if label in result["reports"]:
            entry["fp32_modules"] = result["reports"][label]["fp32_modules"]
            entry["passed_fp16_tolerances"] = result["reports"][label]["passed"]
        summary[label] = entry
    return summary


def sam_numerics(args, work: Path) -> dict:
    """The trained promptable model's encoder (efficientvit_sam_tiny on digit mosaics, what the
    typed FP16 encoder.onnx computes): FP32 against plain FP16 and the plan's FP16 in PyTorch on
    the device, on held-out mosaics: NaN/Inf and cosine of the image embeddings the decoder reads."""
    import copy

    import torch

    from evitdeploy import api
    from evitdeploy.data import preprocess
    from evitdeploy.models import build_model
    from evitdeploy.models.trained_sam import promptable_checkpoint, promptable_data, promptable_spec
    from evitdeploy.precision.options import PrecisionOptions
    from evitdeploy.precision.plan import PrecisionPlan
    from evitdeploy.precision.torch_plan import half_following, run_half
    from evitdeploy.requests import PlanRequest

    checkpoint = None if args.tiny else promptable_checkpoint(progress=lambda s: print(f"… {s}", flush=True))
    model, spec = build_model(promptable_spec(), checkpoint)
    calib, _, _ = promptable_data(2, seed=3, split="train")
    np.savez(work / "sam_calib.npz", image=calib)
    plan = PrecisionPlan.from_dict(
        api.plan_model(
            PlanRequest(
                model=spec.name,
                precision="fp16",
                checkpoint=checkpoint,
                reduced=PrecisionOptions(calib=str(work / "sam_calib.npz"), calib_count=2),
            )
        )
    )
    photos, _, _ = promptable_data(max(args.images, 2), seed=7, split="test")
    inputs = preprocess(list(photos), spec, spec.height, width=spec.width)
    model = model.eval().to(args.device)
    with torch.inference_mode():
        reference = np.concatenate([model(torch.from_numpy(inputs[i : i + 1]).to(args.device)).float().cpu().numpy() for i in range(len(inputs))])
    summary = {"model": "trained promptable efficientvit_sam_tiny encoder (image embeddings)", "images": len(inputs)}
    for label, chosen in (("plain", None), ("plan", plan)):
        half = copy.deepcopy(model)
        kept = half_following(half, chosen)
        out = run_half(half, inputs, args.device)
        flat, ref = out.reshape(len(out), -1).astype(np.float64), reference.reshape(len(reference), -1).astype(np.float64)
        finite = np.isfinite(flat).all(axis=1)
        cosine = np.where(finite, (flat * ref).sum(1) / (np.linalg.norm(flat, axis=1) * np.linalg.norm(ref, axis=1) + 1e-30), -1.0)
        summary[label] = {"nonfinite_outputs": int((~np.isfinite(out)).sum()), "cosine_min": float(cosine.min()), "fp32_modules": len(kept["fp32_modules"])}
    return summary


def table(results: dict) -> str:
    """The numerics in one Markdown table: each model's plain FP16 and plan FP16 against FP32 on the device."""
    rows = ["| model | FP16 | NaN/Inf | min cosine | pixel agreement | mIoU (labels) | FP32 modules |", "|---|---|---:|---:|---:|---:|---:|"]
    for key, entry in results.items():
        if not key.startswith(("numerics", "sam_numerics")):
            continue
        for label in ("plain", "plan"):
            found = entry.get(label, {})
            cells = [found.get("nonfinite_outputs"), found.get("cosine_min"), found.get("pixel_agreement"), found.get("labels_miou"), found.get("fp32_modules")]
            shown = ["-" if v is None else (f"{v:.6f}" if isinstance(v, float) else str(v)) for v in cells]
            rows.append(f"| {key} | {label} | " + " | ".join(shown) + " |")
    return "\n".join(rows)


def timed(forward, x, device: str, warmup: int, count: int) -> list[float]:
    """ms per forward: CUDA events on a GPU (GPU time, as trtexec reports), else the wall clock."""
    import torch

    from evitdeploy.backends.tensorrt.runtime import cuda_times_ms
    from evitdeploy.device.metrics import time_model

    with torch.inference_mode():
        if device.startswith("cuda"):
            return cuda_times_ms(lambda: forward(x), warmup, count)
        return time_model(forward, x, warmup, count)


def torch_latency(family: str, args, work: Path) -> dict:
    """FP32 and plan-FP16 PyTorch eager, alternating in rounds so drift hits both alike."""
    import copy

    import torch

    from evitdeploy.precision.torch_plan import half_following
    from evitdeploy.device.metrics import latency_stats
    from evitdeploy.models import build_model, trained

    checkpoint, plan, _, _ = make_plan(family, args.height, args.width, work)
    model, _ = build_model(trained.mosaic_spec(args.height, args.width, family), checkpoint, 0, None)
    model = model.eval().to(args.device)
    half = copy.deepcopy(model)
    half_following(half, plan)
    x = torch.randn(1, 3, args.height, args.width, device=args.device)
    variants = {"fp32": (model, x), "plan fp16": (half, x.half())}
    samples = {label: [] for label in variants}
    for _ in range(args.rounds):
        for label, (net, feed) in variants.items():
            samples[label] += timed(net, feed, args.device, args.warmup, args.count // args.rounds)
    stats = {label: latency_stats(times) for label, times in samples.items()}
    return {
        "model": f"trained mosaic Seg-{family.upper()} (11 classes)",
        "timer": "CUDA events" if args.device.startswith("cuda") else "wall clock",
        # PyTorch's default: "fp32" convolutions on CUDA may run as TF32 (cuDNN), as TensorRT's FP32 may
        "tf32_convolutions": bool(torch.backends.cudnn.allow_tf32) if args.device.startswith("cuda") else None,
        **stats,
        "fp16_speedup": stats["fp32"]["median_ms"] / stats["plan fp16"]["median_ms"],
    }


def tensorrt(family: str, args, work: Path) -> dict:
    """FP16 and INT8 of the trained segmenter through evitdeploy's own TensorRT exporter: with
    TensorRT, engines (parity against FP32 PyTorch, GPU compute time); without it, the device
    recipes and their numerics estimates on this CPU (the FP16 storage check; the INT8 QDQ ONNX in
    the TensorRT scheme run by ONNX Runtime)."""
    from evitdeploy import api
    from evitdeploy.device.metrics import compare_outputs, latency_stats
    from evitdeploy.precision.options import PrecisionOptions
    from evitdeploy.precision.evaluate import outputs_of
    from evitdeploy.requests import ExportRequest
    from evitdeploy.backends.tensorrt.runtime import hasattr_builder
    from evitdeploy.backends.tensorrt.plan import ENGINE_FILE
    from evitdeploy.models import build_model, trained

    engines = hasattr_builder() and args.device.startswith("cuda")
    import torch

    checkpoint = trained.mosaic_checkpoint(family=family)
    photos, _, _ = mosaic_data(args.height, args.width, 4, "train", 3)
    np.savez(work / "calib_trt.npz", image=photos)
    model, spec = build_model(trained.mosaic_spec(args.height, args.width, family), checkpoint, 0, None)
    _, inputs, labels = mosaic_data(args.height, args.width, args.images, "test", 4)
    with torch.inference_mode():
        model = model.eval().to(args.device)
        reference = np.concatenate([model(torch.from_numpy(inputs[i : i + 1]).to(args.device)).cpu().numpy() for i in range(len(inputs))])
    result = {"engines": engines, "published_agx_orin_fp16_ms": PUBLISHED_AGX_ORIN_MS.get(family)}
    for precision in ("fp16", "int8"):
        started = time.perf_counter()
        artifact = api.export_model(
            ExportRequest(
                model=f"efficientvit_seg_{family}_cityscapes",
                target="trt",
                precision=precision,
                output=work / f"trt_{family}_{precision}",
                checkpoint=checkpoint,
                height=args.height,
                width=args.width,
                backend_options={"engine": engines},
                reduced=PrecisionOptions(calib=str(work / "calib_trt.npz"), calib_count=4),
            ),
        )
        entry = {"export_s": round(time.perf_counter() - started, 1)}
        if engines:
            from evitdeploy.backends.tensorrt.runner import TensorRTRunner

            with TensorRTRunner(artifact.folder / ENGINE_FILE, artifact.spec, artifact.manifest) as runner:
                outputs = np.concatenate([runner.infer({spec.input_name: inputs[i : i + 1]})[spec.output_name] for i in range(len(inputs))])
                entry["gpu_compute"] = latency_stats(runner.gpu_times_ms(inputs[:1], warmup=args.warmup, count=args.count))
            entry["engine"] = artifact.manifest["export"]["engine"]
            published = PUBLISHED_AGX_ORIN_MS.get(family)
            if published and precision == "fp16":
                entry["agx_orin_ms_over_measured"] = published / entry["gpu_compute"]["median_ms"]
                if args.orin_scale:
                    entry["measured_over_scaled_published"] = entry["gpu_compute"]["median_ms"] / (published / args.orin_scale)
        elif precision == "int8":
            entry["estimate"] = "the TensorRT-scheme QDQ ONNX (what the device builds from) on ONNX Runtime CPU"
            outputs = outputs_of(artifact.model_file, inputs, spec.input_name)
        else:
            entry["estimate"] = "the recipe's FP16 storage check (every tensor an FP16 layer writes rounded to FP16)"
            entry["fp16_storage_check"] = artifact.manifest["precision_plan"]["fp16_storage_check"]
            outputs = None
        if outputs is not None:
            parity = compare_outputs("segmentation", reference, outputs, {"min_cosine": 0.99, "min_pixel_agreement": 0.99})
            entry.update(parity=parity, labels_miou=trained.segmentation_scores(np.nan_to_num(outputs), labels)["miou"])
        entry["fp32_labels_miou"] = trained.segmentation_scores(reference, labels)["miou"]
        result[precision] = entry
    if engines:
        result["int8_speedup_over_fp16"] = result["fp16"]["gpu_compute"]["median_ms"] / result["int8"]["gpu_compute"]["median_ms"]
    return result


def environment(device: str) -> dict:
    import torch

    from evitdeploy.backends.tensorrt.runtime import hasattr_builder

    info = {"torch": torch.__version__, "device": device, "tensorrt": None}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
        info["compute_capability"] = ".".join(map(str, torch.cuda.get_device_capability()))
    if hasattr_builder():
        import tensorrt

        info["tensorrt"] = tensorrt.__version__
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default="b0,b1")
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--images", type=int, default=2, help="test mosaics for the numerics (default 2)")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--orin-scale", type=float, help="how many times faster than a Jetson AGX Orin this GPU is taken to be")
    parser.add_argument("--save", type=Path)
    add_tiny_flag(parser)
    args = parser.parse_args()
    if args.tiny:
        import torch

        args.families, args.height, args.width, args.images, args.warmup, args.count, args.rounds = "b0", 64, 128, 1, 1, 4, 2
        args.device = args.device if torch.cuda.is_available() else "cpu"
    chosen = [s.strip() for s in args.sections.split(",") if s.strip()]
    if any(s not in SECTIONS for s in chosen):
        sys.exit(f"unknown section in {args.sections!r}; choose from {', '.join(SECTIONS)}")
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("no CUDA GPU is visible; pass --device cpu (with a smaller --height/--width) to check the script")
    results = {"environment": environment(args.device), "resolution": [args.height, args.width]}
    print(json.dumps(results, indent=2), flush=True)
    with tempfile.TemporaryDirectory(prefix="evitdeploy-gpu-") as scratch:
        if "sam_numerics" in chosen:
            started = time.perf_counter()
            results["sam_numerics"] = {**sam_numerics(args, Path(scratch)), "section_s": round(time.perf_counter() - started, 1)}
            print(json.dumps({"sam_numerics": results["sam_numerics"]}, indent=2, default=float), flush=True)
        for family in [f.strip() for f in args.families.split(",") if f.strip()]:
            for section in (s for s in chosen if s != "sam_numerics"):
                started = time.perf_counter()
                entry = globals()[section](family, args, Path(scratch))
                entry["section_s"] = round(time.perf_counter() - started, 1)
                results[f"{section} {family}"] = entry
                print(json.dumps({f"{section} {family}": entry}, indent=2, default=float), flush=True)
    print(table(results), flush=True)
    if args.save:
        args.save.write_text(json.dumps(results, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
