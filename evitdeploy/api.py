"""The Python API behind the CLI verbs: each returns JSON-ready data and raises UserError."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Optional

from evitdeploy import limits, memory
from evitdeploy.backends import get_backend, open_artifact, runner_for
from evitdeploy.artifact import Artifact, model_sha256, model_size, sha256_of
from evitdeploy.device.preprocessing import describe as describe_preprocessing
from evitdeploy.files import prepare_output
from evitdeploy.errors import EXIT_BACKEND_UNAVAILABLE, UserError
from evitdeploy.parity import tolerances_for
from evitdeploy.requests import BenchRequest, CheckRequest, ExportRequest, InterleaveRequest, PlanRequest
from evitdeploy.spec import ModelSpec, parse_dynamic_axes
from evitdeploy.progress import Progress, report_step


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


def export_model(request: ExportRequest, progress: Progress = None) -> Artifact:
    """Export `request.model` to `request.target` and validate it; `request.reduced` sets
    calibration and planning for fp16/int8, `request.backend_options` the options the target declares."""
    from evitdeploy.backends import check_options, export, get_backend
    from evitdeploy.backends.options import ExportOptions
    from evitdeploy.precision.options import PrecisionOptions
    from evitdeploy.models import get_spec

    model_name, target, precision, checkpoint, seed = request.model, request.target, request.precision, request.checkpoint, request.seed
    limits.check_seed(seed)
    limits.check_range("--attention-eps", request.attention_eps, 0)
    spec = memory.with_input(get_spec(model_name), request.batch, height=request.height, width=request.width)
    if request.preprocessing is not None:  # the user's: read and checked before anything is built
        from evitdeploy.data import read_preprocessing

        spec = spec.with_preprocessing(read_preprocessing(request.preprocessing))
    dynamic = parse_dynamic(request.dynamic)  # exact names, unknown ones refused (a Python caller skips the CLI's parsing)
    backend = get_backend(target, precision)  # refuses an unknown target or a precision it does not build
    backend_options = check_options(backend, request.backend_options, precision)
    reduced = _int8_kernels_for(request.reduced or PrecisionOptions(), backend, precision=precision, profile=request.profile)
    reduced.check()
    _require_stock_int8(reduced, backend, precision)
    require_search_target(reduced, precision)
    if precision == "int8":
        reduced.require_int8_kernels_here()  # before the model is built: its search and validation run on this CPU's kernels
    require_memory_for_export(spec, dynamic, precision=precision, reduced=reduced)
    from evitdeploy.graph import MAX_OPSET, default_opset

    opset = default_opset(spec) if request.opset is None else request.opset
    if not 17 <= opset <= MAX_OPSET:
        raise UserError(f"opset {opset} is not supported", f"use --opset 17 to {MAX_OPSET} (LayerNormalization needs 17)")
    _check_calibration_source(spec, precision, reduced)
    # read before the folder exists or the model is built: empty data or NaN/Inf in it is refused at
    # the door (the model's weights change nothing in the preprocessing)
    verb = "deploy" if request.profile is not None else "export"
    inputs, source, sizes = _validation_inputs(spec, precision, reduced=reduced, data=request.data, purpose=verb)
    output = Path(request.output or f"{model_name}-{target}-{precision}")
    prepare_output(output, request.force)
    report_step(progress, f"building {model_name}" + (f" from {checkpoint}" if checkpoint else f" (random init, seed {seed})"))
    from evitdeploy.models import build_model

    model, spec = build_model(spec, checkpoint, seed=seed, attention_eps=request.attention_eps)
    weights = {"model": model_name, "seed": None if checkpoint else seed, "attention_eps": spec.attention_eps}
    if checkpoint:
        weights.update(checkpoint=str(Path(checkpoint).resolve()), checkpoint_sha256=sha256_of(Path(checkpoint)))
    options = ExportOptions(
        output=output,
        precision=precision,
        opset=opset,
        dynamic_axes=dynamic,
        simplify=request.simplify,
        validation_inputs=inputs,
        validation_source=source,
        validation_sizes=tuple(sizes),
        source=weights,
        progress=progress,
        reduced=reduced,
        profile=request.profile,
        backend_options=backend_options,
    )
    return export(model, spec, target, options=options)


def _int8_kernels_for(reduced, backend, *, precision: str, profile):
    """The options with the x86 INT8 kernel class the export (or, with no backend, the plan) is for:
    the flag's, else the profile's, else any CPU. A flag that cannot apply (not int8, or a backend
    with its own kernels) is refused."""
    from dataclasses import replace

    if reduced.int8_kernels is not None:
        if precision != "int8":
            raise UserError("--int8-kernels is for --precision int8", "drop --int8-kernels")
        if backend is not None and not backend.x86_int8_kernels:
            from evitdeploy.backends import BACKENDS

            offering = [b.name for b in BACKENDS.values() if b.x86_int8_kernels]
            raise UserError(
                f"--int8-kernels is for targets whose INT8 runs on x86 integer kernels ({', '.join(offering)})",
                f"drop --int8-kernels; {backend.name} quantizes for its own kernels",
            )
        return reduced
    if profile is not None and profile.int8_kernels:
        return replace(reduced, int8_kernels=profile.int8_kernels)
    return reduced


def require_search_target(reduced, precision: str) -> None:
    """--max-drop steers the INT8 search; no other precision searches."""
    if reduced.max_drop is not None and precision != "int8":
        raise UserError(
            f"--max-drop steers the INT8 search; {precision} has none", "drop --max-drop (eval or deploy --dataset measure the drop), or use -p int8"
        )


def _require_stock_int8(reduced, backend, precision: str) -> None:
    """`--int8-plan naive` names a target's stock quantizer: refused where there is none to name."""
    if not reduced.naive:
        return
    from evitdeploy.backends import BACKENDS

    offering = ", ".join(b.name for b in BACKENDS.values() if b.stock_int8)
    if precision != "int8":
        raise UserError(f"--int8-plan naive is for --precision int8, not {precision}", "drop --int8-plan, or export -p int8")
    if not backend.stock_int8:
        raise UserError(
            f"--int8-plan naive is offered where evitdeploy runs a stock quantizer with its defaults ({offering}); {backend.name} quantizes by the plan only",
            "drop --int8-plan, or export the naive baseline with --target onnx",
        )


