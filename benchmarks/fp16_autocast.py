"""FP16 ONNX three ways, on ONNX Runtime CPU in one run: our precision plan, NVIDIA ModelOpt's
AutoCast, and plain FP16.

    .venv/bin/python benchmarks/fp16_autocast.py [--modelopt-python PATH] [--models digits,mosaic,sam]
        [--seg-b1] [--images 16] [--threads 2] [--save results.json] [--tiny]

Why: AutoCast (`modelopt.onnx.autocast.convert_to_mixed_precision`) is the FP16 converter NVIDIA
ships for ONNX, the one a user would reach for instead of `evitdeploy export --precision fp16`. It
keeps in FP32 the nodes whose inputs/outputs pass `data_max` (512) on one reference run (random
inputs in [-1, 1] unless given calibration data) or whose weights pass `init_max` (65504); our plan
keeps in FP32 what measured ranges on calibration images put past 65504 / --fp16-margin (and the
LiteMLA islands, eps, reductions). Both are judged here on the same FP32 ONNX.

Contenders, each made from the FP32 ONNX of `evitdeploy export -p fp32` (run through the CLI):
- plain fp16: onnxruntime.transformers.float16.convert_float_to_float16, no block list,
  keep_io_types=True (evitdeploy.precision.fp16.convert with no plan: the same call, topologically sorted)
- ours (plan): `evitdeploy export -p fp16 --calib <the calibration images>`
- AutoCast: convert_to_mixed_precision(fp32, "fp16", keep_io_types=True), its other defaults
- AutoCast + calib: the same, calibration_data = the calibration images ours used (preprocessed,
  .npz). Seg-B1 gets only the first: AutoCast's reference run keeps every tensor of every
  calibration image in memory (2 images at 1024x2048: 16 GB resident; 16 were killed for memory
  on a 24 GB host).

Models (trained references from evitdeploy.models.trained / trained_sam, cached after first use):
the digits classifier (B0, 64x64), the mosaic segmenter (Seg-B0) at 512x1024 (where its LiteMLA
sums pass 65504: plain FP16 storage overflows), the promptable model's encoder (sam_tiny, 256x256;
its image embeddings: the plan leaves the decoder FP32, so only the encoder differs), and with
--seg-b1 the mosaic segmenter's Seg-B1 (trained on first use: about 40 minutes on 2 cores, then cached)
at Cityscapes' 1024x2048 (several minutes more: the FP16 export calibrates 16 megapixel mosaics).
Random weights would not do: they keep LiteMLA's sums small, and plain FP16 storage of a
random-weight Seg-B1 at 1024x2048 stays finite (measured), so the overflow case is a trained one.

Columns, against the FP32 ONNX on ONNX Runtime CPU over --images held-out images (at most 4 for Seg-B1):
- FP32 nodes: nodes that compute in FP32 / nodes that compute in a float type. Rule: after ONNX shape
  inference, every node but Cast, CastLike, QuantizeLinear, DequantizeLinear and Constant that
  writes a float tensor counts as a float node, and as FP32 if any float tensor it writes is
  float32. By outputs, not inputs: Resize reads float32 scales whatever its data type, and a node
  that writes only integers (Shape, ArgMax) does no float arithmetic.
- FP32 MACs: the share of the graph's multiply-accumulates (Conv, MatMul, Gemm, from static shapes)
  done by FP32 nodes: what the FP32 nodes cost in FP16 speed, which a node count does not say (a
  LiteMLA k^T v MatMul is tiny beside a convolution).
- NaN/Inf: non-finite output values; cos min / mean: per-image cosine to FP32 (an image with any
  NaN/Inf scores -1); agree: argmax agreement with FP32 (top-1 for the classifier, pixels of the
  stride-8 logits for the segmenters; none for the encoder's embeddings).
- "ORT CPU": the FP16 ONNX as written, on ONNX Runtime's CPU provider (default optimizations).
  Caveat: that provider has no FP16 kernel for most ops; it inserts casts to FP32 around runs of
  such ops and drops the casts between them, so an FP16 overflow inside a run (LiteMLA's k^T v past
  65504) never happens there. Hence also:
- "storage emulation": the same FP16 ONNX rewritten as an FP32 graph in which every tensor the FP16
  graph stores as float16 passes through Cast(float16) -> Cast(float32) (weights keep their FP16
  values): FP16 storage with FP32 arithmetic inside each op, what GPU FP16 kernels (FP32
  accumulation) do; run with ONNX Runtime's optimizations off so the casts stay. The same idea as
  evitdeploy.precision.fp16.storage_emulation, applied to any mixed-precision graph.

Where ModelOpt lives: `pip install -c constraints.txt 'nvidia-modelopt[onnx]'` would downgrade onnx
(1.23.2 -> 1.21.0, its extra pins onnx~=1.21.0) and add onnxruntime-gpu 1.24.4 (onnxruntime~=1.24.2
for aarch64/macOS), whose files replace the CPU onnxruntime 1.32.0 the project uses, plus cupy-cuda12x,
so it goes in its own virtual environment, with this venv's onnx, onnxruntime, numpy and torch
pinned and the [onnx] extra's packages AutoCast imports installed by name:

    python -m venv /tmp/modelopt-venv
    /tmp/modelopt-venv/bin/pip install -c constraints.txt torch==2.13.0 onnx==1.23.2 onnxruntime==1.32.0 \
        numpy==2.4.6 nvidia-modelopt==0.47.0 onnx-graphsurgeon polygraphy onnxscript lief onnxslim ml_dtypes

and this script runs AutoCast there in a subprocess (--modelopt-python, or $MODELOPT_PYTHON; the
interpreter running this script if it imports modelopt). Without one it prints "skipped:".
--tiny: random weights, every model (Seg-B1 included) at 64x64 / 64x128, 2 images, 2 calibration
images (a smoke run of every contender and view; its figures mean nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evitdeploy.data import preprocess
from evitdeploy.device.metrics import cosine_per_sample
from evitdeploy.models import trained, trained_sam
from evitdeploy.precision.fp16 import convert

from common import add_tiny_flag, cpu_facts, host_line, skip

MODELS = ("digits", "mosaic", "sam")
NOT_COMPUTING = {"Cast", "CastLike", "QuantizeLinear", "DequantizeLinear", "Constant"}
# AutoCast in the interpreter that has ModelOpt: argv = fp32 ONNX, output, calibration .npz or "".
AUTOCAST = """
import sys
from importlib.metadata import version
import onnx
from modelopt.onnx.autocast import convert_to_mixed_precision
source, output, calibration = sys.argv[1], sys.argv[2], sys.argv[3] or None
model = convert_to_mixed_precision(source, low_precision_type="fp16", keep_io_types=True, calibration_data=calibration)
onnx.save(model, output)
print("nvidia-modelopt", version("nvidia-modelopt"))
"""


@dataclass(frozen=True)
class Case:
    """One model: how to export it, its calibration photos, and its held-out inputs."""

    label: str
    model: str
    height: int
    width: int
    file: str = "model.onnx"  # the artifact's ONNX the contenders differ in
    agree: str = ""  # "top-1", "pixels" or "" (no argmax)
    autocast_calib: int = 0  # calibration images AutoCast + calib gets (0: all of ours)


def modelopt_python(given) -> str:
    """An interpreter that imports modelopt.onnx.autocast, or None."""
    candidates = [given, os.environ.get("MODELOPT_PYTHON"), sys.executable]
    for python in [c for c in candidates if c]:
        probe = subprocess.run([python, "-c", "import modelopt.onnx.autocast"], capture_output=True)
        if probe.returncode == 0:
            return python
    return None


def cli_export(folder: Path, case: Case, precision: str, checkpoint, calib, count: int) -> Path:
    """`evitdeploy export` in a subprocess; a failure stops the run with the CLI's own words."""
    output = folder / f"{case.label}-{precision}"
    command = [sys.executable, "-m", "evitdeploy", "export", "-m", case.model, "-t", "onnx", "-p", precision]
    command += ["--height", str(case.height), "--width", str(case.width), "-o", str(output), "--force"]
    if checkpoint:
        command += ["--checkpoint", str(checkpoint)]
    if precision != "fp32":
        command += ["--calib", str(calib) if calib else "samples", "--calib-count", str(count)]
    if calib:
        command += ["--data", str(calib)]  # validated on the model's own domain
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"evitdeploy export failed ({' '.join(command[3:])}):\n{(done.stdout + done.stderr)[-3000:]}")
    return output / case.file


