"""The ExecuTorch target (.pte on XNNPACK), measured in one run on this host (needs the executorch extra).

    .venv/bin/python benchmarks/executorch_cpu.py [--sections convert,latency,partition,trained,sam] [--threads 2] [--tiny]

1. convert: `export --target executorch` of B0 and B1 at 224, FP32: lowering time (manifest
   export.seconds.lower_s; target: B1 < 60 s), whole export time, .pte size, FP32 parity against
   PyTorch on 8 photos (`check`; target: max abs <= 1e-4) and the partition (delegated subgraphs,
   ops left outside XNNPACK by type); B1 INT8 export time (making the shared plan included).
2. latency: B0 and B1 at 224, ExecuTorch FP32 and INT8 (the plan) and ONNX Runtime FP32 and INT8,
   same thread count, in alternating rounds; medians and the ratios (targets: ExecuTorch INT8
   faster than its FP32 at B1; ExecuTorch vs ONNX Runtime reported).
2b. partition: what the ops left outside XNNPACK cost on this host, from ExecuTorch's own event
   tracer (ETDump read by its Inspector): XNNPACK call time vs portable-kernel time, by op type.
3. trained: the digits classifier B0 (64x64) as FP32 and INT8 .pte: held-out accuracy (target:
   INT8 within 1 point of FP32) and per-image cosine INT8 vs FP32 (target >= 0.99); beside it
   the same model with EVERY op quantized by PT2E (XNNPACKQuantizer, no filter, same calibration
   images). The mosaic segmenter at 128x256: FP32 .pte pixel agreement with PyTorch (target
   >= 99.9%), INT8 pixel agreement with FP32 .pte, mIoU of each. And the contiguity fact: a
   channels-last strided input through executorch.runtime directly vs through our runner.
4. sam: efficientvit_sam_tiny (trained checkpoint) as FP32 .pte pair: the export validation's mask
   IoU and `check`'s (target >= 0.99).
The CPU and the flags every figure depends on are printed first.
--tiny: B0 only at 64x64, a few images and runs, the mosaic at 64x128, SAM-tiny with random weights
(a smoke run of every section).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evitdeploy import api
from evitdeploy.data import preprocess
from evitdeploy.device.metrics import cosine_per_sample
from evitdeploy.models import build_model, trained
from evitdeploy.precision.options import PrecisionOptions
from evitdeploy.requests import CheckRequest

from common import Exports, add_tiny_flag, alternating_medians, cpu_facts, host_line, outputs_per_image, require


@dataclass(frozen=True)
class Scale:
    models: tuple = ("efficientvit_b0", "efficientvit_b1")
    int8_model: str = "efficientvit_b1"  # the convert section's INT8 export
    size: int = 224  # convert, latency and partition sections
    photos: int = 8  # check's samples
    calib: int = 32  # INT8 calibration photos at `size`
    rounds: int = 4
    runs: int = 30  # per round; the partition section's traced runs too
    digits: int = 0  # held-out digits (0: all)
    digits_calib: int = 64
    mosaic: tuple = (128, 256)
    mosaic_calib: int = 16
    mosaic_test: int = 4
    sam_trained: bool = True  # False: random weights (no training on first use)


TINY = Scale(
    models=("efficientvit_b0",),
    int8_model="efficientvit_b0",
    size=64,
    photos=2,
    calib=2,
    rounds=2,
    runs=3,
    digits=8,
    digits_calib=4,
    mosaic=(64, 128),
    mosaic_calib=2,
    mosaic_test=1,
    sam_trained=False,
)
EXPORTS: Exports  # one export per (model, target, precision, size, weights, calibration), reused by every section (set in main)


def export(model: str, target: str, precision: str, height, width, checkpoint=None, calib=None, count=None):
    """(artifact, seconds the export took): each distinct export is made once."""
    return EXPORTS(model, target, precision, checkpoint=checkpoint, height=height, width=width, reduced=PrecisionOptions(calib=calib, calib_count=count))


def section_convert(folder: Path, threads: int, scale: Scale) -> None:
    size = scale.size
    print(f"## 1. export --target executorch (XNNPACK), FP32 parity vs PyTorch on {scale.photos} photos, {size}x{size}", flush=True)
    for model in scale.models:
        artifact, seconds = export(model, "executorch", "fp32", size, size)
        check = api.check_artifact(CheckRequest(path=artifact.folder, samples=scale.photos, threads=threads))
        spent, part = artifact.manifest["export"]["seconds"], artifact.manifest["export"]["partition"]["model"]
        outside = ", ".join(f"{op} {n}" for op, n in part["outside_delegate"].items()) or "none"
        print(
            f"{model}: lowering {spent['lower_s']:.1f} s (target B1 < 60 s), whole export {seconds:.1f} s (validation {spent['validate_s']:.1f} s), "
            f".pte {artifact.model_file.stat().st_size / 1e6:.2f} MB; max abs {check['metrics']['max_abs_error']:.2e} (target <= 1e-4), "
            f"min cosine {check['metrics']['cosine_min']:.8f}, check {'passed' if check['passed'] else 'FAILED'}"
        )
        print(
            f"  partition: {part['delegated_subgraphs']} delegated subgraphs ({part['delegated_nodes']} nodes in {part['delegate']}), "
            f"{part['non_delegated_nodes']} nodes outside; outside by type: {outside}"
        )
    artifact, seconds = export(scale.int8_model, "executorch", "int8", size, size, count=scale.calib)
    spent = artifact.manifest["export"]["seconds"]
    print(
        f"{scale.int8_model} INT8 (plan, {scale.calib} calibration photos): whole export {seconds:.1f} s = plan + PT2E {spent['precision_s']:.1f} s, "
        f"lowering {spent['lower_s']:.1f} s, validation {spent['validate_s']:.1f} s; "
        f"outside XNNPACK: {artifact.manifest['export']['partition']['model']['non_delegated_nodes']} nodes",
        flush=True,
    )


def section_latency(folder: Path, threads: int, scale: Scale) -> None:
    size = scale.size
    print(
        f"\n## 2. latency at {size}x{size}, {threads} threads, {scale.rounds} alternating rounds of {scale.runs} runs "
        f"(median of all {scale.rounds * scale.runs})",
        flush=True,
    )
    for model in scale.models:
        artifacts = {
            (t, p): export(model, t, p, size, size, count=scale.calib if p == "int8" else None)[0] for t in ("executorch", "onnx") for p in ("fp32", "int8")
        }
        feed = {"image": preprocess(trained.digits_images("test")[0][:1], artifacts["onnx", "fp32"].spec, size, size)}
        medians = alternating_medians(artifacts, feed, threads, scale.rounds, scale.runs)
        print(f"{model}: " + "  ".join(f"{t}/{p} {medians[t, p]:.3f} ms" for t, p in medians))
        m = {f"{t[0]}{p}": v for (t, p), v in medians.items()}  # efp32, eint8, ofp32, oint8
        print(
            f"  INT8 speedup over FP32: ExecuTorch {m['efp32'] / m['eint8']:.2f}x (target > 1 at B1), ONNX Runtime {m['ofp32'] / m['oint8']:.2f}x; "
            f"ExecuTorch vs ONNX Runtime (ORT ms / ET ms): FP32 {m['ofp32'] / m['efp32']:.2f}x, INT8 {m['oint8'] / m['eint8']:.2f}x",
            flush=True,
        )


def section_partition(folder: Path, threads: int, scale: Scale) -> None:
    """What the ops left outside XNNPACK cost: ExecuTorch's own event tracer (ETDump) per op."""
    from evitdeploy.backends.executorch.profile import op_profile

    size = scale.size
    print(f"\n## 2b. the partition's cost at {size}x{size}, {threads} threads (ETDump, per-event medians of {scale.runs} traced runs)", flush=True)
    for model in scale.models:
        for precision in ("fp32", "int8"):
            artifact = export(model, "executorch", precision, size, size, count=scale.calib if precision == "int8" else None)[0]
            batch = preprocess(trained.digits_images("test")[0][:1], artifact.spec, size, size)
            found = op_profile(artifact.model_file, batch, runs=scale.runs, threads=threads)
            ops = ", ".join(f"{op} {ms:.3f}" for op, ms in found["portable_by_op_ms"].items())
            print(
                f"{model} {precision}: XNNPACK calls {found['delegate_ms']:.3f} ms, portable kernels {found['portable_ms']:.3f} ms "
                f"= {100 * found['portable_share']:.1f}% of the two; by op (ms): {ops}",
                flush=True,
            )