def require_memory_for_export(spec: ModelSpec, dynamic, *, precision: str, reduced) -> None:
    """Refuse an export this host cannot hold, before any folder exists or the model is built. A
    dynamic export is validated at one more, larger shape too (backends/onnxruntime/export.py validate)."""
    from dataclasses import replace

    n, c, h, w = spec.input_shape
    m = spec.size_multiple
    largest = replace(spec, input_shape=(n + ("batch" in dynamic), c, h + 2 * m * ("height" in dynamic), w + m * ("width" in dynamic)))
    calib = reduced.count_for(h, w) if precision != "fp32" else None
    memory.require_fits(largest, "export", f"exporting {spec.name} at {h}x{w}" + (f", batch {n}" if n > 1 else ""), precision=precision, calib_count=calib)


def _check_calibration_source(spec: ModelSpec, precision: str, reduced) -> None:
    """A calibration source with no images or NaN/Inf in it, refused before the model is built."""
    if precision != "fp32":
        from evitdeploy.precision.calibset import check_source

        check_source(spec, reduced.calib, purpose=f"{precision.upper()} calibration")


def _validation_inputs(spec, precision: str, *, reduced, data: Optional[Path], count: int = 2, purpose: str = "parity"):
    """Images to validate a reduced-precision model on: with a calibration source of the user's,
    another draw of it (images not used for calibration); else --data or the sample photos.
    Returns (inputs, where they came from, each image's original size: what SAM's prompts are in)."""
    from evitdeploy.data import load_inputs_and_sizes

    if data is None and precision != "fp32" and reduced.calib not in (None, "samples", "synthetic"):
        from evitdeploy.precision.calibset import build_calibration_set

        used = reduced.count_for(spec.height, spec.width)
        inputs = build_calibration_set(
            spec, reduced.calib, count, seed=reduced.seed + 2000, held_out_after=used, purpose=f"{precision.upper()} calibration"
        ).inputs
        return inputs, f"calibration source {reduced.calib}, images not used for calibration", [(spec.height, spec.width)] * len(inputs)
    inputs, sizes, source = load_inputs_and_sizes(spec, (spec.height, spec.width), source=data, count=count, purpose=purpose)
    return inputs, source, sizes


