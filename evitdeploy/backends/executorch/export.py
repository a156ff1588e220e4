"""PyTorch -> ExecuTorch .pte: FP32 and INT8 (the shared plan) on XNNPACK, FP32 on the Core ML delegate.

- Lowering: `torch.export` of the deployment formulation -> `to_edge_transform_and_lower` with
  the delegate's partitioner -> `to_executorch`. Whatever the delegate does not take runs on
  ExecuTorch's portable kernels; the manifest records the partition (delegated subgraphs, and
  every op type left outside with its count). For XNNPACK the model is first rewritten
  (rewrites.py: the same arithmetic in ops XNNPACK takes as meant); on B0/B1 what then stays
  outside is LiteMLA's q/k/v split and the head's mean / layer_norm.
- INT8 follows the shared precision plan (made on the ONNX FP32 graph with the same calibration
  set): PT2E with ExecuTorch's XNNPACKQuantizer, the plan's FP32 modules left out of its
  annotation by an op-level filter (plan.py), calibrated on the plan's calibration images.
- FP16 is declined (the backend descriptor says why); the Core ML delegate is FP32 only here:
  its INT8 would need coremltools' own quantizer, not the plan.
- Core ML delegate: coremltools converts each delegated subgraph on any host; the pip runtime has
  no Core ML backend, so on Linux the export checks the program loads and the whole model went to
  Core ML, and parity is measured by the app on an Apple device.
- A promptable (SAM) model is two programs: `encoder.pte` (the precision asked) and `decoder.pte`,
  FP32 and static, so built for DECODER_POINTS points; the runner pads a prompt to that count and
  the decoder masks the padding out of its attention (models.prompt.PromptDecoder says why).
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
import warnings
from pathlib import Path

from evitdeploy.artifact import Artifact, build_manifest, package_versions
from evitdeploy.files import staged_folder, write_bytes, write_json
from evitdeploy.backends.options import ExportOptions
from evitdeploy.backends.reference import check_export
from evitdeploy.errors import EXIT_CHECK_FAILED, BackendUnavailable, UserError, first_line
from evitdeploy.spec import ModelSpec

MODEL_FILE = "model.pte"
PROMPTABLE_FILES = {"encoder": "encoder.pte", "decoder": "decoder.pte"}  # a SAM artifact's two programs
DECODER_POINTS = 8  # prompt points the decoder is built for: 7 clicks, or a box and 6 (recorded as export.decoder_points)
OPS_FILE = "executorch_plan.json"
DELEGATES = {"xnnpack": "XnnpackBackend", "coreml": "CoreMLBackend"}  # the delegate option's choices -> the runtime's backend id
COREML_TARGET = "iOS17"
TOOLCHAIN = ("torch", "executorch", "torchao", "numpy")


def import_lowering():
    from evitdeploy.backends.executorch.runner import import_executorch

    return import_executorch("executorch.exir", "PyTorch -> .pte")


def partitioner(delegate: str):
    """The delegate's partitioner: XNNPACK (any CPU; ARM phones) or Core ML (FP32 compute, iOS 17+)."""
    if delegate == "xnnpack":
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

        return XnnpackPartitioner()
    from evitdeploy.backends.coreml.runner import import_coremltools

    ct = import_coremltools()  # raises BackendUnavailable naming the coreml extra when it is missing
    from executorch.backends.apple.coreml.compiler import CoreMLBackend
    from executorch.backends.apple.coreml.partition import CoreMLPartitioner

    specs = CoreMLBackend.generate_compile_specs(compute_precision=ct.precision.FLOAT32, minimum_deployment_target=getattr(ct.target, COREML_TARGET))
    return CoreMLPartitioner(compile_specs=specs)


def exported(module, args: tuple):
    """torch.export of a module at these example inputs (static shapes)."""
    import torch

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.export.export(module.eval() if hasattr(module, "eval") else module, args)