def autocast(python: str, fp32: Path, output: Path, calibration) -> tuple:
    """AutoCast in `python`; (output or None where it failed, its "Converted a/b nodes" line or
    why it failed, the ModelOpt version)."""
    done = subprocess.run([python, "-c", AUTOCAST, str(fp32), str(output), str(calibration or "")], capture_output=True, text=True)
    if done.returncode:
        killed = " (killed: out of memory?)" if done.returncode in (-9, 137) else ""
        print(f"  AutoCast failed on {fp32.name}, exit {done.returncode}{killed}:\n{done.stderr[-1500:]}", flush=True)
        return None, f"failed: exit {done.returncode}{killed}", None
    said = [line.split(" - ")[-1] for line in (done.stdout + done.stderr).splitlines() if "Converted " in line and " nodes " in line]
    version = [line.split()[-1] for line in done.stdout.splitlines() if line.startswith("nvidia-modelopt ")]
    return output, (said or ["?"])[-1], (version or ["?"])[-1]


def tensor_types(model) -> dict:
    """Tensor name -> ONNX element type, after shape inference."""
    return {name: kind for name, (kind, _) in tensor_facts(model).items()}


def tensor_facts(model) -> dict:
    """Tensor name -> (ONNX element type, static shape or None), after shape inference."""
    import onnx

    graph = onnx.shape_inference.infer_shapes(model).graph
    facts = {}
    for v in [*graph.input, *graph.value_info, *graph.output]:
        dims = v.type.tensor_type.shape.dim
        shape = tuple(d.dim_value for d in dims) if dims and all(d.HasField("dim_value") for d in dims) else None
        facts[v.name] = (v.type.tensor_type.elem_type, shape)
    facts.update({i.name: (i.data_type, tuple(i.dims)) for i in graph.initializer})
    return facts