def plan_model(request: PlanRequest, progress: Progress = None) -> dict:
    """The precision plan an fp16/int8 export would follow, with its ranges and (INT8) sensitivity.
    `request.torch_fp16` (a PyTorch device, "cpu" or "cuda"): also run FP16 in PyTorch there, plain
    and following the plan, against FP32 (precision.torch_plan): the plan's FP16 numerics on that
    device's own FP16 kernels, with no TensorRT needed."""
    import tempfile

    from evitdeploy.precision.options import PrecisionOptions
    from evitdeploy.graph import default_opset, write_graph
    from evitdeploy.precision.pipeline import make_plan
    from evitdeploy.models import build_model, get_spec

    model_name, precision, checkpoint, seed, torch_fp16 = request.model, request.precision, request.checkpoint, request.seed, request.torch_fp16
    if precision not in ("fp16", "bf16", "int8"):
        raise UserError(f"precision {precision!r} has no plan", "plans are made for --precision fp16, bf16 or int8")
    if torch_fp16 is not None:
        _require_torch_device(torch_fp16, precision)
    limits.check_seed(seed)
    limits.check_range("--attention-eps", request.attention_eps, 0)
    reduced = _int8_kernels_for(request.reduced or PrecisionOptions(), None, precision=precision, profile=None)
    reduced.check()
    require_search_target(reduced, precision)
    spec = memory.with_input(get_spec(model_name), height=request.height, width=request.width)
    memory.require_fits(
        spec, "plan", f"a {precision} plan for {spec.name} at {spec.height}x{spec.width}", calib_count=reduced.count_for(spec.height, spec.width)
    )
    _check_calibration_source(spec, precision, reduced)
    report_step(progress, f"building {model_name}" + (f" from {checkpoint}" if checkpoint else f" (random init, seed {seed})"))
    model, spec = build_model(spec, checkpoint, seed=seed, attention_eps=request.attention_eps)
    with tempfile.TemporaryDirectory(prefix="evitdeploy-plan-") as scratch:
        fp32_path = Path(scratch) / "fp32.onnx"
        write_graph(model, spec, fp32_path, opset=request.opset or default_opset(spec), simplify=True, step=progress)
        result = make_plan(fp32_path, spec, precision, options=reduced, progress=progress)
    made = {"kind": "plan", "seconds": result.seconds, **result.plan.to_dict(), "ranges": result.ranges.to_dict()}
    if torch_fp16 is not None:
        from evitdeploy.precision.torch_plan import fp16_numerics

        inputs, source, _ = _validation_inputs(spec, precision, reduced=reduced, data=None)
        report_step(progress, f"running FP32, plain FP16 and the plan's FP16 in PyTorch on {torch_fp16} ({len(inputs)} images)")
        numerics = fp16_numerics(model, spec, result.plan, inputs=inputs, device=torch_fp16)
        made["torch_fp16"] = {"device": torch_fp16, "data": source, **{k: v["metrics"] | {"passed": v["passed"]} for k, v in numerics["reports"].items()}}
    return made


def _require_torch_device(device: str, precision: str) -> None:
    import torch

    if precision != "fp16":
        raise UserError("--torch-fp16 checks an FP16 plan", "use it with --precision fp16")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(
            f"PyTorch sees no CUDA GPU for --torch-fp16 {device}", "run on a host with an NVIDIA GPU and a CUDA build of PyTorch, or use --torch-fp16 cpu", 3
        )
    if not device.startswith(("cuda", "cpu")):
        raise UserError(f"--torch-fp16 {device!r} is not a device evitdeploy checks on", "use cpu or cuda (cuda:N)")


def artifact_header(artifact: Artifact, spec: ModelSpec) -> dict:
    """What a report on one artifact's answers starts with (predict, eval): which artifact and
    model, the task, target, precision, input and the preprocessing photos went through."""
    return {
        "artifact": str(artifact.folder),
        "model": spec.name,
        "task": spec.task,
        "target": artifact.target,
        "precision": artifact.precision,
        "input_shape": list(spec.input_shape),
        "preprocessing": spec.preprocessing,
    }


def resolve_artifact(path: Path, model_name: Optional[str]) -> Artifact:
    """The artifact at `path`; `model_name` describes only a bare model file without a manifest."""
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


