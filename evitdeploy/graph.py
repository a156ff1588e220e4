"""PyTorch -> ONNX, the hub every other target builds on.

Opset: 17 by default, the lowest opset with LayerNormalization as a single op (the classifier
head's LN stays one node that ONNX Runtime and TensorRT fuse), accepted by TensorRT >= 8.6
(JetPack 5/6), ONNX Runtime >= 1.14 and the mobile converters. L models default to 20, where
GELU (tanh) is one `Gelu` op instead of eight elementwise nodes: 1.5x faster for L1 on ONNX Runtime
CPU; it needs TensorRT >= 10 / ONNX Runtime >= 1.17, so `--opset 17` remains for older targets.
The TorchScript-based exporter (dynamo=False) is used: it is fast (seconds for B1), folds
BatchNorm into convolutions in eval mode and handles dynamic batch/height/width.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

from evitdeploy.errors import UserError
from evitdeploy.spec import SEGMENTATION, ModelSpec

MAX_OPSET = 20


def default_opset(spec: ModelSpec) -> int:
    """20 for the GELU (L-series) models, EfficientViT-SAM's included: GELU is then one op."""
    return 20 if spec.family.startswith(("l", "sam_")) else 17


def write_graph(model, spec: ModelSpec, path: Path, opset: int, simplify: bool, step=None) -> dict:
    """The FP32 ONNX graph (deployment formulation), simplified; returns the seconds each step took."""
    step = step or (lambda name: None)
    timings = {}
    started = time.perf_counter()
    step(f"exporting to ONNX (opset {opset})")
    _torch_export(model, spec, path, opset=opset)
    timings["export_s"] = time.perf_counter() - started
    if simplify:
        started = time.perf_counter()
        step("simplifying with onnxslim")
        _simplify(path)
        timings["simplify_s"] = time.perf_counter() - started
    return timings


def write_decoder_graph(decoder, spec: ModelSpec, path: Path, opset: int, simplify: bool) -> dict:
    """A promptable model's prompt decoder as ONNX (SAM's recipe): the number of points and the
    batch are dynamic; returns the seconds each step took."""
    import torch

    from evitdeploy.device.prompts import decoder_input_shapes

    started = time.perf_counter()
    dummy = tuple(torch.zeros(shape) for shape in decoder_input_shapes(spec.embedding, points=2).values())  # traced: no value decides a branch
    batch = {0: "batch"}
    axes = {
        "image_embeddings": batch,
        "point_coords": {0: "batch", 1: "points"},
        "point_labels": {0: "batch", 1: "points"},
        "mask_input": batch,
        "has_mask_input": batch,
        "low_res_masks": batch,
        "iou_predictions": batch,
    }
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            decoder.eval(),
            dummy,
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=list(decoder.input_names),
            output_names=list(decoder.output_names),
            dynamic_axes=axes,
            do_constant_folding=True,
        )
    timings = {"decoder_export_s": time.perf_counter() - started}
    if simplify:
        started = time.perf_counter()
        _simplify(path)
        timings["decoder_simplify_s"] = time.perf_counter() - started
    return timings


def with_dynamic_axes(spec: ModelSpec, axes) -> ModelSpec:
    """The spec with these dynamic axes (exact names; an unknown one is refused, not ignored)."""
    from dataclasses import replace

    from evitdeploy.spec import parse_dynamic_axes

    return replace(spec, dynamic_axes=parse_dynamic_axes(axes))


def _torch_export(model, spec: ModelSpec, path: Path, opset: int) -> None:
    import torch

    dims = {"batch": 0, "height": 2, "width": 3}
    input_axes = {dims[a]: a for a in spec.dynamic_axes}
    output_axes = {0: "batch"} if "batch" in spec.dynamic_axes else {}
    if spec.task == SEGMENTATION:
        output_axes.update({dims[a]: f"{a}_out" for a in spec.dynamic_axes if a != "batch"})
    dummy = torch.zeros(spec.input_shape, dtype=torch.float32)
    model.set_formulation("deploy")
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings and the exporter's deprecation notice
        torch.onnx.export(
            model.eval(),
            (dummy,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=[spec.input_name],
            output_names=[spec.output_name],
            dynamic_axes={spec.input_name: input_axes, spec.output_name: output_axes} if input_axes else None,
            do_constant_folding=True,
        )


def _simplify(path: Path) -> None:
    import onnx
    import onnxslim

    slim = onnxslim.slim(onnx.load(str(path)))
    if slim is None:  # onnxslim returns None when it could not process the model
        raise UserError(f"onnxslim failed on {path.name}", "re-run with --no-simplify")
    onnx.save(slim, str(path))
