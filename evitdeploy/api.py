"""The Python API behind the CLI verbs: each returns JSON-ready data and raises UserError."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional

from evitdeploy import limits, memory
from evitdeploy.artifact import Artifact, model_sha256, model_size, open_artifact, prepare_output, sha256_of
from evitdeploy.errors import UserError
from evitdeploy.parity import tolerances_for
from evitdeploy.spec import ModelSpec, parse_dynamic_axes

Progress = Optional[Callable[[str], None]]


def _step(progress: Progress, name: str) -> None:
    if progress:
        progress(name)


def list_models() -> list[dict]:
    from evitdeploy.models import MODELS

    return [
        {
            "name": name,
            "task": entry.spec.task,
            "dataset": entry.spec.dataset,
            "classes": entry.spec.num_classes,
            "input": "x".join(map(str, entry.spec.input_shape[2:])),
            "description": entry.description,
        }
        for name, entry in MODELS.items()
    ]


def parse_dynamic(value) -> tuple[str, ...]:
    """'batch,height,width' / 'all' / '' (or a sequence of names) -> axes tuple; rejects unknown
    names. The CLI and export_model use it both, so the API takes what the CLI takes."""
    return parse_dynamic_axes(value)


def export_model(
    model_name: str,
    target: str = "onnx",
    precision: str = "fp32",
    output: Optional[Path] = None,
    checkpoint: Optional[Path] = None,
    batch: Optional[int] = None,
    height: Optional[int] = None,
    width: Optional[int] = None,
    dynamic=(),  # names of DYNAMIC_AXES, or 'batch,height' / 'all' as on the command line
    opset: Optional[int] = None,
    simplify: bool = True,
    force: bool = False,
    seed: int = 0,
    attention_eps: Optional[float] = None,
    data: Optional[Path] = None,
    progress: Progress = None,
    reduced=None,
    channels_last: bool = False,
    profile=None,
    engine: bool = True,
) -> Artifact:
    """`reduced` (exporters.PrecisionOptions) sets calibration and planning for fp16/int8;
    `channels_last` gives a TFLite model an NHWC input."""
    from evitdeploy.exporters import ExportOptions, PrecisionOptions, export, get_target
    from evitdeploy.models import get_spec

    limits.check_seed(seed)
    spec = get_spec(model_name).with_input(batch, height, width)
    dynamic = parse_dynamic(dynamic)  # exact names, unknown ones refused (a Python caller skips the CLI's parsing)
    if channels_last and get_target(target, precision).name != "tflite":
        raise UserError("--nhwc is for --target tflite", "drop --nhwc; ONNX models take NCHW")
    get_target(target, precision)
    reduced = reduced or PrecisionOptions()
    reduced.check()
    _require_memory_for_export(spec, dynamic, precision, reduced)
    from evitdeploy.exporters.onnx import MAX_OPSET, default_opset

    opset = default_opset(spec) if opset is None else opset
    if not 17 <= opset <= MAX_OPSET:
        raise UserError(f"opset {opset} is not supported", f"use --opset 17 to {MAX_OPSET} (LayerNormalization needs 17)")
    output = Path(output or f"{model_name}-{target}-{precision}")
    prepare_output(output, force)
    _step(progress, f"building {model_name}" + (f" from {checkpoint}" if checkpoint else f" (random init, seed {seed})"))
    from evitdeploy.models import build_model

    model, spec = build_model(spec, checkpoint, seed, attention_eps)
    inputs, source = _validation_inputs(spec, precision, reduced, data)
    weights = {"model": model_name, "seed": None if checkpoint else seed, "attention_eps": spec.attention_eps}
    if checkpoint:
        weights.update(checkpoint=str(Path(checkpoint).resolve()), checkpoint_sha256=sha256_of(Path(checkpoint)))
    options = ExportOptions(
        output=output,
        precision=precision,
        opset=opset,
        dynamic_axes=dynamic,
        simplify=simplify,
        validation_inputs=inputs,
        validation_source=source,
        source=weights,
        progress=progress,
        reduced=reduced,
        channels_last=channels_last,
        profile=profile,
        engine=engine,
    )
    return export(model, spec, target, options)


def _require_memory_for_export(spec: ModelSpec, dynamic, precision: str, reduced) -> None:
    """Refuse an export this host cannot hold, before any folder exists or the model is built. A
    dynamic export is validated at one more, larger shape too (exporters/onnx.py validate)."""
    from dataclasses import replace

    n, c, h, w = spec.input_shape
    m = spec.size_multiple
    largest = replace(spec, input_shape=(n + ("batch" in dynamic), c, h + 2 * m * ("height" in dynamic), w + m * ("width" in dynamic)))
    calib = reduced.count_for(h, w) if precision != "fp32" else None
    memory.require_fits(largest, "export", f"exporting {spec.name} at {h}x{w}" + (f", batch {n}" if n > 1 else ""), precision=precision, calib_count=calib)


def _validation_inputs(spec, precision: str, reduced, data: Optional[Path], count: int = 2):
    """Images to validate a reduced-precision model on: with a calibration source of the user's,
    another draw of it (images not used for calibration); else --data or the sample photos."""
    from evitdeploy.calibration.data import load_inputs

    if data is None and precision != "fp32" and reduced.calib not in (None, "samples", "synthetic"):
        from evitdeploy.calibration.calibset import build_calibration_set

        used = reduced.count_for(spec.height, spec.width)
        inputs = build_calibration_set(spec, reduced.calib, count, reduced.seed + 2000, held_out_after=used).inputs
        return inputs, f"calibration source {reduced.calib}, images not used for calibration"
    return load_inputs(spec, spec.height, spec.width, data, count=count)


def plan_model(
    model_name: str,
    precision: str,
    checkpoint: Optional[Path] = None,
    height: Optional[int] = None,
    width: Optional[int] = None,
    seed: int = 0,
    attention_eps: Optional[float] = None,
    opset: Optional[int] = None,
    reduced=None,
    progress: Progress = None,
    torch_fp16: Optional[str] = None,
) -> dict:
    """The precision plan an fp16/int8 export would follow, with its ranges and (INT8) sensitivity.
    `torch_fp16` (a PyTorch device, "cpu" or "cuda"): also run FP16 in PyTorch there, plain and
    following the plan, against FP32 (calibration.torch_plan): the plan's FP16 numerics on that
    device's own FP16 kernels, with no TensorRT needed."""
    import tempfile

    from evitdeploy.exporters import PrecisionOptions
    from evitdeploy.exporters.onnx import default_opset, write_graph
    from evitdeploy.exporters.onnx_precision import make_plan
    from evitdeploy.models import build_model, get_spec

    if precision not in ("fp16", "int8"):
        raise UserError(f"precision {precision!r} has no plan", "plans are made for --precision fp16 or int8")
    if torch_fp16 is not None:
        _require_torch_device(torch_fp16, precision)
    limits.check_seed(seed)
    reduced = reduced or PrecisionOptions()
    reduced.check()
    spec = get_spec(model_name).with_input(None, height, width)
    memory.require_fits(spec, "plan", f"a {precision} plan for {spec.name} at {spec.height}x{spec.width}", calib_count=reduced.count_for(spec.height, spec.width))
    _step(progress, f"building {model_name}" + (f" from {checkpoint}" if checkpoint else f" (random init, seed {seed})"))
    model, spec = build_model(spec, checkpoint, seed, attention_eps)
    with tempfile.TemporaryDirectory(prefix="evitdeploy-plan-") as scratch:
        fp32_path = Path(scratch) / "fp32.onnx"
        write_graph(model, spec, fp32_path, opset or default_opset(spec), True, progress)
        result = make_plan(fp32_path, spec, precision, reduced, progress)
    made = {"kind": "plan", "seconds": result.seconds, **result.plan.to_dict(), "ranges": result.ranges.to_dict()}
    if torch_fp16 is not None:
        from evitdeploy.calibration.torch_plan import fp16_numerics

        inputs, source = _validation_inputs(spec, precision, reduced, None)
        _step(progress, f"running FP32, plain FP16 and the plan's FP16 in PyTorch on {torch_fp16} ({len(inputs)} images)")
        numerics = fp16_numerics(model, spec, result.plan, inputs, torch_fp16)
        made["torch_fp16"] = {"device": torch_fp16, "data": source, **{k: v["metrics"] | {"passed": v["passed"]} for k, v in numerics["reports"].items()}}
    return made