def _sized_spec(artifact: Artifact, batch, *, height, width) -> ModelSpec:
    """The artifact's spec at the requested size; static dims of a manifest artifact cannot change."""
    spec = artifact.spec
    current = {"batch": spec.input_shape[0], "height": spec.height, "width": spec.width}
    for axis, value in (("batch", batch), ("height", height), ("width", width)):
        if artifact.manifest and value not in (None, current[axis]) and axis not in spec.dynamic_axes:
            raise UserError(
                f"this artifact was exported with a static {axis} of {current[axis]}",
                f"drop --{axis}, or re-export with --dynamic {axis}",
            )
    return memory.with_input(spec, batch, height=height, width=width)


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

    model, _ = build_model(spec, checkpoint, seed=seed, attention_eps=eps)
    model.set_formulation("textbook")  # the reference's own arithmetic, not our rewrites
    return model


def check_artifact(request: CheckRequest, progress: Progress = None) -> dict:
    """Parity of an artifact against the PyTorch reference on real photos (by default).
    `request.tolerance_overrides`: gates to replace ({"max_abs": 1e-3}); a gate given as None is turned off."""
    from evitdeploy.data import load_inputs

    samples, threads = request.samples, request.threads
    limits.check_range("--samples", samples, 1, high=limits.SAMPLES_MAX)
    limits.check_range("--threads", threads, 1, high=limits.THREADS_MAX)
    limits.check_tolerances(request.tolerance_overrides)
    report_step(progress, f"verifying {request.path}")
    artifact = resolve_artifact(Path(request.path), request.model_name)
    spec = _sized_spec(artifact, request.batch, height=request.height, width=request.width)
    memory.require_fits(
        spec,
        "check",
        f"checking {spec.name} at {spec.height}x{spec.width}" + (f", batch {spec.input_shape[0]}" if spec.input_shape[0] > 1 else "") + f" on {samples} inputs",
        images=samples,
    )
    int8_kernels_here(artifact)  # refuses, before any work, an INT8 model whose parity this CPU would get wrong by luck
    tolerances = tolerances_for(artifact.precision).override(**(request.tolerance_overrides or {}))
    if spec.promptable:
        return _check_promptable(artifact, spec, request, tolerances=tolerances, progress=progress)
    inputs, source = load_inputs(spec, spec.height, spec.width, source=request.data, count=samples, synthetic=request.synthetic, purpose="check")
    return parity_report(
        artifact,
        spec,
        inputs,
        source=source,
        tolerances=tolerances,
        threads=threads,
        checkpoint=request.checkpoint,
        progress=progress,
    )[0]


def _check_promptable(artifact: Artifact, spec: ModelSpec, request: CheckRequest, *, tolerances, progress: Progress) -> dict:
    """A promptable artifact's parity: each photo through both encoders, then the fixed parity
    prompts (points, boxes, both) through both decoders; mask IoU, IoU-prediction error, cosine."""
    from evitdeploy.backends.promptable import artifact_models, compare_prompted, prompted_outputs, reference_outputs, runner_pair
    from evitdeploy.data import load_inputs_and_sizes
    from evitdeploy.device.prompts import parity_feeds

    inputs, sizes, source = load_inputs_and_sizes(spec, (spec.height, spec.width), source=request.data, count=request.samples, synthetic=request.synthetic)
    models = artifact_models(artifact)
    with runner_for(models["encoder"], request.threads) as encoder, runner_for(models["decoder"], request.threads) as decoder:
        encoder.check_spec(spec)
        report_step(progress, f"running {len(inputs)} images and their prompts through {artifact.target}")
        got = prompted_outputs(*runner_pair(encoder, decoder, spec), inputs, sizes=sizes, spec=spec)
        versions = {**encoder.versions()}
    report_step(progress, "running them through the PyTorch reference")
    expected = reference_outputs(_reference_for(artifact, spec, request.checkpoint), spec, inputs, sizes=sizes)
    header = _parity_header(artifact, spec, source=source, versions=versions)
    return {
        **header,
        "artifact_bytes": sum(model_size(m.model_file) for m in models.values()),
        **compare_prompted(
            expected, got, feeds=parity_feeds(sizes, frame=spec.prompt_frame, embedding=spec.embedding), precision=artifact.precision, tolerances=tolerances
        ),
    }