def lower(program, delegate: str, what: str) -> tuple[bytes, dict]:
    """(the .pte bytes, the partition) of an exported program; any lowering failure is one line."""
    exir = import_lowering()
    from executorch.devtools.backend_debug import get_delegation_info

    try:
        with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            edge = exir.to_edge_transform_and_lower(program, partitioner=[partitioner(delegate)])
            graph_module = edge.exported_program().graph_module
            partition = partition_of(get_delegation_info(graph_module), delegate)
            if delegate == "coreml":
                from evitdeploy.backends.executorch.coreml import inspect_packages

                partition["coreml_packages"] = inspect_packages(graph_module)
            return bytes(edge.to_executorch().buffer), partition
    except (BackendUnavailable, UserError):
        raise
    except Exception as exc:  # the lowering raises many types; each means "this model does not lower"
        raise UserError(
            f"ExecuTorch cannot lower {what} to {delegate}: {type(exc).__name__}: {first_line(exc, 240)}",
            "an op without a lowering; --delegate xnnpack, or --target onnx, take this model",
        ) from exc


def partition_of(info, delegate: str) -> dict:
    """What the delegate took and what runs on ExecuTorch's portable kernels, by op type."""
    outside = {
        op: b.non_delegated for op, b in info.delegation_by_operator.items() if b.non_delegated and not op.startswith(("getitem", "executorch_call_delegate"))
    }
    return {
        "delegate": DELEGATES[delegate],
        "delegated_subgraphs": info.num_delegated_subgraphs,
        "delegated_nodes": info.num_delegated_nodes,
        "non_delegated_nodes": info.num_non_delegated_nodes,
        "outside_delegate": dict(sorted(outside.items(), key=lambda item: -item[1])),
    }


REWRITES_NOTE = {
    "SpelledOutTanhGELU": "tanh GELU in tanh/mul/add: ExecuTorch's XNNPACK delegate runs aten.gelu(approximate='tanh') as exact GELU (pytorch/executorch#22851)",
    "BatchedLiteMLA": "LiteMLA's matmuls as 3-D bmm and its token sum as a matmul: no expand_copy/sum left on portable kernels",
}


def _rewritten(model, delegate: str, record: dict):
    """The rewrites XNNPACK needs (rewrites.py), counted into `record` for the manifest."""
    from evitdeploy.backends.executorch.rewrites import rewritten

    @contextlib.contextmanager
    def counted():
        with rewritten(model) as counts:
            record.update({name: {"modules": n, "why": REWRITES_NOTE[name]} for name, n in counts.items()})
            yield

    return counted() if delegate == "xnnpack" else contextlib.nullcontext()