def _require_torch_device(device: str, precision: str) -> None:
    import torch

    if precision != "fp16":
        raise UserError("--torch-fp16 checks an FP16 plan", "use it with --precision fp16")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"PyTorch sees no CUDA GPU for --torch-fp16 {device}", "run on a host with an NVIDIA GPU and a CUDA build of PyTorch, or use --torch-fp16 cpu", 3)
    if not device.startswith(("cuda", "cpu")):
        raise UserError(f"--torch-fp16 {device!r} is not a device evitdeploy checks on", "use cpu or cuda (cuda:N)")


def _runner_for(artifact: Artifact, threads: Optional[int], taking_turns: bool = False):
    if artifact.target == "tflite":
        from evitdeploy.runners.tflite import TFLiteRunner

        return TFLiteRunner(artifact.model_file, artifact.spec, threads=threads)
    if artifact.target == "trt" and artifact.model_file.suffix == ".onnx":
        from evitdeploy.runners.onnxruntime import OnnxRuntimeRunner  # a recipe artifact: the ONNX the engine is built from

        return OnnxRuntimeRunner(artifact.model_file, threads=threads)
    if artifact.target == "trt":
        from evitdeploy.runners.tensorrt import TensorRTRunner

        return TensorRTRunner(artifact.model_file, artifact.spec, artifact.manifest)
    if artifact.target == "coreml":
        from evitdeploy.runners.coreml import CoreMLRunner

        return CoreMLRunner(artifact.model_file, artifact.spec)
    if artifact.target != "onnx":
        raise UserError(f"no runner for target {artifact.target!r} in this version", "use an ONNX, TFLite or Core ML artifact")
    from evitdeploy.runners.onnxruntime import OnnxRuntimeRunner

    # Two sessions taking turns: no thread-pool spinning (an idle pool's spinning threads steal the
    # busy one's cores) and workers pinned to the same cores (both see the same neighbours).
    return OnnxRuntimeRunner(artifact.model_file, threads=threads, spinning=not taking_turns, pin_threads=taking_turns)


