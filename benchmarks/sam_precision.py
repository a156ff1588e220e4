"""EfficientViT-SAM's trained reference under reduced precision, in one run: what FP16 and INT8 do
to its masks, with and without the plan, on ONNX Runtime and OpenVINO (accuracy; speed is
benchmarks/sam_cpu.py's).

    .venv/bin/python benchmarks/sam_precision.py [--images 12] [--threads 2] [--save results.json] [--tiny]

The model: `efficientvit_sam_tiny` trained on digit mosaics (evitdeploy.models.trained_sam; cached
after its first ~3 minutes). Held-out "test" mosaics, every digit prompted four ways (a point, two
points, a point + a background point, its box). Each contender is an encoder + decoder pair run on
every prompt; against PyTorch FP32 (the reference): min / mean mask IoU of the thresholded
low-res logits, IoU-prediction max error, NaN/Inf; against the ground truth: the mean IoU of the
mask the decoder rates best (upscaled to the image, as `predict` shows it).

Contenders (the decoder is FP32 in every one: the plans cover the encoder):
- ort fp32: `export --precision fp32`
- ort fp16 plan: `export --precision fp16` (its FP16 storage check, planned vs plain, is printed too)
- ort fp16 plain: onnxruntime's convert_float_to_float16 of the same FP32 encoder, no block list
- ort int8 plan: `export --precision int8`
- ort int8 naive: onnxruntime.quantization.quantize_static of the FP32 encoder (QDQ, per-channel,
  every op type), the same calibration images
- ov f32 / ov int8 plan: `export --target openvino`
- ov int8 NNCF default: nncf.quantize of the FP32 encoder's IR, the same calibration images

--tiny: random weights (no training on first use), 1 held-out mosaic, 2 calibration mosaics (a
smoke run of every contender; its IoUs mean nothing).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from evitdeploy.backends import runner_for
from evitdeploy.backends.promptable import artifact_models, runner_pair
from evitdeploy.backends.torch.runner import TorchDecoderRunner, TorchRunner
from evitdeploy.data import preprocess
from evitdeploy.device.prompts import MASK_THRESHOLD, decoder_feed, masks_for_image, prompted_outputs, promptable_metrics, shown_per_prompt
from evitdeploy.models import build_model
from evitdeploy.models.trained_sam import promptable_checkpoint, promptable_data, promptable_spec
from evitdeploy.precision.options import PrecisionOptions

from common import Exports, add_tiny_flag, cpu_facts, host_line, nncf_default, require


def export(exports: Exports, target: str, precision: str, checkpoint, calib: Path):
    reduced = PrecisionOptions(calib=str(calib)) if precision != "fp32" else PrecisionOptions()
    return exports.artifact("efficientvit_sam_tiny", target, precision, checkpoint=checkpoint, reduced=reduced)


def pair_of(artifact, threads: int):
    models = artifact_models(artifact)
    encoder, decoder = runner_for(models["encoder"], threads), runner_for(models["decoder"], threads)
    encoder.load()
    decoder.load()
    return runner_pair(encoder, decoder, artifact.spec)


def onnx_encoder_pair(encoder_path: Path, decoder_artifact, threads: int):
    """Our ONNX runner on another encoder file, the FP32 artifact's decoder."""
    from evitdeploy.backends.onnxruntime.runner import OnnxRuntimeRunner

    encoder = OnnxRuntimeRunner(encoder_path, threads=threads)
    encoder.load()
    _, decode = pair_of(decoder_artifact, threads)
    return runner_pair(encoder, None, decoder_artifact.spec)[0], decode


def ir_encoder_pair(ir_folder: Path, decoder_artifact, threads: int):
    """An OpenVINO IR encoder compiled as our runner compiles (f32), the OpenVINO FP32 artifact's decoder."""
    from evitdeploy.backends.openvino.runner import OpenVINORunner

    encoder = OpenVINORunner(ir_folder, decoder_artifact.spec, decoder_artifact.manifest, threads=threads)
    encoder.load()
    _, decode = pair_of(decoder_artifact, threads)
    return runner_pair(encoder, None, decoder_artifact.spec)[0], decode


