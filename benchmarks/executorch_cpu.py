"""The ExecuTorch target (.pte on XNNPACK), measured in one run on this host (needs the executorch extra).

    .venv/bin/python benchmarks/executorch_cpu.py [--sections convert,latency,partition,trained,sam] [--threads 2]

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
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from evitdeploy import api
from evitdeploy.bench import host_info
from evitdeploy.data import preprocess
from evitdeploy.device.metrics import cosine_per_sample
from evitdeploy.models import build_model, trained
from evitdeploy.precision.options import PrecisionOptions
from evitdeploy.requests import CheckRequest, ExportRequest

sys.path.insert(0, str(Path(__file__).parent))
from openvino_cpu import cpu_facts  # noqa: E402  (CPU model + avx512_vnni / avx512_bf16 / AMX flags)
from tflite_cpu import alternating_medians, runner  # noqa: E402  (the same alternating rounds as the TFLite figures)

MADE: dict = {}  # one export per (model, target, precision, size, weights, calibration), reused by every section


def export(folder: Path, model: str, target: str, precision: str, height=224, width=224, checkpoint=None, calib=None, count=None):
    """(artifact, seconds the export took): each distinct export is made once."""
    key = (model, target, precision, height, width, str(checkpoint), str(calib), count)
    if key not in MADE:
        started = time.perf_counter()
        with contextlib.redirect_stderr(open("/dev/null", "w")):
            artifact = api.export_model(ExportRequest(
                model=model, target=target, precision=precision, output=folder / f"{model}-{target}-{precision}-{height}x{width}-{len(MADE)}",
                checkpoint=checkpoint, height=height, width=width, reduced=PrecisionOptions(calib=calib, calib_count=count), force=True,
            ))
        MADE[key] = (artifact, time.perf_counter() - started)
    return MADE[key]


def logits(artifact, inputs: np.ndarray, threads: int) -> np.ndarray:
    with runner(artifact, threads) as r:
        return np.concatenate([r.infer({artifact.spec.input_name: inputs[i : i + 1]})[artifact.spec.output_name] for i in range(len(inputs))])


def section_convert(folder: Path, threads: int) -> None:
    print("## 1. export --target executorch (XNNPACK), FP32 parity vs PyTorch on 8 photos, 224x224", flush=True)
    for model in ("efficientvit_b0", "efficientvit_b1"):
        artifact, seconds = export(folder, model, "executorch", "fp32")
        check = api.check_artifact(CheckRequest(path=artifact.folder, samples=8, threads=threads))
        spent, part = artifact.manifest["export"]["seconds"], artifact.manifest["export"]["partition"]["model"]
        outside = ", ".join(f"{op} {n}" for op, n in part["outside_delegate"].items()) or "none"
        print(f"{model}: lowering {spent['lower_s']:.1f} s (target B1 < 60 s), whole export {seconds:.1f} s (validation {spent['validate_s']:.1f} s), "
              f".pte {artifact.model_file.stat().st_size / 1e6:.2f} MB; max abs {check['metrics']['max_abs_error']:.2e} (target <= 1e-4), "
              f"min cosine {check['metrics']['cosine_min']:.8f}, check {'passed' if check['passed'] else 'FAILED'}")
        print(f"  partition: {part['delegated_subgraphs']} delegated subgraphs ({part['delegated_nodes']} nodes in {part['delegate']}), "
              f"{part['non_delegated_nodes']} nodes outside; outside by type: {outside}")
    artifact, seconds = export(folder, "efficientvit_b1", "executorch", "int8", count=32)
    spent = artifact.manifest["export"]["seconds"]
    print(f"efficientvit_b1 INT8 (plan, 32 calibration photos): whole export {seconds:.1f} s = plan + PT2E {spent['precision_s']:.1f} s, "
          f"lowering {spent['lower_s']:.1f} s, validation {spent['validate_s']:.1f} s; "
          f"outside XNNPACK: {artifact.manifest['export']['partition']['model']['non_delegated_nodes']} nodes", flush=True)


def section_latency(folder: Path, threads: int) -> None:
    print(f"\n## 2. latency at 224x224, {threads} threads, 4 alternating rounds of 30 runs (median of all 120)", flush=True)
    for model in ("efficientvit_b0", "efficientvit_b1"):
        artifacts = {(t, p): export(folder, model, t, p, count=32 if p == "int8" else None)[0] for t in ("executorch", "onnx") for p in ("fp32", "int8")}
        feed = {"image": preprocess(trained.digits_images("test")[0][:1], artifacts["onnx", "fp32"].spec, 224, 224)}
        medians = alternating_medians(artifacts, feed, threads)
        print(f"{model}: " + "  ".join(f"{t}/{p} {medians[t, p]:.3f} ms" for t, p in medians))
        m = {f"{t[0]}{p}": v for (t, p), v in medians.items()}  # efp32, eint8, ofp32, oint8
        print(f"  INT8 speedup over FP32: ExecuTorch {m['efp32'] / m['eint8']:.2f}x (target > 1 at B1), ONNX Runtime {m['ofp32'] / m['oint8']:.2f}x; "
              f"ExecuTorch vs ONNX Runtime (ORT ms / ET ms): FP32 {m['ofp32'] / m['efp32']:.2f}x, INT8 {m['oint8'] / m['eint8']:.2f}x", flush=True)


def section_partition(folder: Path, threads: int) -> None:
    """What the ops left outside XNNPACK cost: ExecuTorch's own event tracer (ETDump) per op."""
    from evitdeploy.backends.executorch.profile import op_profile

    print(f"\n## 2b. the partition's cost at 224x224, {threads} threads (ETDump, per-event medians of 30 traced runs)", flush=True)
    for model in ("efficientvit_b0", "efficientvit_b1"):
        for precision in ("fp32", "int8"):
            artifact = export(folder, model, "executorch", precision, count=32 if precision == "int8" else None)[0]
            batch = preprocess(trained.digits_images("test")[0][:1], artifact.spec, 224, 224)
            found = op_profile(artifact.model_file, batch, runs=30, threads=threads)
            ops = ", ".join(f"{op} {ms:.3f}" for op, ms in found["portable_by_op_ms"].items())
            print(f"{model} {precision}: XNNPACK calls {found['delegate_ms']:.3f} ms, portable kernels {found['portable_ms']:.3f} ms "
                  f"= {100 * found['portable_share']:.1f}% of the two; by op (ms): {ops}", flush=True)


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
        prepared = prepare_pt2e(torch.export.export(model, (sample,)).module(),
                                XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True)))
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


