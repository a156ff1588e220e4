"""`deploy`: export -> check -> bench -> bundle for one profile, and one verdict.

Parity is judged with the profile's tolerances; latency against the profile's budget only on a
host of the profile's kind (elsewhere it is measured and reported, not judged).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Optional

from evitdeploy import limits, memory
from evitdeploy.artifact import model_size
from evitdeploy.files import folder_kept_on_success, prepare_output
from evitdeploy.errors import UserError
from evitdeploy.precision.options import PrecisionOptions
from evitdeploy.requests import BenchRequest, CheckRequest, DeployRequest, EvalRequest, ExportRequest
from evitdeploy.progress import Progress


STAGES = ("export", "check", "bench", "bundle")


def _staged(progress: Optional[Callable[[str], None]], index: int) -> Optional[Callable[[str], None]]:
    if progress is None:
        return None
    return lambda step: progress(f"[{index + 1}/{len(STAGES)} {STAGES[index]}] {step}")


def _precision_flags(reduced, precision: str) -> str:
    """The calibration/plan flags that differ from the defaults, as export would take them."""
    from evitdeploy.precision.options import PrecisionOptions

    if precision == "fp32" or reduced is None:
        return ""
    flags = {
        "calib": "--calib",
        "calib_count": "--calib-count",
        "method": "--calib-method",
        "fp16_margin": "--fp16-margin",
        "min_cosine": "--min-cosine-target",
        "search_budget": "--search-budget",
        "int8_kernels": "--int8-kernels",
        "int8_plan": "--int8-plan",
        "dataset": "--dataset",
        "max_drop": "--max-drop",
    }
    default = PrecisionOptions()
    text = "".join(f" {flag} {getattr(reduced, field)}" for field, flag in flags.items() if getattr(reduced, field) != getattr(default, field))
    return text + (" --fp16-io" if reduced.fp16_io else "")


def _require_memory(spec, profile, *, precision: str, reduced, samples: int) -> None:
    """Refuse, before anything is written, a deploy whose export or check cannot fit this host."""
    from evitdeploy import api

    api.require_memory_for_export(spec, profile.dynamic, precision=precision, reduced=reduced)
    memory.require_fits(spec, "check", f"checking {spec.name} at {spec.height}x{spec.width} on {samples} inputs", images=samples)


def _commands(plan: "Plan", *, spec, signed: bool) -> dict:
    """The exact commands: this deploy, the export it ran, and the verification on the device."""
    from evitdeploy.backends import option_flags

    request, profile, output = plan.request, plan.profile, plan.output
    options = (f" --checkpoint {request.checkpoint}" if request.checkpoint else "") + _precision_flags(plan.reduced, plan.precision)
    shape = f" --height {spec.height} --width {spec.width}"
    given = {**profile.backend_options, **request.backend_options}
    export_flags = (f" --dynamic {','.join(profile.dynamic)}" if profile.dynamic else "") + option_flags(plan.backend, given)
    deploy_flags = (f" --backend {profile.backend}" if plan.other_backend else "") + option_flags(plan.backend, request.backend_options)
    where = profile.source if profile.source.endswith(".toml") else profile.name
    return {
        "deploy": f"evitdeploy deploy --profile {where} --model {request.model}{deploy_flags} --precision {plan.precision}{shape}{options} -o {output}",
        "export": f"evitdeploy export --model {request.model} --target {profile.target} --precision {plan.precision} --batch {spec.input_shape[0]}{shape}{export_flags}{options}",
        "verify_on_device": "python3 verify.py" + (" --public-key PUB.pem" if signed else ""),
        "verify_with_evitdeploy": f"evitdeploy verify {output}" + (" --public-key PUB.pem" if signed else ""),
        **({"verify_signature": f"model_signing verify key --signature {output}/model.sig --public_key PUB.pem {output}"} if signed else {}),
    }


def _kernels_of(check: dict) -> dict:
    """The parity report's x86 INT8 kernel classes (made for, judged on), where it has them."""
    return {"int8_kernels": check["int8_kernels"]} if check.get("int8_kernels") else {}


def candidate_backend(profile, name: str) -> str:
    """The folder of one of the profile's candidate backends, from any spelling of its name."""
    from evitdeploy.backends import find

    found = find(name)
    if found is None or found.folder not in profile.candidates:
        raise UserError(f"profile {profile.name} has no candidate backend {name!r}", f"choose one of: {', '.join(profile.candidates)}")
    return found.folder