def export(model, spec: ModelSpec, options: ExportOptions) -> Artifact:
    import_lowering()
    delegate = options.backend_options["delegate"]  # checked by the registry: a Core ML delegate export is fp32
    if options.dynamic_axes:
        raise UserError("the ExecuTorch target exports static shapes", "drop --dynamic; export one .pte per input size")
    import torch

    timings, sections, promptable, rewrites = {}, {}, {}, {}
    model_file = PROMPTABLE_FILES["encoder"] if spec.promptable else MODEL_FILE
    model.set_formulation("deploy")
    model.eval()
    sample = torch.zeros(spec.input_shape, dtype=torch.float32)
    with staged_folder(options.output) as staging, tempfile.TemporaryDirectory(prefix="evitdeploy-executorch-") as scratch:
        started = time.perf_counter()
        if options.precision == "int8":
            program, sections = _quantized(model, spec, sample, staging=staging, scratch=Path(scratch), options=options, rewrites=rewrites)
            timings["precision_s"] = time.perf_counter() - started
        else:
            options.step("torch.export of the deployment formulation")
            with _rewritten(model, delegate, rewrites):
                program = exported(model, (sample,))
        started = time.perf_counter()
        options.step(f"lowering to ExecuTorch ({delegate}) and writing the .pte")
        payload, partition = lower(program, delegate, what=spec.name)
        if not partition["delegated_subgraphs"]:
            raise UserError(
                f"the {delegate} delegate took no part of {spec.name}", "nothing was written; report it with `evitdeploy doctor` output", EXIT_CHECK_FAILED
            )
        if delegate == "coreml":
            from evitdeploy.backends.executorch.coreml import check_packages

            failures = check_packages(partition["coreml_packages"], spec.input_shape)
            if failures:
                raise UserError(f"the Core ML payload is not what was asked: {'; '.join(failures)}", "nothing was written; report it", EXIT_CHECK_FAILED)
        write_bytes(staging / model_file, payload)
        timings["lower_s"] = time.perf_counter() - started
        partitions = {"model": partition}
        if spec.promptable:  # the prompt decoder stays FP32: 4M parameters, milliseconds per prompt
            from evitdeploy.backends.promptable import POINTS_MEANING
            from evitdeploy.device.prompts import DECODER_OUTPUTS, decoder_input_shapes

            started = time.perf_counter()
            options.step(f"lowering the prompt decoder ({DECODER_POINTS} points, FP32)")
            shapes = decoder_input_shapes(spec.embedding, DECODER_POINTS, point_count=True)
            decoder = model.decoder(spec.decoder_masks, fixed_points=DECODER_POINTS)
            with _rewritten(decoder, delegate, {}):
                program = exported(decoder, tuple(torch.ones(s) for s in shapes.values()))
            payload, partitions["decoder"] = lower(program, delegate, what=f"{spec.name}'s prompt decoder")
            write_bytes(staging / PROMPTABLE_FILES["decoder"], payload)
            timings["decoder_lower_s"] = time.perf_counter() - started
            sections["models"] = dict(PROMPTABLE_FILES)
            promptable = {
                "decoder_points": DECODER_POINTS,
                "decoder_points_meaning": POINTS_MEANING,
                "decoder_inputs": list(shapes),
                "decoder_outputs": list(DECODER_OUTPUTS),
            }
        started = time.perf_counter()
        options.step(
            f"validating (ExecuTorch {delegate} vs PyTorch on real images)"
            if delegate == "xnnpack"
            else "validating the program (loads, Core ML took the model); prediction needs an Apple device"
        )
        validation = validate(model, spec, staging, delegate=delegate, options=options)
        timings["validate_s"] = time.perf_counter() - started
        manifest = build_manifest(
            staging,
            "executorch",
            options.precision,
            spec=spec,
            model_file=model_file,
            source=options.source,
            export={
                "exporter": "executorch (torch.export -> to_edge_transform_and_lower -> to_executorch)",
                "delegate": delegate,
                "delegates": [DELEGATES[delegate]],
                "partition": partitions,
                "inputs": "float32 NCHW, C-contiguous (the runner copies any strided view: ExecuTorch reads strides as contiguous)",
                "rewrites": rewrites,
                **({"coreml": {"minimum_deployment_target": COREML_TARGET, "compute_precision": "FP32"}} if delegate == "coreml" else {}),
                **promptable,
                "seconds": {k: round(v, 3) for k, v in timings.items()},
            },
            validation=validation,
            **sections,
            toolchain=package_versions(*TOOLCHAIN, *(("coremltools",) if delegate == "coreml" else ())),
        )
        write_json(staging / "manifest.json", manifest)
    folder = Path(options.output)
    return Artifact(folder, folder / model_file, "executorch", precision=options.precision, spec=spec, manifest=manifest)