def macs(node, facts: dict) -> int:
    """Multiply-accumulates of a Conv, ConvTranspose, MatMul or Gemm from its static shapes (0 for
    every other op: elementwise work is a rounding error beside these)."""
    out = facts.get(node.output[0], (None, None))[1]
    if not out:
        return 0
    if node.op_type in ("Conv", "ConvTranspose"):
        weight = facts.get(node.input[1], (None, None))[1]
        return int(np.prod(out)) * int(np.prod(weight[1:])) if weight else 0
    if node.op_type in ("MatMul", "Gemm"):
        a = facts.get(node.input[0], (None, None))[1]
        if not a:
            return 0
        transposed = node.op_type == "Gemm" and any(x.name == "transA" and x.i for x in node.attribute)
        return int(np.prod(out)) * int(a[-2] if transposed else a[-1])
    return 0


def float_nodes(path: Path) -> dict:
    """Nodes computing in FP32 / in a float type (the module docstring's rule), and FP32 op types."""
    import onnx
    from onnx import TensorProto

    model = onnx.load(str(path))
    facts = tensor_facts(model)
    floats = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE}
    total, fp32, ops, untyped, all_macs, fp32_macs = 0, 0, {}, 0, 0, 0
    for node in model.graph.node:
        if node.op_type in NOT_COMPUTING:
            continue
        written = [facts.get(name, (None, None))[0] for name in node.output if name]
        untyped += None in written
        written = [t for t in written if t in floats]
        if not written:
            continue
        total += 1
        work = macs(node, facts)
        all_macs += work
        if TensorProto.FLOAT in written:
            fp32 += 1
            fp32_macs += work
            ops[node.op_type] = ops.get(node.op_type, 0) + 1
    return {
        "fp32": fp32,
        "float": total,
        "fp32_mac_share": fp32_macs / all_macs if all_macs else 0.0,
        "fp32_ops": dict(sorted(ops.items(), key=lambda x: -x[1])),
        "untyped": untyped,
    }


def storage_emulation(fp16_path: Path, output: Path) -> Path:
    """The FP16 graph as FP32 arithmetic on FP16-rounded storage (see the module docstring)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(fp16_path))
    types = tensor_types(model)
    graph = model.graph

    def widened(tensor):
        return numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name)

    for initializer in graph.initializer:
        if initializer.data_type == TensorProto.FLOAT16:
            initializer.CopyFrom(widened(initializer))
    for value in [*graph.input, *graph.output]:
        if value.type.tensor_type.elem_type == TensorProto.FLOAT16:
            value.type.tensor_type.elem_type = TensorProto.FLOAT
    nodes = []
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.name == "to" and node.op_type == "Cast" and attribute.i == TensorProto.FLOAT16:
                attribute.i = TensorProto.FLOAT  # its output is rounded below, like every FP16 tensor
            if attribute.type == onnx.AttributeProto.TENSOR and attribute.t.data_type == TensorProto.FLOAT16:
                attribute.t.CopyFrom(widened(attribute.t))  # Constant / ConstantOfShape values
        nodes.append(node)
        for index, name in enumerate(node.output):
            if types.get(name) != TensorProto.FLOAT16:
                continue
            node.output[index] = f"{name}__computed"
            nodes.append(helper.make_node("Cast", [f"{name}__computed"], [f"{name}__fp16"], to=TensorProto.FLOAT16, name=f"{name}__store"))
            nodes.append(helper.make_node("Cast", [f"{name}__fp16"], [name], to=TensorProto.FLOAT, name=f"{name}__load"))
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]  # the FP16 types no longer hold
    onnx.save(model, str(output))
    return output


def ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def run_all(path: Path, inputs: np.ndarray, threads: int, optimize: bool = True) -> np.ndarray:
    """The model's first output for each input, one at a time, on ONNX Runtime's CPU provider."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: inputs[i : i + 1]})[0].astype(np.float32) for i in range(len(inputs))])