def section_trained(folder: Path, threads: int) -> None:
    import torch

    print("\n## 3. trained references: INT8 .pte following the shared plan vs FP32 .pte", flush=True)
    from evitdeploy.precision.calibset import build_calibration_set

    train, _ = trained.digits_images("train")
    calib = folder / "digits-calib.npz"
    np.savez(calib, image=train[:64])
    test, labels = trained.digits_images("test")
    inputs = preprocess(list(test), trained.digits_spec(), 64, 64)
    arts = {p: export(folder, "efficientvit_b0", "executorch", p, 64, 64, trained.digits_checkpoint(), str(calib), 64)[0] for p in ("fp32", "int8")}
    results = {p: logits(a, inputs, threads) for p, a in arts.items()}
    accuracy = {p: trained.classification_accuracy(v, labels) for p, v in results.items()}
    cosine = cosine_per_sample(results["fp32"], results["int8"])
    print(f"digits B0 64x64 ({len(labels)} held-out): FP32 {100 * accuracy['fp32']:.2f}%, INT8 {100 * accuracy['int8']:.2f}% "
          f"(target within 1 point); per-image cosine min {cosine.min():.5f}, median {np.median(cosine):.5f} (target >= 0.99)")
    calibration = build_calibration_set(trained.digits_spec(), source=str(calib), count=64).inputs
    everything = run_pte(everything_int8(folder, calibration), inputs, threads)
    cosine = cosine_per_sample(results["fp32"], everything)
    print(f"  contrast, every op quantized by PT2E (XNNPACKQuantizer, no filter, same {len(calibration)} calibration images): "
          f"{100 * trained.classification_accuracy(everything, labels):.2f}%, per-image cosine min {cosine.min():.5f}, median {np.median(cosine):.5f}")
    strided = np.ascontiguousarray(inputs.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)  # NCHW view of NHWC memory
    raw = trained.classification_accuracy(run_pte(arts["fp32"].model_file, strided, threads, contiguous=False), labels)
    ours = trained.classification_accuracy(logits(arts["fp32"], strided, threads), labels)
    print(f"  contiguity: FP32 .pte fed a channels-last strided NCHW view: executorch.runtime directly {100 * raw:.2f}%, our runner {100 * ours:.2f}%")
    height, width = 128, 256
    mosaics, _ = trained.digit_mosaics(16, height, width, seed=1, split="train")
    np.savez(folder / "mosaic-calib.npz", image=mosaics)
    photos, truth = trained.digit_mosaics(4, height, width, seed=2, split="test")
    spec = trained.mosaic_spec(height, width)
    inputs = preprocess(list(photos), spec, height, width)
    results = {p: logits(export(folder, "efficientvit_seg_b0_cityscapes", "executorch", p, height, width, trained.mosaic_checkpoint(),
                                str(folder / "mosaic-calib.npz"), 16)[0], inputs, threads) for p in ("fp32", "int8")}
    model, _ = build_model(spec, trained.mosaic_checkpoint())
    with torch.no_grad():
        results["pytorch"] = model.eval()(torch.from_numpy(inputs)).numpy()
    agree = {p: float((results[p].argmax(1) == results[q].argmax(1)).mean()) for p, q in (("fp32", "pytorch"), ("int8", "fp32"))}
    miou = {p: trained.segmentation_scores(v, truth)["miou"] for p, v in results.items()}
    print(f"mosaic Seg-B0 {height}x{width} (4 test mosaics): pixel agreement FP32 .pte vs PyTorch {100 * agree['fp32']:.3f}% (target >= 99.9%), "
          f"INT8 vs FP32 .pte {100 * agree['int8']:.2f}%; mIoU PyTorch {miou['pytorch']:.4f}, FP32 {miou['fp32']:.4f}, INT8 {miou['int8']:.4f}", flush=True)