def _quantized(model, spec: ModelSpec, sample, staging: Path, scratch: Path, options: ExportOptions, rewrites: dict) -> tuple:
    """The plan (ONNX FP32 graph, same calibration set) and the INT8 program that follows it."""
    from evitdeploy.backends.executorch.plan import quantized_program
    from evitdeploy.graph import default_opset, write_graph
    from evitdeploy.precision.pipeline import make_plan, write_plan

    onnx_path = scratch / "fp32.onnx"
    write_graph(model, spec, onnx_path, opset=default_opset(spec), simplify=True, step=options.step)
    model.set_formulation("deploy")
    result = make_plan(onnx_path, spec, "int8", options=options.reduced, progress=options.progress)
    naive = options.reduced.naive
    options.step(
        f"PT2E INT8 {'naively: XNNPACKQuantizer on every op, a baseline' if naive else 'following the plan'} ({len(result.calibration.inputs)} calibration images)"
    )
    with _rewritten(model, "xnnpack", rewrites):
        program, chooser = quantized_program(model, sample, result.plan.naive() if naive else result.plan, calibration=result.calibration.inputs)
    write_json(staging / OPS_FILE, {"precision": "int8", "ops": [d.__dict__ for d in chooser.decisions.values()]})
    return program, write_plan(
        result,
        staging,
        executorch_ops_file=OPS_FILE,
        search_runtime="ONNX Runtime on the plan's QDQ ONNX (a proxy: the same plan, blocks and calibration images)",
        executorch_quantizer="PT2E XNNPACKQuantizer: symmetric int8, per-channel weights, static activations (observers over every calibration image)",
        executorch=chooser.summary(),
        **({"naive": "XNNPACKQuantizer's symmetric int8 on every op it annotates"} if naive else {}),
    )


def _hint(precision: str) -> str:
    return (
        "report this model/size"
        if precision == "fp32"
        else "calibrate on images like your deployment's (--calib DIR), raise --search-budget, or check with looser tolerances"
    )


def validate(model, spec: ModelSpec, staging: Path, delegate: str, options: ExportOptions) -> dict:
    """XNNPACK: the program(s) in ExecuTorch's runtime against PyTorch on the validation photos
    (SAM: on the parity prompts). Core ML: the program loads and Core ML took every node."""
    from evitdeploy.backends.executorch.runner import ExecuTorchRunner

    if options.validation_inputs is None:
        raise ValueError("validation_inputs are required")
    runtime = {"runtime": "ExecuTorch Python runtime (pip executorch)", "data": options.validation_source}
    if delegate == "coreml":
        return {
            **runtime,
            "program": _program_loads(staging),
            "checks": [{"skipped": "the pip ExecuTorch runtime has no Core ML backend; run the bundle in an app on an Apple device"}],
        }
    if spec.promptable:
        from evitdeploy.backends.promptable import validate_export_pair

        with ExecuTorchRunner(staging / PROMPTABLE_FILES["encoder"], spec) as encoder, ExecuTorchRunner(staging / PROMPTABLE_FILES["decoder"], spec) as decoder:
            check = validate_export_pair(model, spec, (encoder, decoder), options=options, what="the .pte pair", hint=_hint(options.precision))
        return {**runtime, "checks": [check]}
    with ExecuTorchRunner(staging / MODEL_FILE, spec) as candidate:
        checks = check_export(model, spec, candidate, options=options, what="the .pte", hint=_hint(options.precision))
    return {**runtime, "checks": checks}


def _program_loads(staging: Path) -> dict:
    """Each .pte parses as an ExecuTorch program with a `forward` method (what Linux can check of a Core ML one)."""
    from evitdeploy.backends.executorch.runner import import_executorch, quiet_runtime

    runtime = import_executorch()
    found = {}
    for path in sorted(staging.glob("*.pte")):
        try:
            with quiet_runtime():
                methods = sorted(runtime.Runtime.get().load_program(str(path)).method_names)
        except (RuntimeError, ValueError) as exc:
            raise UserError(
                f"{path.name} does not load as an ExecuTorch program: {first_line(exc)}", "nothing was written; report it", EXIT_CHECK_FAILED
            ) from exc
        if "forward" not in methods:
            raise UserError(f"{path.name} has no forward method (it has {methods})", "nothing was written; report it", EXIT_CHECK_FAILED)
        found[path.name] = methods
    return {"loads": found, "core_ml_spec": "checked from the payload: export.partition.*.coreml_packages"}