def scores(reference: np.ndarray, candidate: np.ndarray, agree: str) -> dict:
    finite = np.isfinite(candidate)
    whole = finite.reshape(len(candidate), -1).all(axis=1)
    cosine = np.where(whole, cosine_per_sample(reference, np.where(finite, candidate, 0.0)), -1.0)
    row = {"nonfinite": int((~finite).sum()), "cosine_min": float(cosine.min()), "cosine_mean": float(cosine.mean())}
    if agree:
        row["agree"] = float((reference.argmax(axis=1) == np.where(finite, candidate, -np.inf).argmax(axis=1)).mean())
    return row


def data(case: Case, tiny: bool, images: int, calib_count: int) -> tuple:
    """(checkpoint, raw calibration photos for --calib or None, preprocessed calibration, held-out inputs)."""
    h, w = case.height, case.width
    if case.label == "digits":
        train_images, _ = trained.digits_images("train")
        test_images, _ = trained.digits_images("test")
        calib, test, spec = train_images[:calib_count], test_images[:images], trained.digits_spec(h)
        checkpoint = None if tiny else trained.digits_checkpoint()
    elif case.label in ("mosaic", "seg_b1"):
        family = "b1" if case.label == "seg_b1" else "b0"
        calib, _ = trained.digit_mosaics(calib_count, h, w, seed=1, split="train")
        test, _ = trained.digit_mosaics(images, h, w, seed=2, split="test")
        spec, checkpoint = trained.mosaic_spec(h, w, family), None if tiny else trained.mosaic_checkpoint(family=family)
    elif case.label == "sam":
        calib, _, _ = trained_sam.promptable_data(calib_count, seed=3, split="train")
        test, _, _ = trained_sam.promptable_data(images, seed=7, split="test")
        spec, checkpoint = trained_sam.promptable_spec(), None if tiny else trained_sam.promptable_checkpoint()
    else:
        raise ValueError(f"unknown case {case.label!r}")
    return checkpoint, calib, preprocess(list(calib), spec, h, w), preprocess(list(test), spec, h, w)


def evaluate(case: Case, folder: Path, args, python: str) -> list:
    started = time.perf_counter()
    folder = folder / case.label
    folder.mkdir()
    checkpoint, calib_photos, calibration, inputs = data(case, args.tiny, args.images_for(case), args.calib)
    calib = None
    if calib_photos is not None:
        calib = folder / "calib_photos.npz"
        np.savez(calib, image=calib_photos)
    np.savez(folder / "calib_inputs.npz", image=calibration[: case.autocast_calib or len(calibration)])
    fp32 = cli_export(folder, case, "fp32", checkpoint, calib, len(calibration))
    contenders = {"fp32 (reference)": fp32}
    convert(fp32, None, folder / "plain.onnx")
    contenders["plain fp16"] = folder / "plain.onnx"
    contenders["ours (plan)"] = cli_export(folder, case, "fp16", checkpoint, calib, len(calibration))
    said = {}
    for label, calibration_file in (("AutoCast", None), ("AutoCast + calib", folder / "calib_inputs.npz")):
        contenders[label], said[label], version = autocast(python, fp32, folder / f"{label.replace(' ', '_')}.onnx", calibration_file)
        args.modelopt_version = version or args.modelopt_version
    reference = run_all(fp32, inputs, args.threads)
    rows = []
    for label, path in contenders.items():
        row = {"model": case.label, "contender": label, "autocast_said": said.get(label)}
        if path is None:
            rows.append(row)
            continue
        row.update(float_nodes(path))
        row["ort_cpu"] = scores(reference, reference if label.startswith("fp32") else run_all(path, inputs, args.threads), case.agree)
        if not label.startswith("fp32"):
            emulated = storage_emulation(path, folder / f"{path.stem}-storage.onnx")
            row["storage"] = scores(reference, run_all(emulated, inputs, args.threads, optimize=False), case.agree)
        rows.append(row)
    print(f"  {case.label}: {len(inputs)} images, {time.perf_counter() - started:.0f} s", flush=True)
    return rows