def everything_int8(folder: Path, calibration: np.ndarray) -> Path:
    """The digits B0 with every op XNNPACKQuantizer annotates quantized (no filter), lowered to XNNPACK."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer, get_symmetric_quantization_config
    from executorch.exir import to_edge_transform_and_lower
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    model, spec = build_model(trained.digits_spec(), trained.digits_checkpoint())
    model.set_formulation("deploy")
    model.eval()
    sample = torch.zeros(spec.input_shape)
    with torch.no_grad(), contextlib.redirect_stdout(sys.stderr):
        prepared = prepare_pt2e(
            torch.export.export(model, (sample,)).module(), XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
        )
        for i in range(len(calibration)):
            prepared(torch.from_numpy(np.ascontiguousarray(calibration[i : i + 1])))
        program = torch.export.export(convert_pt2e(prepared), (sample,))
        path = folder / "digits-everything-int8.pte"
        path.write_bytes(bytes(to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch().buffer))
    return path


def run_pte(path: Path, inputs: np.ndarray, threads: int, contiguous: bool = True) -> np.ndarray:
    """Each image through executorch.runtime directly; contiguous=False hands the torch tensor over as it is."""
    import torch
    from evitdeploy.backends.executorch.device import executorch_method, use_threads
    from evitdeploy.backends.executorch.runner import quiet_runtime

    with quiet_runtime():
        method = executorch_method(path, threads)
    use_threads(threads)
    wrap = (lambda x: torch.from_numpy(np.ascontiguousarray(x))) if contiguous else torch.from_numpy
    return np.concatenate([method.execute([wrap(inputs[i : i + 1])])[0].numpy() for i in range(len(inputs))])


def section_trained(folder: Path, threads: int, scale: Scale) -> None:
    import torch

    print("\n## 3. trained references: INT8 .pte following the shared plan vs FP32 .pte", flush=True)
    from evitdeploy.precision.calibset import build_calibration_set

    train, _ = trained.digits_images("train")
    calib = folder / "digits-calib.npz"
    np.savez(calib, image=train[: scale.digits_calib])
    test, labels = trained.digits_images("test")
    if scale.digits:
        test, labels = test[: scale.digits], labels[: scale.digits]
    inputs = preprocess(list(test), trained.digits_spec(), 64, 64)
    arts = {p: export("efficientvit_b0", "executorch", p, 64, 64, trained.digits_checkpoint(), str(calib), scale.digits_calib)[0] for p in ("fp32", "int8")}
    results = {p: outputs_per_image(a, inputs, threads) for p, a in arts.items()}
    accuracy = {p: trained.classification_accuracy(v, labels) for p, v in results.items()}
    cosine = cosine_per_sample(results["fp32"], results["int8"])
    print(
        f"digits B0 64x64 ({len(labels)} held-out): FP32 {100 * accuracy['fp32']:.2f}%, INT8 {100 * accuracy['int8']:.2f}% "
        f"(target within 1 point); per-image cosine min {cosine.min():.5f}, median {np.median(cosine):.5f} (target >= 0.99)"
    )
    calibration = build_calibration_set(trained.digits_spec(), source=str(calib), count=scale.digits_calib).inputs
    everything = run_pte(everything_int8(folder, calibration), inputs, threads)
    cosine = cosine_per_sample(results["fp32"], everything)
    print(
        f"  contrast, every op quantized by PT2E (XNNPACKQuantizer, no filter, same {len(calibration)} calibration images): "
        f"{100 * trained.classification_accuracy(everything, labels):.2f}%, per-image cosine min {cosine.min():.5f}, median {np.median(cosine):.5f}"
    )
    strided = np.ascontiguousarray(inputs.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)  # NCHW view of NHWC memory
    raw = trained.classification_accuracy(run_pte(arts["fp32"].model_file, strided, threads, contiguous=False), labels)
    ours = trained.classification_accuracy(outputs_per_image(arts["fp32"], strided, threads), labels)
    print(f"  contiguity: FP32 .pte fed a channels-last strided NCHW view: executorch.runtime directly {100 * raw:.2f}%, our runner {100 * ours:.2f}%")
    height, width = scale.mosaic
    mosaics, _ = trained.digit_mosaics(scale.mosaic_calib, height, width, seed=1, split="train")
    np.savez(folder / "mosaic-calib.npz", image=mosaics)
    photos, truth = trained.digit_mosaics(scale.mosaic_test, height, width, seed=2, split="test")
    spec = trained.mosaic_spec(height, width)
    inputs = preprocess(list(photos), spec, height, width)
    results = {
        p: outputs_per_image(
            export(
                "efficientvit_seg_b0_cityscapes",
                "executorch",
                p,
                height,
                width,
                trained.mosaic_checkpoint(),
                str(folder / "mosaic-calib.npz"),
                scale.mosaic_calib,
            )[0],
            inputs,
            threads,
        )
        for p in ("fp32", "int8")
    }
    model, _ = build_model(spec, trained.mosaic_checkpoint())
    with torch.no_grad():
        results["pytorch"] = model.eval()(torch.from_numpy(inputs)).numpy()
    agree = {p: float((results[p].argmax(1) == results[q].argmax(1)).mean()) for p, q in (("fp32", "pytorch"), ("int8", "fp32"))}
    miou = {p: trained.segmentation_scores(v, truth)["miou"] for p, v in results.items()}
    print(
        f"mosaic Seg-B0 {height}x{width} ({len(photos)} test mosaics): pixel agreement FP32 .pte vs PyTorch {100 * agree['fp32']:.3f}% (target >= 99.9%), "
        f"INT8 vs FP32 .pte {100 * agree['int8']:.2f}%; mIoU PyTorch {miou['pytorch']:.4f}, FP32 {miou['fp32']:.4f}, INT8 {miou['int8']:.4f}",
        flush=True,
    )


def section_sam(folder: Path, threads: int, scale: Scale) -> None:
    from evitdeploy.models.trained_sam import promptable_checkpoint

    weights = "trained" if scale.sam_trained else "random weights"
    print(f"\n## 4. efficientvit_sam_tiny ({weights}) as an FP32 .pte pair (encoder + prompt decoder)", flush=True)
    try:
        artifact, seconds = export("efficientvit_sam_tiny", "executorch", "fp32", None, None, promptable_checkpoint() if scale.sam_trained else None)
    except Exception as exc:  # the brief: say what failed, in one line, and go on
        print(f"SAM export FAILED: {type(exc).__name__}: {str(getattr(exc, 'message', exc)).splitlines()[0]}")
        return
    metrics = artifact.manifest["validation"]["checks"][0]["metrics"]
    check = api.check_artifact(CheckRequest(path=artifact.folder, samples=scale.photos, threads=threads))
    spent = artifact.manifest["export"]["seconds"]
    print(
        f"export {seconds:.1f} s (encoder lowering {spent['lower_s']:.1f} s, decoder {spent['decoder_lower_s']:.1f} s); "
        f"export validation mask IoU min {metrics['mask_iou_min']:.4f} mean {metrics['mask_iou_mean']:.4f} ({metrics.get('prompts')} prompts); "
        f"check mask IoU min {check['metrics']['mask_iou_min']:.4f} mean {check['metrics']['mask_iou_mean']:.4f} (target >= 0.99), "
        f"check {'passed' if check['passed'] else 'FAILED: ' + '; '.join(check['failures'])}"
    )


def main() -> None:
    global EXPORTS
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sections", default="convert,latency,partition,trained,sam")
    parser.add_argument("--threads", type=int, default=2)
    add_tiny_flag(parser)
    args = parser.parse_args()
    require(("executorch",), "the executorch extra: pip install -e '.[executorch]'", args.tiny)
    import torch

    torch.set_num_threads(args.threads)
    scale = TINY if args.tiny else Scale()
    sections, started = args.sections.split(","), time.perf_counter()
    facts = cpu_facts(args.threads)
    print(f"{host_line(facts)}; {args.threads} threads\n", flush=True)
    with tempfile.TemporaryDirectory(prefix="evitdeploy-bench-executorch-") as scratch:
        EXPORTS = Exports(Path(scratch))
        for name, section in (
            ("convert", section_convert),
            ("latency", section_latency),
            ("partition", section_partition),
            ("trained", section_trained),
            ("sam", section_sam),
        ):
            if name in sections:
                section(Path(scratch), args.threads, scale)
    print(
        f"\ntotal {(time.perf_counter() - started) / 60:.1f} min; load average {facts['load_average_1m']:.1f} at start, "
        f"{cpu_facts()['load_average_1m']:.1f} at end"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