def section_sam(folder: Path, threads: int) -> None:
    from evitdeploy.models.trained_sam import promptable_checkpoint

    print("\n## 4. efficientvit_sam_tiny (trained) as an FP32 .pte pair (encoder + prompt decoder)", flush=True)
    try:
        artifact, seconds = export(folder, "efficientvit_sam_tiny", "executorch", "fp32", None, None, promptable_checkpoint())
    except Exception as exc:  # the brief: say what failed, in one line, and go on
        print(f"SAM export FAILED: {type(exc).__name__}: {str(getattr(exc, 'message', exc)).splitlines()[0]}")
        return
    metrics = artifact.manifest["validation"]["checks"][0]["metrics"]
    check = api.check_artifact(CheckRequest(path=artifact.folder, samples=8, threads=threads))
    spent = artifact.manifest["export"]["seconds"]
    print(f"export {seconds:.1f} s (encoder lowering {spent['lower_s']:.1f} s, decoder {spent['decoder_lower_s']:.1f} s); "
          f"export validation mask IoU min {metrics['mask_iou_min']:.4f} mean {metrics['mask_iou_mean']:.4f} ({metrics.get('prompts')} prompts); "
          f"check mask IoU min {check['metrics']['mask_iou_min']:.4f} mean {check['metrics']['mask_iou_mean']:.4f} (target >= 0.99), "
          f"check {'passed' if check['passed'] else 'FAILED: ' + '; '.join(check['failures'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sections", default="convert,latency,partition,trained,sam")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    sections, started = args.sections.split(","), time.perf_counter()
    facts = {**host_info(args.threads), **cpu_facts()}
    print(f"{facts['cpu']}; {facts['logical_cpus']} CPUs; flags {' '.join(facts['flags']) or 'none of avx512_vnni, avx512_bf16, amx'}; "
          f"{args.threads} threads; load {facts['load_average_1m']:.1f}\n", flush=True)
    with tempfile.TemporaryDirectory(prefix="evitdeploy-bench-executorch-") as scratch:
        for name, section in (("convert", section_convert), ("latency", section_latency), ("partition", section_partition),
                              ("trained", section_trained), ("sam", section_sam)):
            if name in sections:
                section(Path(scratch), args.threads)
    print(f"\ntotal {(time.perf_counter() - started) / 60:.1f} min; load average {facts['load_average_1m']:.1f} at start, "
          f"{host_info(args.threads)['load_average_1m']:.1f} at end")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