def table(rows: list, cases: dict) -> None:
    def view(scored) -> list:
        if not scored:
            return ["-", "-", "-"]
        agree = f"{scored['agree']:.4f}" if "agree" in scored else "-"
        return [str(scored["nonfinite"]), f"{scored['cosine_min']:.8f} / {scored['cosine_mean']:.8f}", agree]

    print("| model | contender | FP32 nodes | FP32 MACs | ORT CPU: NaN/Inf | cos min / mean | agree | storage emulation: NaN/Inf | cos min / mean | agree |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        case = cases[row["model"]]
        name = f"{case.label} {case.model} {case.height}x{case.width}"
        if "float" not in row:
            print(f"| {name} | {row['contender']} | {row['autocast_said']} |" + " |" * 7)
            continue
        share = f"{100 * row['fp32_mac_share']:.2f}%"
        cells = [name, row["contender"], f"{row['fp32']}/{row['float']}", share, *view(row["ort_cpu"]), *view(row.get("storage"))]
        print("| " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modelopt-python", help="an interpreter with nvidia-modelopt (default: $MODELOPT_PYTHON, then this one)")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma list of {', '.join(MODELS)}")
    parser.add_argument(
        "--seg-b1", action="store_true", help="also the trained mosaic Seg-B1 at 1024x2048 (trained on first use, ~40 min; then several minutes)"
    )
    parser.add_argument("--images", type=int, default=16, help="held-out images per model (Seg-B1: at most 4)")
    parser.add_argument("--calib", type=int, default=16, help="calibration images (ours and AutoCast + calib)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--save", type=Path)
    add_tiny_flag(parser)
    args = parser.parse_args()
    python = modelopt_python(args.modelopt_python)
    if python is None:
        skip("nvidia-modelopt not found (--modelopt-python; see this script's docstring for its venv)", args.tiny)
    chosen = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in MODELS]
    if unknown:
        sys.exit(f"unknown model {unknown[0]!r}; choose from {', '.join(MODELS)}")
    if args.tiny:
        args.images, args.calib, args.seg_b1 = 2, 2, True
    small = args.tiny
    cases = {
        "digits": Case("digits", "efficientvit_b0", 64, 64, agree="top-1"),
        "mosaic": Case("mosaic", "efficientvit_seg_b0_cityscapes", *((64, 128) if small else (512, 1024)), agree="pixels"),
        "sam": Case("sam", "efficientvit_sam_tiny", 256, 256, file="encoder.onnx"),
        "seg_b1": Case("seg_b1", "efficientvit_seg_b1_cityscapes", *((64, 128) if small else (1024, 2048)), agree="pixels", autocast_calib=1),
    }
    chosen += ["seg_b1"] if args.seg_b1 else []
    args.images_for = lambda case: min(args.images, 4) if case.label == "seg_b1" else args.images
    started = time.perf_counter()
    host = cpu_facts(args.threads)
    print(host_line(host), flush=True)
    print(f"AutoCast from {python}", flush=True)
    rows, args.modelopt_version = [], "?"
    with tempfile.TemporaryDirectory(prefix="evitdeploy-autocast-") as scratch:
        for name in chosen:
            rows += evaluate(cases[name], Path(scratch), args, python)
    print(
        f"nvidia-modelopt {args.modelopt_version}; ONNX Runtime {ort_version()} CPU, {args.threads} threads; FP32 nodes: computing in FP32 / "
        "in a float type; cos: per-image cosine to FP32 (-1 for an image with NaN/Inf); agree: argmax agreement with FP32"
    )
    table(rows, cases)
    seconds = round(time.perf_counter() - started, 1)
    print(f"done in {seconds} s", flush=True)
    if args.save:
        args.save.write_text(json.dumps({"host": host, "modelopt": args.modelopt_version, "rows": rows, "seconds": seconds}, indent=2) + "\n")


if __name__ == "__main__":
    main()