def _resolve(path: Path, model_name: Optional[str]) -> Artifact:
    spec = None
    if model_name:
        from evitdeploy.models import get_spec

        spec = get_spec(model_name)
    artifact = open_artifact(path, spec=spec)
    # A manifest says what the artifact is (size included): its spec wins. --model naming the same
    # model adds nothing; naming another one is a contradiction, refused rather than guessed.
    if artifact.manifest and model_name and model_name != artifact.spec.name:
        raise UserError(
            f"--model {model_name} contradicts the artifact: the artifact's manifest says it is {artifact.spec.name}",
            "drop --model; it is only for a bare model file without a manifest",
        )
    return artifact


def _sized_spec(artifact: Artifact, batch, height, width) -> ModelSpec:
    """The artifact's spec at the requested size; static dims of a manifest artifact cannot change."""
    spec = artifact.spec
    current = {"batch": spec.input_shape[0], "height": spec.height, "width": spec.width}
    for axis, value in (("batch", batch), ("height", height), ("width", width)):
        if artifact.manifest and value not in (None, current[axis]) and axis not in spec.dynamic_axes:
            raise UserError(
                f"this artifact was exported with a static {axis} of {current[axis]}",
                f"drop --{axis}, or re-export with --dynamic {axis}",
            )
    return spec.with_input(batch, height, width)


def _reference_for(artifact: Artifact, spec: ModelSpec, checkpoint: Optional[Path]):
    source = artifact.manifest.get("source", {})
    if checkpoint is None and source.get("checkpoint"):
        checkpoint = Path(source["checkpoint"])
        if not checkpoint.is_file():
            raise UserError(
                f"the checkpoint this artifact was exported from is not at {checkpoint}",
                "pass --checkpoint PATH to the same weights",
            )
        if sha256_of(checkpoint) != source.get("checkpoint_sha256"):
            raise UserError(f"{checkpoint} changed since the export (sha256 differs)", "pass --checkpoint to the exported weights")
    seed = source.get("seed") if source.get("seed") is not None else 0
    eps = source.get("attention_eps", spec.attention_eps)
    from evitdeploy.models import build_model

    model, _ = build_model(spec, checkpoint, seed, eps)
    model.set_formulation("textbook")  # the reference's own arithmetic, not our rewrites
    return model


def check_artifact(
    path: Path,
    model_name: Optional[str] = None,
    checkpoint: Optional[Path] = None,
    data: Optional[Path] = None,
    samples: int = 8,
    synthetic: bool = False,
    batch: Optional[int] = None,
    height: Optional[int] = None,
    width: Optional[int] = None,
    threads: Optional[int] = None,
    tolerance_overrides: Optional[dict] = None,
    progress: Progress = None,
) -> dict:
    """Parity of an artifact against the PyTorch reference on real photos (by default).
    `tolerance_overrides`: gates to replace ({"max_abs": 1e-3}); a gate given as None is turned off."""
    from evitdeploy.calibration.data import load_inputs

    limits.check_range("--samples", samples, 1, limits.SAMPLES_MAX)
    limits.check_range("--threads", threads, 1, limits.THREADS_MAX)
    _step(progress, f"verifying {path}")
    artifact = _resolve(Path(path), model_name)
    spec = _sized_spec(artifact, batch, height, width)
    memory.require_fits(spec, "check", f"checking {spec.name} at {spec.height}x{spec.width}" + (f", batch {spec.input_shape[0]}" if spec.input_shape[0] > 1 else "") + f" on {samples} inputs", images=samples)
    inputs, source = load_inputs(spec, spec.height, spec.width, data, samples, synthetic)
    tolerances = tolerances_for(artifact.precision).override(**(tolerance_overrides or {}))
    return parity_report(artifact, spec, inputs, source, tolerances, threads, checkpoint, progress)[0]