def _parity_header(artifact: Artifact, spec: ModelSpec, *, source: str, versions: dict) -> dict:
    """What every parity report says about what was compared."""
    header = {
        "kind": "parity",
        "artifact": str(artifact.folder),
        "model": spec.name,
        "task": spec.task,
        "target": artifact.target,
        "input_shape": list(spec.input_shape),
        "artifact_bytes": model_size(artifact.model_file),
        "data": source,
        "preprocessing": describe_preprocessing(spec.preprocessing),  # how photos became inputs (an .npz of inputs or --synthetic skips it)
        "versions": versions,
    }
    kernels = int8_kernels_here(artifact)
    return {**header, "int8_kernels": kernels} if kernels else header


def int8_kernels_here(artifact: Artifact) -> Optional[dict]:
    """For an INT8 model made for x86 integer kernels: the class it is for, this CPU's, and a note
    where they differ (None for any other artifact). A model whose sums this CPU's kernels would
    saturate (full 8-bit weights, no VNNI) is refused with exit 3: its parity here would be luck."""
    from evitdeploy.device import cpu

    recorded = artifact.manifest.get("int8_kernels")
    if not recorded:
        return None
    found = cpu.kernel_class()
    refusal = cpu.refusal(recorded["target"], found)
    if refusal:
        raise UserError(*refusal, EXIT_BACKEND_UNAVAILABLE)
    note = cpu.judged_note(recorded["target"], found)
    return {**recorded, "this_cpu": found, **({"note": note} if note else {})}


def promptable_reference(artifact: Artifact, spec: ModelSpec, inputs, *, sizes: list, checkpoint=None) -> dict:
    """A promptable bundle's reference arrays: the parity prompts on these images and PyTorch's masks."""
    from evitdeploy.backends.promptable import bundle_reference

    return bundle_reference(_reference_for(artifact, spec, checkpoint), spec, inputs, sizes=sizes)


@contextlib.contextmanager
def reference_pipeline(artifact: Artifact, spec: ModelSpec, checkpoint=None):
    """(encode(batch) -> output, decode(feed) -> outputs or None) of the PyTorch FP32 reference (the
    textbook formulation: the reference's own arithmetic), for device.pipeline: what `eval` scores
    an artifact against and what a bundle's pipeline.npz holds."""
    from evitdeploy.backends.promptable import runner_pair
    from evitdeploy.backends.torch.runner import TorchDecoderRunner, TorchRunner

    model = _reference_for(artifact, spec, checkpoint)
    with contextlib.ExitStack() as stack:
        stack.enter_context(model.formulation("textbook"))
        encoder = stack.enter_context(TorchRunner(model, spec))
        decoder = stack.enter_context(TorchDecoderRunner(model.decoder(spec.decoder_masks))) if spec.promptable else None
        encode, decode = runner_pair(encoder, decoder, spec)
        yield encode, decode if spec.promptable else None


def pipeline_reference(artifact: Artifact, spec: ModelSpec, photos: list, *, checkpoint=None) -> dict:
    """pipeline.npz's arrays for these raw photos: PyTorch's final answers (top-k logits, class
    maps, SAM's shown masks) through device.pipeline, the code verify.py and apps run."""
    from evitdeploy.device import pipeline_check

    data = spec.to_dict()
    with reference_pipeline(artifact, spec, checkpoint) as (encode, decode):
        return pipeline_check.arrays_of(photos, data, pipeline_check.answers(photos, data, encode, decode=decode))


def predicts_here(artifact: Artifact) -> Optional[str]:
    """None when this host can run the artifact, else why not (Core ML predicts only on macOS)."""
    from evitdeploy.backends import why_not_here

    return why_not_here(artifact, "predict")


def times_here(artifact: Artifact) -> Optional[str]:
    """None when latency measured here means something for the artifact, else why not."""
    from evitdeploy.backends import why_not_here

    return why_not_here(artifact, "time")


def reference_outputs(artifact: Artifact, spec: ModelSpec, inputs, checkpoint=None):
    """The PyTorch reference's outputs for the inputs (what a bundle's verify.py compares with)."""
    from evitdeploy.device.metrics import run_batches
    from evitdeploy.backends.torch.runner import TorchRunner

    reference = _reference_for(artifact, spec, checkpoint)
    with TorchRunner(reference, spec) as runner:
        return run_batches(lambda batch: runner.infer({spec.input_name: batch})[spec.output_name], inputs, spec.input_shape[0])