def require_precision(profile, precision: str) -> None:
    """Refuse a precision the profile does not offer, or offers only on another of its candidates."""
    if precision not in profile.precisions:
        raise UserError(f"profile {profile.name} does not offer precision {precision!r}", f"choose one of: {', '.join(profile.precisions)}")
    if precision not in profile.precisions_for(profile.backend):
        others = [c for c in profile.candidates if precision in profile.precisions_for(c)]
        raise UserError(
            f"profile {profile.name} offers precision {precision!r} on {', '.join(others)}, not on its backend {profile.backend}",
            f"use --precision auto to measure every candidate, --backend {others[0]} -p {precision}, "
            f"or one of {', '.join(profile.precisions_for(profile.backend))} on {profile.backend}",
        )


def require_dataset(request: DeployRequest) -> None:
    """--dataset, --dataset-limit and --max-drop go together; the dataset must be a folder."""
    if request.dataset is None:
        for flag, value in (("--max-drop", request.max_drop), ("--dataset-limit", request.dataset_limit), ("--eval-subset", request.eval_subset)):
            if value is not None:
                raise UserError(f"{flag} is for --dataset", f"add --dataset PATH (labelled data), or drop {flag}")
        return
    if not Path(request.dataset).is_dir():
        raise UserError(f"dataset {request.dataset} is not a folder", "pass the labelled data's folder (see `evitdeploy eval --help`)")
    limits.check_range("--dataset-limit", request.dataset_limit, 1)
    from evitdeploy.evaluation.subset import SUBSET_MAX

    limits.check_range("--eval-subset", request.eval_subset, 1, high=SUBSET_MAX)
    limits.check_range("--max-drop", request.max_drop, 0, high=100)


def input_size(profile, model_name: str, *, height: Optional[int], width: Optional[int]) -> tuple[int, int]:
    """The size a deploy exports at: the user's, else the profile's, else the model's; SAM always
    takes its own square size unless told (it letterboxes the image)."""
    from evitdeploy.models import get_spec

    spec = get_spec(model_name)
    if spec.promptable:
        return height or spec.height, width or spec.width
    return height or profile.height or spec.height, width or profile.width or spec.width


@dataclass(frozen=True)
class Plan:
    """What a deploy will do, settled (and refused where it cannot be done) before anything is written."""

    request: DeployRequest
    profile: object  # profiles.Profile, its backend the one deployed
    backend: object  # that backend's descriptor
    other_backend: bool  # a candidate other than the profile's own backend (what --precision auto chose)
    precision: str
    height: int
    width: int
    promptable: bool
    reduced: PrecisionOptions  # with the profile's INT8 kernel class where the backend has one
    backend_options: dict  # the profile's, then the request's
    output: Path
    signature: Optional[dict]


@dataclass
class Checked:
    """The check stage: the parity report and the arrays the bundle carries."""

    check: dict
    inputs: object
    sizes: list
    source: str
    expected: object = None  # PyTorch's outputs (not for a promptable model: its bundle carries prompts)
    outputs: object = None  # the artifact's outputs here (None where it cannot run here)
    runs_here: bool = True
    accuracy: Optional[dict] = None  # on the user's labelled data (--dataset): evaluation.compare.accuracy_of
    subset: Optional[tuple] = None  # (eval.npz's arrays, its manifest section): --eval-subset, for verify.py


