"""`evitdeploy build BUNDLE`: on the device, build the TensorRT engine a bundle's recipe describes
(a promptable model's two), then check it against the bundle's reference outputs and time it the
way trtexec reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from evitdeploy.device import integrity, metrics
from evitdeploy.artifact import MANIFEST, build_manifest, read_manifest
from evitdeploy.files import write_json
from evitdeploy.errors import UserError
from evitdeploy.backends.tensorrt.plan import DEFAULT_WORKSPACE_MIB
from evitdeploy.spec import ModelSpec


def _trusted(folder: Path) -> dict:
    try:
        manifest = integrity.load_manifest(folder)
        integrity.check_integrity(folder, manifest)
    except integrity.BundleError as exc:
        raise UserError(exc.message, exc.hint, 2 if exc.exit_code != 3 else 3) from exc
    read_manifest(folder / MANIFEST, bundle=True)  # the full schema, once the device's own checks passed
    if manifest["target"] != "trt":
        raise UserError(f"{folder} is a {manifest['target']} bundle, not a TensorRT one", "run `python3 verify.py` in it instead")
    return manifest


def build_in_bundle(folder: Path, workspace_mib: int = DEFAULT_WORKSPACE_MIB, count: int = 100, progress: Optional[Callable[[str], None]] = None) -> dict:
    from evitdeploy.precision.plan import PrecisionPlan
    from evitdeploy.backends.tensorrt.export import build_engines, engine_builds
    from evitdeploy.backends.tensorrt.runtime import gpu_identity, import_tensorrt

    from evitdeploy import limits

    limits.check_range("--count", count, 1, high=limits.COUNT_MAX)
    folder = Path(folder)
    manifest = _trusted(folder)
    trt = import_tensorrt()
    identity = gpu_identity()
    spec = ModelSpec.from_dict(manifest["spec"])
    plan_file = folder / "precision_plan.json"
    plan = PrecisionPlan.from_dict(json.loads(plan_file.read_text())) if plan_file.is_file() else None
    shape_range = {k: tuple(v) for k, v in manifest["export"]["shapes"].items()}
    builds = engine_builds(spec, manifest["precision"], plan=plan, shape_range=shape_range)
    engines = build_engines(trt, folder, spec, builds=builds, gpu=identity["gpu"], workspace_mib=workspace_mib, step=progress)
    host = {"toolchain": {"tensorrt": trt.__version__}, "export": identity}  # what the runners hold an engine to
    if progress:
        progress(
            "checking the engines against reference.npz, then timing them" if spec.promptable else "checking the engine against reference.npz, then timing it"
        )
    paths = {build.role: folder / build.engine for build in builds}
    tolerances = manifest["bundle"]["tolerances"]
    parity, timing = (_check_promptable if spec.promptable else _check_model)(folder, spec, paths, host=host, tolerances=tolerances, count=count)
    export = {**manifest["export"], "engine": {**manifest["export"]["engine"], "built": True, **engines[builds[0].role], **identity}, **identity}
    if spec.promptable:
        export["decoder"] = {**export["decoder"], "engine": {**export["decoder"]["engine"], "built": True, **engines["decoder"], **identity}}
    sections = {
        k: v for k, v in manifest.items() if k not in ("format", "created", "target", "precision", "model_file", "spec", "files", "export", "toolchain")
    }
    updated = build_manifest(
        folder,
        "trt",
        manifest["precision"],
        spec=spec,
        model_file=manifest["model_file"],
        **sections,
        export=export,
        toolchain={**manifest.get("toolchain", {}), "tensorrt": trt.__version__},
    )
    write_json(folder / MANIFEST, updated)
    return {
        "kind": "engine-build",
        "bundle": str(folder),
        "model": spec.name,
        "precision": manifest["precision"],
        "passed": parity["passed"],
        "failures": parity["failures"],
        "parity": parity,
        **timing,
        "engine": export["engine"],
        **({"decoder_engine": export["decoder"]["engine"]} if spec.promptable else {}),
        "tensorrt": trt.__version__,
        "runtime": f"TensorRT {trt.__version__}",
    }


def _check_model(folder: Path, spec: ModelSpec, paths: dict, *, host: dict, tolerances: dict, count: int) -> tuple[dict, dict]:
    """The engine against reference.npz's PyTorch outputs; GPU compute time on a reference batch."""
    from evitdeploy.backends.tensorrt.runner import TensorRTRunner

    with np.load(folder / integrity.REFERENCE, allow_pickle=False) as reference:
        inputs, expected = reference["inputs"], reference["expected"]
    with TensorRTRunner(paths["model"], spec, host) as runner:
        outputs = metrics.run_batches(lambda b: runner.infer({spec.input_name: b})[spec.output_name], inputs, spec.input_shape[0])
        gpu = metrics.latency_stats(runner.gpu_times_ms(inputs[[0] * spec.input_shape[0]], count=count), spec.input_shape[0])
    return metrics.compare_outputs(spec.task, expected, outputs, tolerances=tolerances), {"gpu_compute": gpu}


def _check_promptable(folder: Path, spec: ModelSpec, paths: dict, *, host: dict, tolerances: dict, count: int) -> tuple[dict, dict]:
    """Both engines on reference.npz's images and prompts against PyTorch's masks, as verify.py
    checks a bundle (mask IoU, IoU-prediction error, cosine); GPU compute time of the encoder per
    image and of the decoder per prompt (the first reference prompt)."""
    from evitdeploy.backends.promptable import runner_pair
    from evitdeploy.backends.tensorrt.runner import TensorRTRunner
    from evitdeploy.device import prompts

    inputs, feeds, expected = integrity.load_prompted_reference(folder, spec.to_dict())  # checked as verify.py checks it
    with TensorRTRunner(paths["encoder"], spec, host) as encoder, TensorRTRunner(paths["decoder"], spec, host) as decoder:
        encode, decode = runner_pair(encoder, decoder, spec)
        outputs = prompts.prompted_outputs(encode, decode, inputs, feeds=feeds)
        index, feed = feeds[0]
        feed = dict(feed, image_embeddings=np.asarray(encode(inputs[index : index + 1]), np.float32))
        timing = {
            "gpu_compute": metrics.latency_stats(encoder.gpu_times_ms(inputs[:1], count=count), 1),
            "decoder_gpu_compute": metrics.latency_stats(decoder.gpu_times_ms(feed, count=count), 1),
        }
    found = prompts.promptable_metrics(expected, outputs, shown=prompts.shown_per_prompt(feeds, expected["iou_predictions"]))
    failures = prompts.promptable_failures(found, tolerances)
    return {"passed": not failures, "failures": failures, "metrics": {k: v for k, v in found.items() if not isinstance(v, list)}}, timing