def parity_report(artifact: Artifact, spec: ModelSpec, inputs, *, source: str, tolerances, threads, checkpoint, progress):
    """(the parity report, PyTorch outputs, artifact outputs) for these inputs."""
    from evitdeploy.parity import compare, parity_outputs
    from evitdeploy.backends.torch.runner import TorchRunner

    with runner_for(artifact, threads) as candidate:  # load first: a broken file fails fast
        candidate.check_spec(spec)
        report_step(progress, "building the PyTorch reference")
        reference = _reference_for(artifact, spec, checkpoint)
        report_step(progress, f"running {len(inputs)} inputs through both")
        with TorchRunner(reference, spec) as ref_runner:
            expected, outputs = parity_outputs(ref_runner, candidate, spec, inputs=inputs, batch=spec.input_shape[0])
            versions = {**ref_runner.versions(), **candidate.versions()}
    report = compare(spec, expected, outputs, precision=artifact.precision, tolerances=tolerances)
    return (
        {
            **_parity_header(artifact, spec, source=source, versions=versions),
            **report,
        },
        expected,
        outputs,
    )


def _check_counts(warmup: int, count: Optional[int], *, min_time_s: float, threads: Optional[int] = None) -> None:
    limits.check_timing(warmup, count, min_time_s=min_time_s, threads=threads)


def _bench_feed(spec: ModelSpec) -> dict:
    from evitdeploy.data import load_inputs

    inputs, _ = load_inputs(spec, spec.height, spec.width, count=1)
    return {spec.input_name: inputs[[0] * spec.input_shape[0]]}


def bench_summary(artifact: Artifact, spec: ModelSpec, threads: int, results: list[dict], mode: str) -> dict:
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


def bench_artifact(request: BenchRequest, progress: Progress = None) -> dict:
    """Latency of an artifact on this host (and optionally PyTorch eager on the same input)."""
    from evitdeploy.bench import bench_runner

    warmup, count, min_time_s = request.warmup, request.count, request.min_time_s
    _check_counts(warmup, count, min_time_s=min_time_s, threads=request.threads)
    threads = request.threads or os.cpu_count()
    artifact = resolve_artifact(Path(request.path), request.model_name)
    spec = _sized_spec(artifact, request.batch, height=request.height, width=request.width)
    memory.require_fits(
        spec, "bench", f"benchmarking {spec.name} at {spec.height}x{spec.width}" + (f", batch {spec.input_shape[0]}" if spec.input_shape[0] > 1 else "")
    )
    feed = _bench_feed(spec)
    if spec.promptable:
        return bench_summary(artifact, spec, threads=threads, results=_bench_promptable(artifact, spec, request, feed=feed, progress=progress), mode="single")
    report_step(progress, f"benchmarking {artifact.model_file.name} on {artifact.target} ({threads} threads)")
    with runner_for(artifact, threads) as runner:
        runner.check_spec(spec)
        results = [bench_runner(runner, feed, f"{artifact.target}/{artifact.precision}", warmup=warmup, count=count, min_time_s=min_time_s)]
        results[0]["providers"] = runner.providers
        if get_backend(artifact.target).gpu_compute_timing:  # trtexec's separate profile run: GPU compute time alone
            report_step(progress, "timing GPU compute (CUDA events, buffers bound once)")
            from evitdeploy.device.metrics import latency_stats

            samples = runner.gpu_times_ms(feed[spec.input_name], warmup, len(results[0]["latency_samples_ms"]))
            results[0]["gpu_compute"] = {**latency_stats(samples, spec.input_shape[0]), "latency_samples_ms": [round(t, 4) for t in samples]}
    if request.against_torch:
        from evitdeploy.backends.torch.runner import TorchRunner

        report_step(progress, "benchmarking PyTorch eager (the reference)")
        reference = _reference_for(artifact, spec, request.checkpoint)
        with TorchRunner(reference, spec, threads=threads) as runner:
            results.append(bench_runner(runner, feed, "torch/eager", warmup=warmup, count=count, min_time_s=min_time_s))
    summary = bench_summary(artifact, spec, threads=threads, results=results, mode="single")
    if request.against_torch:
        summary["speedup_vs_torch"] = results[1]["stats"]["median_ms"] / results[0]["stats"]["median_ms"]
    return summary