def deploy(request: DeployRequest, progress: Progress = None) -> dict:
    """Run the whole flow for a profile; the bundle is written even when a verdict fails, so the
    evidence can be read, and the summary says so. With `request.sign_key` the bundle is signed in
    the OpenSSF model-signing format (model.sig). Precision "auto" is `autoselect.deploy_fastest`."""
    for flag, value in (("--executor", request.executor), ("--address", request.address)):
        if value is not None:
            raise UserError(f"{flag} is for --precision auto", f"drop {flag}, or add --precision auto")
    plan = plan_deploy(request)
    prepare_output(plan.output, request.force)
    seconds = {"bench": 0.0}
    with folder_kept_on_success(plan.output.parent), tempfile.TemporaryDirectory(prefix=f".{plan.output.name}.work-", dir=plan.output.parent) as scratch:
        started = time.perf_counter()
        artifact = _export(plan, Path(scratch) / "artifact", progress=_staged(progress, 0))
        seconds["export"], started = time.perf_counter() - started, time.perf_counter()
        checked = _check(plan, artifact, progress=_staged(progress, 1))
        seconds["check"], started = time.perf_counter() - started, time.perf_counter()
        bench, budget = _bench(plan, artifact, checked, progress=_staged(progress, 2))
        seconds["bench"], started = (time.perf_counter() - started if bench else 0.0), time.perf_counter()
        if plan.request.dataset is not None:
            checked.accuracy = _evaluate(plan, artifact, checked, progress=_staged(progress, 2))
            if plan.request.eval_subset:
                checked.subset = _subset(plan, artifact, progress=_staged(progress, 2))
            seconds["eval"], started = time.perf_counter() - started, time.perf_counter()
        manifest = _bundle(plan, artifact, checked, bench=bench, budget=budget, progress=_staged(progress, 3))
        seconds["bundle"] = time.perf_counter() - started
    return _summary(plan, checked, bench=bench, budget=budget, manifest=manifest, seconds=seconds)


def plan_deploy(request: DeployRequest) -> Plan:
    """The deploy settled: profile and backend, precision, size, options; every refusal that needs
    no work (an unknown model or backend, a precision the profile lacks, memory, a key that cannot
    sign) happens here, before anything is written."""
    from evitdeploy.backends import check_options, get_backend
    from evitdeploy.models import get_spec
    from evitdeploy.profiles import backend_status, load_profile, require_backend

    profile = load_profile(request.profile)
    other = request.backend is not None and candidate_backend(profile, request.backend) != profile.backend
    if other:
        profile = replace(profile, backend=candidate_backend(profile, request.backend))
    backend = get_backend(profile.backend)
    given = {**profile.backend_options, **request.backend_options}
    if backend.builds_on_device and not backend_status(profile)["installed"]:  # the bundle carries what the device builds from
        given[backend.builds_on_device] = False
    else:
        require_backend(profile)
    promptable = get_spec(request.model).promptable  # an unknown model fails before anything runs
    height, width = input_size(profile, request.model, height=request.height, width=request.width)
    offered = profile.precisions_for(profile.backend)
    precision = request.precision or (profile.precision if profile.precision in offered else offered[0])
    require_precision(profile, precision)
    check_options(backend, given, precision)
    limits.check_range("--samples", request.samples, 1, high=limits.SAMPLES_MAX)
    limits.check_seed(request.seed)
    require_dataset(request)
    reduced = request.reduced or PrecisionOptions()
    if precision == "int8" and profile.int8_kernels and backend.x86_int8_kernels and not reduced.int8_kernels:
        reduced = replace(reduced, int8_kernels=profile.int8_kernels)  # what the export takes from the profile
    if precision == "int8" and request.max_drop is not None and not reduced.naive and not promptable:  # the search aims at the drop deploy judges
        reduced = replace(reduced, dataset=str(request.dataset), max_drop=request.max_drop)  # (a SAM encoder's plan searches by cosine)
    spec = memory.with_input(get_spec(request.model), profile.batch, height=height, width=width)
    _require_memory(spec, profile, precision=precision, reduced=reduced, samples=request.samples)
    signature = None
    if request.sign_key is not None:  # a key that cannot sign is refused before anything is written
        from evitdeploy.signing import signature_section

        signature = signature_section(Path(request.sign_key))
    output = Path(request.output or f"{request.model}-{profile.name}{'-' + profile.backend if other else ''}-{precision}")
    return Plan(
        request=request,
        profile=profile,
        backend=backend,
        other_backend=other,
        precision=precision,
        height=height,
        width=width,
        promptable=promptable,
        reduced=reduced,
        backend_options=given,
        output=output,
        signature=signature,
    )


def _export(plan: Plan, folder: Path, *, progress: Progress):
    from evitdeploy import api

    request, profile = plan.request, plan.profile
    return api.export_model(
        ExportRequest(
            model=request.model,
            target=profile.target,
            precision=plan.precision,
            output=folder,
            checkpoint=request.checkpoint,
            batch=profile.batch,
            height=plan.height,
            width=plan.width,
            seed=request.seed,
            data=request.data,
            preprocessing=request.preprocessing,
            reduced=plan.reduced,
            dynamic=tuple(a for a in profile.dynamic if a == "batch" or not plan.promptable),
            profile=profile,
            backend_options=plan.backend_options,
        ),
        progress=progress,
    )