def predicts_here(artifact: Artifact) -> Optional[str]:
    """None when this host can run the artifact, else why not (Core ML predicts only on macOS)."""
    import platform

    if artifact.target == "coreml" and platform.system() != "Darwin":
        return "Core ML predicts only on macOS: parity and latency are measured by verify.py on a Mac or the device"
    return None


def times_here(artifact: Artifact) -> Optional[str]:
    """None when latency measured here means something for the artifact, else why not."""
    if artifact.target == "trt" and artifact.model_file.suffix == ".onnx":
        return "TensorRT engines are built and timed on the device (`evitdeploy build BUNDLE` there); parity here is the ONNX on ONNX Runtime"
    return predicts_here(artifact)


def reference_outputs(artifact: Artifact, spec: ModelSpec, inputs, checkpoint=None):
    """The PyTorch reference's outputs for the inputs (what a bundle's verify.py compares with)."""
    from evitdeploy.device_verify import run_batches
    from evitdeploy.runners.torch import TorchRunner

    reference = _reference_for(artifact, spec, checkpoint)
    with TorchRunner(reference, spec) as runner:
        return run_batches(lambda batch: runner.infer({spec.input_name: batch})[spec.output_name], inputs, spec.input_shape[0])


def parity_report(artifact: Artifact, spec: ModelSpec, inputs, source: str, tolerances, threads, checkpoint, progress):
    """(the parity report, PyTorch outputs, artifact outputs) for these inputs."""
    from evitdeploy.parity import compare, parity_outputs
    from evitdeploy.runners.torch import TorchRunner

    with _runner_for(artifact, threads) as candidate:  # load first: a broken file fails fast
        candidate.check_spec(spec)
        _step(progress, "building the PyTorch reference")
        reference = _reference_for(artifact, spec, checkpoint)
        _step(progress, f"running {len(inputs)} inputs through both")
        with TorchRunner(reference, spec) as ref_runner:
            expected, outputs = parity_outputs(ref_runner, candidate, spec, inputs, spec.input_shape[0])
            versions = {**ref_runner.versions(), **candidate.versions()}
    report = compare(spec, expected, outputs, artifact.precision, tolerances)
    return {
        "kind": "parity",
        "artifact": str(artifact.folder),
        "model": spec.name,
        "task": spec.task,
        "target": artifact.target,
        "input_shape": list(spec.input_shape),
        "artifact_bytes": model_size(artifact.model_file),
        "data": source,
        "versions": versions,
        **report,
    }, expected, outputs


def _check_counts(warmup: int, count: Optional[int], min_time_s: float, threads: Optional[int] = None) -> None:
    limits.check_timing(warmup, count, min_time_s, threads)


def _bench_feed(spec: ModelSpec) -> dict:
    from evitdeploy.calibration.data import load_inputs

    inputs, _ = load_inputs(spec, spec.height, spec.width, None, count=1)
    return {spec.input_name: inputs[[0] * spec.input_shape[0]]}


def _bench_summary(artifact: Artifact, spec: ModelSpec, threads: int, results: list[dict], mode: str) -> dict:
    """The bench JSON (schema BENCH_SCHEMA): artifact identity, host fingerprint, raw samples."""
    from evitdeploy.bench import BENCH_SCHEMA, host_info

    model_file = artifact.model_file
    recorded = artifact.manifest.get("files")
    return {
        "kind": "bench",
        "schema": BENCH_SCHEMA,
        "mode": mode,
        "artifact": str(artifact.folder),
        "model_file": model_file.name,
        "artifact_sha256": model_sha256(model_file, recorded if isinstance(recorded, dict) else None),
        "artifact_bytes": model_size(model_file),
        "model": spec.name,
        "task": spec.task,
        "target": artifact.target,
        "precision": artifact.precision,
        "input_shape": list(spec.input_shape),
        "host": host_info(threads),
        "results": results,
    }