DECODER_POINTS = (1, 4, 16)  # prompt sizes the decoder is timed at: a click, a few clicks, a dense prompt


def _bench_promptable(artifact: Artifact, spec: ModelSpec, request: BenchRequest, *, feed: dict, progress: Progress) -> list[dict]:
    """A promptable artifact's latency: the encoder once per image, the decoder per prompt at
    1, 4 and 16 points (its cost grows with the tokens, not the image)."""
    from evitdeploy.backends.promptable import artifact_models, decoder_bench_feed
    from evitdeploy.bench import bench_runner

    threads = request.threads or os.cpu_count()
    models = artifact_models(artifact)
    label = f"{artifact.target}/{artifact.precision}"
    timing = dict(warmup=request.warmup, count=request.count, min_time_s=request.min_time_s)
    with runner_for(models["encoder"], threads) as encoder, runner_for(models["decoder"], threads) as decoder:
        encoder.check_spec(spec)
        report_step(progress, f"benchmarking the encoder ({models['encoder'].model_file.name}) on {artifact.target} ({threads} threads)")
        results = [{**bench_runner(encoder, feed, f"{label} encoder", **timing), "providers": encoder.providers, "model": "encoder"}]
        embedding = encoder.infer(feed)[spec.output_name]
        fixed = artifact.manifest.get("export", {}).get("decoder_points")  # TFLite/Core ML: a decoder of fixed size
        for points in [p for p in DECODER_POINTS if not fixed or p + 1 <= fixed]:  # + SAM's padding point
            report_step(progress, f"benchmarking the decoder with {points} point{'s' if points > 1 else ''}")
            run = bench_runner(decoder, decoder_bench_feed(spec, embedding, points), f"{label} decoder {points}pt", **timing)
            results.append({**run, "ms_per_megapixel": None, "providers": decoder.providers, "model": "decoder", "points": points})
    return results


def bench_interleaved(request: InterleaveRequest, progress: Progress = None) -> tuple[dict, dict]:
    """Both artifacts timed in one process, alternating turns: two bench results, one drift."""
    from evitdeploy.bench import latency_result, measure_interleaved

    warmup, count, min_time_s, block = request.warmup, request.count, request.min_time_s, request.block
    _check_counts(warmup, count, min_time_s=min_time_s, threads=request.threads)
    limits.check_range("--block", block, 1, high=limits.BLOCK_MAX)
    threads = request.threads or os.cpu_count()
    base_artifact, new_artifact = resolve_artifact(Path(request.baseline_path), None), resolve_artifact(Path(request.new_path), None)
    base_spec, new_spec = base_artifact.spec, new_artifact.spec
    for spec in (base_spec, new_spec):
        memory.require_fits(spec, "bench", f"benchmarking {spec.name} at {spec.height}x{spec.width}")
    base_feed, new_feed = _bench_feed(base_spec), _bench_feed(new_spec)
    report_step(progress, f"timing {base_artifact.folder.name} and {new_artifact.folder.name} in alternating turns ({threads} threads)")
    with runner_for(base_artifact, threads, taking_turns=True) as base_runner, runner_for(new_artifact, threads, taking_turns=True) as new_runner:
        base_runner.check_spec(base_spec)
        new_runner.check_spec(new_spec)
        base_samples, new_samples = measure_interleaved(
            lambda: base_runner.infer(base_feed),
            lambda: new_runner.infer(new_feed),
            warmup=warmup,
            count=count,
            min_time_s=min_time_s,
            block=block,
        )
        summaries = []
        for artifact, spec, runner, feed, samples in (
            (base_artifact, base_spec, base_runner, base_feed, base_samples),
            (new_artifact, new_spec, new_runner, new_feed, new_samples),
        ):
            result = latency_result(runner, feed, f"{artifact.target}/{artifact.precision}", samples=samples, warmup=warmup)
            result["providers"] = runner.providers
            result["thread_pool"] = {"spinning": False, "worker_affinities": runner.applied_affinities}
            summaries.append(bench_summary(artifact, spec, threads=threads, results=[result], mode="interleaved"))
    return summaries[0], summaries[1]