def _check(plan: Plan, artifact, *, progress: Progress) -> Checked:
    """Parity with the profile's tolerances where the artifact runs here; else the PyTorch outputs
    the bundle's verify.py compares with on the device."""
    from evitdeploy import api
    from evitdeploy.data import load_inputs_and_sizes

    request, spec = plan.request, artifact.spec
    inputs, sizes, source = load_inputs_and_sizes(spec, (spec.height, spec.width), source=request.data, count=request.samples)
    tolerances = plan.profile.tolerances_for(plan.precision)
    cannot_run = api.predicts_here(artifact)
    if cannot_run:
        expected = None if plan.promptable else api.reference_outputs(artifact, spec, inputs, checkpoint=request.checkpoint)
        check = {"kind": "parity", "passed": None, "failures": [], "metrics": {}, "tolerances": asdict(tolerances), "skipped": cannot_run}
        return Checked(check, inputs, sizes=sizes, source=source, expected=expected, runs_here=False)
    if plan.promptable:  # parity by prompt (mask IoU): PyTorch's masks go into the bundle separately
        check = api.check_artifact(
            CheckRequest(
                path=artifact.folder,
                checkpoint=request.checkpoint,
                data=request.data,
                samples=request.samples,
                threads=plan.profile.threads,
                tolerance_overrides=asdict(tolerances),
            ),
            progress=progress,
        )
        return Checked(check, inputs, sizes=sizes, source=source)
    check, expected, outputs = api.parity_report(
        artifact,
        spec,
        inputs,
        source=source,
        tolerances=tolerances,
        threads=plan.profile.threads,
        checkpoint=request.checkpoint,
        progress=progress,
    )
    return Checked(check, inputs, sizes=sizes, source=source, expected=expected, outputs=outputs)


def _evaluate(plan: Plan, artifact, checked: Checked, *, progress: Progress) -> dict:
    """The artifact's task metric on the user's data beside PyTorch FP32's, judged against
    --max-drop; where the artifact cannot run here, why not (it is then not judged)."""
    from evitdeploy.evaluation.compare import accuracy_of
    from evitdeploy.evaluation.run import evaluate

    request = plan.request
    if not checked.runs_here:
        return {"skipped": checked.check["skipped"], "beyond": False}
    report = evaluate(
        EvalRequest(
            path=artifact.folder,
            dataset=request.dataset,
            limit=request.dataset_limit,
            seed=request.seed,
            checkpoint=request.checkpoint,
            threads=plan.profile.threads,
        ),
        progress=progress,
    )
    return {**accuracy_of(report, request.max_drop), "dataset": report["dataset"], "images": report.get("images"), "disagreements": report["disagreements"]}


def _subset(plan: Plan, artifact, *, progress: Progress) -> tuple:
    """The labelled photos the bundle carries for verify.py to score on the device."""
    from evitdeploy.evaluation.subset import bundle_subset

    request = plan.request
    if progress:
        progress(f"scoring {request.eval_subset} labelled photos for the bundle (PyTorch FP32 and this artifact)")
    return bundle_subset(
        artifact,
        request.dataset,
        count=request.eval_subset,
        seed=request.seed,
        checkpoint=request.checkpoint,
        threads=plan.profile.threads,
        max_drop=request.max_drop,
    )


def _bench(plan: Plan, artifact, checked: Checked, *, progress: Progress) -> tuple[Optional[dict], dict]:
    """(the bench report or None, the budget verdict): latency judged only on a host of the profile's kind."""
    from evitdeploy import api
    from evitdeploy.profiles import host_kind

    profile = plan.profile
    on_kind, why = host_kind(profile)
    budget_ms = profile.budget_for(plan.request.model)
    bench, measured, judged = None, None, False
    cannot_time = api.times_here(artifact) if checked.runs_here else None
    if not checked.runs_here:
        why = checked.check["skipped"]
    elif cannot_time:
        why = checked.check["of"] = cannot_time
    else:
        bench = api.bench_artifact(BenchRequest(path=artifact.folder, threads=profile.threads, warmup=profile.warmup, count=profile.count), progress=progress)
        measured = bench["results"][0]["stats"][f"{profile.statistic}_ms"]
        judged = on_kind and budget_ms is not None
    return bench, {
        "statistic": profile.statistic,
        "latency_ms": budget_ms,
        "measured_ms": measured,
        "judged": judged,
        "host": why,
        "passed": (measured <= budget_ms) if judged else None,
    }