def bench_artifact(
    path: Path,
    model_name: Optional[str] = None,
    checkpoint: Optional[Path] = None,
    threads: Optional[int] = None,
    warmup: int = 10,
    count: Optional[int] = None,
    min_time_s: float = 0.0,
    batch: Optional[int] = None,
    height: Optional[int] = None,
    width: Optional[int] = None,
    against_torch: bool = False,
    progress: Progress = None,
) -> dict:
    """Latency of an artifact on this host (and optionally PyTorch eager on the same input)."""
    from evitdeploy.bench import bench_runner

    _check_counts(warmup, count, min_time_s, threads)
    threads = threads or os.cpu_count()
    artifact = _resolve(Path(path), model_name)
    spec = _sized_spec(artifact, batch, height, width)
    memory.require_fits(spec, "bench", f"benchmarking {spec.name} at {spec.height}x{spec.width}" + (f", batch {spec.input_shape[0]}" if spec.input_shape[0] > 1 else ""))
    feed = _bench_feed(spec)
    _step(progress, f"benchmarking {artifact.model_file.name} on {artifact.target} ({threads} threads)")
    with _runner_for(artifact, threads) as runner:
        runner.check_spec(spec)
        results = [bench_runner(runner, feed, f"{artifact.target}/{artifact.precision}", warmup, count, min_time_s)]
        results[0]["providers"] = runner.providers
        if hasattr(runner, "gpu_times_ms"):  # a TensorRT engine: trtexec's separate profile run, GPU compute time
            _step(progress, "timing GPU compute (CUDA events, buffers bound once)")
            from evitdeploy.device_verify import latency_stats

            samples = runner.gpu_times_ms(feed[spec.input_name], warmup, len(results[0]["latency_samples_ms"]))
            results[0]["gpu_compute"] = {**latency_stats(samples, spec.input_shape[0]), "latency_samples_ms": [round(t, 4) for t in samples]}
    if against_torch:
        from evitdeploy.runners.torch import TorchRunner

        _step(progress, "benchmarking PyTorch eager (the reference)")
        reference = _reference_for(artifact, spec, checkpoint)
        with TorchRunner(reference, spec, threads=threads) as runner:
            results.append(bench_runner(runner, feed, "torch/eager", warmup, count, min_time_s))
    summary = _bench_summary(artifact, spec, threads, results, "single")
    if against_torch:
        summary["speedup_vs_torch"] = results[1]["stats"]["median_ms"] / results[0]["stats"]["median_ms"]
    return summary


def bench_interleaved(
    baseline_path: Path,
    new_path: Path,
    threads: Optional[int] = None,
    warmup: int = 10,
    count: Optional[int] = None,
    min_time_s: float = 0.0,
    block: int = 1,
    progress: Progress = None,
) -> tuple[dict, dict]:
    """Both artifacts timed in one process, alternating turns: two bench results, one drift."""
    from evitdeploy.bench import latency_result, measure_interleaved

    _check_counts(warmup, count, min_time_s, threads)
    limits.check_range("--block", block, 1, limits.BLOCK_MAX)
    threads = threads or os.cpu_count()
    base_artifact, new_artifact = _resolve(Path(baseline_path), None), _resolve(Path(new_path), None)
    base_spec, new_spec = base_artifact.spec, new_artifact.spec
    for spec in (base_spec, new_spec):
        memory.require_fits(spec, "bench", f"benchmarking {spec.name} at {spec.height}x{spec.width}")
    base_feed, new_feed = _bench_feed(base_spec), _bench_feed(new_spec)
    _step(progress, f"timing {base_artifact.folder.name} and {new_artifact.folder.name} in alternating turns ({threads} threads)")
    with _runner_for(base_artifact, threads, True) as base_runner, _runner_for(new_artifact, threads, True) as new_runner:
        base_runner.check_spec(base_spec)
        new_runner.check_spec(new_spec)
        base_samples, new_samples = measure_interleaved(
            lambda: base_runner.infer(base_feed), lambda: new_runner.infer(new_feed), warmup, count, min_time_s, block
        )
        summaries = []
        for artifact, spec, runner, feed, samples in (
            (base_artifact, base_spec, base_runner, base_feed, base_samples),
            (new_artifact, new_spec, new_runner, new_feed, new_samples),
        ):
            result = latency_result(runner, feed, f"{artifact.target}/{artifact.precision}", samples, warmup)
            result["providers"] = runner.providers
            result["thread_pool"] = {"spinning": False, "worker_affinities": getattr(runner, "applied_affinities", "")}
            summaries.append(_bench_summary(artifact, spec, threads, [result], "interleaved"))
    return summaries[0], summaries[1]