def scores(name: str, outputs: dict, reference: dict, truth: list, *, feeds: list) -> dict:
    """Against PyTorch FP32 and against the ground truth: the mask SAM's conventions show for each
    prompt (a point: the best-rated multimask output; a box or several points: the single one),
    upscaled to the image."""
    metrics = promptable_metrics(reference, outputs, shown=shown_per_prompt(feeds, reference["iou_predictions"]))
    best = shown_per_prompt(feeds, outputs["iou_predictions"])
    chosen = outputs["low_res_masks"][np.arange(len(best)), best]
    ious = []
    for logits, mask in zip(chosen, truth):
        shown = masks_for_image(logits[None], mask.shape, frame=mask.shape[0])[0] > MASK_THRESHOLD
        union = np.logical_or(shown, mask).sum()
        ious.append(np.logical_and(shown, mask).sum() / union if union else 1.0)
    row = {
        "contender": name,
        "mask_iou_vs_fp32_min": metrics["mask_iou_min"],
        "mask_iou_vs_fp32_mean": metrics["mask_iou_mean"],
        "iou_prediction_max_error": metrics["iou_prediction_max_error"],
        "nonfinite": metrics["nonfinite_outputs"],
        "gt_iou_mean": float(np.mean(ious)),
    }
    print(
        f"  {name:<22} mask IoU vs FP32 min {row['mask_iou_vs_fp32_min']:.4f} mean {row['mask_iou_vs_fp32_mean']:.4f}  "
        f"IoU-pred err {row['iou_prediction_max_error']:.4f}  NaN/Inf {row['nonfinite']}  GT IoU {row['gt_iou_mean']:.4f}",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=12, help="held-out mosaics (each with ~7 digits x 4 prompts)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--save", type=Path, default=None)
    add_tiny_flag(parser)
    args = parser.parse_args()
    require(("openvino",), "the openvino extra: pip install -e '.[openvino]'", args.tiny)
    if args.tiny:
        args.images = 1
    started = time.perf_counter()
    host = cpu_facts(args.threads)
    print(host_line(host), flush=True)
    checkpoint = None if args.tiny else promptable_checkpoint(progress=lambda s: print(f"  {s}", flush=True))
    model, spec = build_model(promptable_spec(), checkpoint)
    photos, prompts, truth = promptable_data(args.images, seed=7, split="test")
    inputs = preprocess(list(photos), spec, spec.height, width=spec.width)
    feeds = [(i, decoder_feed(p, photos.shape[1:3], frame=spec.prompt_frame, embedding=spec.embedding)) for i, ps in enumerate(prompts) for p in ps]
    masks = [m for per_image in truth for m in per_image]
    print(f"{len(photos)} held-out mosaics, {len(feeds)} prompts", flush=True)
    model.set_formulation("textbook")
    with TorchRunner(model, spec) as encoder, TorchDecoderRunner(model.decoder(spec.decoder_masks)) as decoder:
        reference = prompted_outputs(*runner_pair(encoder, decoder, spec), inputs, feeds=feeds)
    model.set_formulation("deploy")
    rows = [scores("torch fp32", reference, reference, masks, feeds=feeds)]
    with tempfile.TemporaryDirectory(prefix="evitdeploy-samprec-") as scratch:
        folder = Path(scratch)
        calib_photos, _, _ = promptable_data(2 if args.tiny else 16, seed=3, split="train")
        np.savez(folder / "calib.npz", image=calib_photos)
        calibration = preprocess(list(calib_photos), spec, spec.height, width=spec.width)
        exports = Exports(folder, announce=True)
        artifacts = {
            key: export(exports, *key, checkpoint=checkpoint, calib=folder / "calib.npz")
            for key in (("onnx", "fp32"), ("onnx", "fp16"), ("onnx", "int8"), ("openvino", "fp32"), ("openvino", "int8"))
        }
        fp32_encoder = artifacts[("onnx", "fp32")].folder / "encoder.onnx"
        storage = artifacts[("onnx", "fp16")].manifest["precision_plan"].get("fp16_storage_check")
        print(f"  FP16 storage check of the encoder (TensorRT-like FP16 storage, emulated here): {json.dumps(storage)}", flush=True)
        from evitdeploy.precision.fp16 import convert
        from evitdeploy.precision.qdq import naive_quantize

        convert(fp32_encoder, None, folder / "encoder-fp16-plain.onnx")
        naive_quantize(fp32_encoder, folder / "encoder-int8-naive.onnx", calibration)
        contenders = {
            "ort fp32": lambda: pair_of(artifacts[("onnx", "fp32")], args.threads),
            "ort fp16 plan": lambda: pair_of(artifacts[("onnx", "fp16")], args.threads),
            "ort fp16 plain": lambda: onnx_encoder_pair(folder / "encoder-fp16-plain.onnx", artifacts[("onnx", "fp32")], args.threads),
            "ort int8 plan": lambda: pair_of(artifacts[("onnx", "int8")], args.threads),
            "ort int8 naive": lambda: onnx_encoder_pair(folder / "encoder-int8-naive.onnx", artifacts[("onnx", "fp32")], args.threads),
            "ov f32": lambda: pair_of(artifacts[("openvino", "fp32")], args.threads),
            "ov int8 plan": lambda: pair_of(artifacts[("openvino", "int8")], args.threads),
        }
        with contextlib.suppress(ImportError):
            import nncf  # noqa: F401  (NNCF default is a contender only where nncf is installed)

            ir = nncf_default(fp32_encoder, calibration, folder / "encoder-nncf")
            contenders["ov int8 NNCF default"] = lambda: ir_encoder_pair(ir, artifacts[("openvino", "fp32")], args.threads)
        for name, make in contenders.items():
            rows.append(scores(name, prompted_outputs(*make(), inputs, feeds=feeds), reference, masks, feeds=feeds))
    result = {
        "host": host,
        "images": len(photos),
        "prompts": len(feeds),
        "storage_check": storage,
        "rows": rows,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(f"done in {result['seconds']} s", flush=True)
    if args.save:
        args.save.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