def _bundle(plan: Plan, artifact, checked: Checked, *, bench: Optional[dict], budget: dict, progress: Progress) -> dict:
    """Write the bundle (its manifest returned): the artifact, the reference data, the reports."""
    from evitdeploy import api, bundle
    from evitdeploy.bench import host_info

    profile, spec, check = plan.profile, artifact.spec, checked.check
    if progress:
        progress(f"writing {plan.output}")
    count = bundle.reference_count(spec.input_shape)
    sections = {
        "tolerances": asdict(profile.tolerances_for(plan.precision)),
        "budget": budget,
        "bench": {"threads": profile.threads, "warmup": profile.warmup, "count": profile.count},
        "check": {
            **check["metrics"],
            "passed": check["passed"],
            "failures": check["failures"],
            "data": checked.source,
            "skipped": check.get("skipped"),
            **_kernels_of(check),
        },
        "latency": bench["results"][0]["stats"] if bench else None,
        "made_on": host_info(profile.threads),
        "commands": _commands(plan, spec=spec, signed=plan.signature is not None),
        **({"signature": plan.signature} if plan.signature else {}),
    }
    reports = {"check.json": check, **({"bench.json": bench} if bench else {})}
    inputs, sizes = checked.inputs[:count], checked.sizes[:count]
    prompted = api.promptable_reference(artifact, spec, inputs, sizes=sizes, checkpoint=plan.request.checkpoint) if plan.promptable else None
    from evitdeploy.data import pipeline_photos

    photos = pipeline_photos(spec, plan.request.data)
    pipeline = api.pipeline_reference(artifact, spec, photos, checkpoint=plan.request.checkpoint) if photos else None
    return bundle.write_bundle(
        plan.output,
        artifact,
        profile,
        inputs=inputs,
        expected=None if checked.expected is None else checked.expected[:count],
        host_outputs=None if checked.outputs is None else checked.outputs[:count],
        sections=sections,
        reports=reports,
        sign_key=plan.request.sign_key,
        prompted=prompted,
        pipeline=pipeline,
        eval_subset=checked.subset,
    )


def _summary(plan: Plan, checked: Checked, *, bench: Optional[dict], budget: dict, manifest: dict, seconds: dict) -> dict:
    from evitdeploy import bundle

    profile, check, output, signature = plan.profile, checked.check, plan.output, plan.signature
    stats = bench["results"][0]["stats"] if bench else None
    failures = list(check["failures"])
    if budget["judged"] and not budget["passed"]:
        failures.append(f"{profile.statistic} latency {budget['measured_ms']:.2f} ms exceeds the {profile.name} budget of {budget['latency_ms']} ms")
    if checked.accuracy and checked.accuracy["beyond"]:
        failures.append(f"on {plan.request.dataset}: {checked.accuracy['said']}")
    model_bytes = sum(model_size(output / name) for name in (manifest.get("models") or {"model": manifest["model_file"]}).values())  # files or package folders
    return {
        "kind": "deploy",
        "profile": profile.name,
        "model": plan.request.model,
        "target": profile.target,
        "precision": plan.precision,
        "bundle": str(output),
        "passed": not failures,
        "failures": failures,
        "check": {
            "passed": check["passed"],
            "metrics": check["metrics"],
            "tolerances": check["tolerances"],
            "data": checked.source,
            "skipped": check.get("skipped"),
            **_kernels_of(check),
        },
        "latency": {**stats, "threads": profile.threads} if stats else None,
        "budget": budget,
        **({"accuracy": checked.accuracy} if checked.accuracy else {}),
        "sizes": {"model_bytes": model_bytes, "extra_bytes": bundle.extra_bytes(manifest), "files": len(manifest["files"]) + 1 + (signature is not None)},
        "signed": signature is not None,
        "signature": signature["file"] if signature else None,
        "precision_plan": (manifest.get("precision_plan") or {}).get("summary"),
        "fp16_storage_check": (manifest.get("precision_plan") or {}).get("fp16_storage_check"),
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "commands": manifest["bundle"]["commands"],
    }
