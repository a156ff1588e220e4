"""`deploy`: export -> check -> bench -> bundle for one profile, and one verdict.

Parity is judged with the profile's tolerances; latency against the profile's budget only on a
host of the profile's kind (elsewhere it is measured and reported, not judged).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable, Optional

from evitdeploy import limits
from evitdeploy.artifact import folder_kept_on_success, model_size, prepare_output
from evitdeploy.errors import UserError

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
    flags = {"calib": "--calib", "calib_count": "--calib-count", "method": "--calib-method", "fp16_margin": "--fp16-margin",
             "min_cosine": "--min-cosine-target", "search_budget": "--search-budget", "int8_kernels": "--int8-kernels"}
    default = PrecisionOptions()
    text = "".join(f" {flag} {getattr(reduced, field)}" for field, flag in flags.items() if getattr(reduced, field) != getattr(default, field))
    return text + (" --fp16-io" if reduced.fp16_io else "")


def _require_memory(model_name: str, profile, *, precision: str, reduced, samples: int, height, width) -> None:
    """Refuse, before anything is written, a deploy whose export or check cannot fit this host."""
    from evitdeploy import api, memory
    from evitdeploy.precision.options import PrecisionOptions
    from evitdeploy.models import get_spec

    spec = get_spec(model_name).with_input(profile.batch, height, width)
    api._require_memory_for_export(spec, profile.dynamic, precision=precision, reduced=reduced or PrecisionOptions())
    memory.require_fits(spec, "check", f"checking {spec.name} at {spec.height}x{spec.width} on {samples} inputs", images=samples)


def _commands(model: str, profile, *, precision: str, checkpoint, reduced, output: Path, spec, signed: bool = False, backend_flag: str = "") -> dict:
    """The exact commands: this deploy, the export it ran, and the verification on the device."""
    from evitdeploy.backends import get_backend
    from evitdeploy.precision.options import PrecisionOptions

    if precision == "int8" and profile.int8_kernels and get_backend(profile.backend).x86_int8_kernels and not (reduced and reduced.int8_kernels):
        reduced = replace(reduced or PrecisionOptions(), int8_kernels=profile.int8_kernels)  # what export_model took from the profile
    options = (f" --checkpoint {checkpoint}" if checkpoint else "") + _precision_flags(reduced, precision)
    shape = f" --height {spec.height} --width {spec.width}"
    dynamic = (f" --dynamic {','.join(profile.dynamic)}" if profile.dynamic else "") + (" --nhwc" if profile.nhwc else "")
    dynamic += f" --delegate {profile.delegate}" if profile.delegate and profile.target == "executorch" else ""
    where = profile.source if profile.source.endswith(".toml") else profile.name
    return {
        "deploy": f"evitdeploy deploy --profile {where} --model {model}{backend_flag} --precision {precision}{shape}{options} -o {output}",
        "export": f"evitdeploy export --model {model} --target {profile.target} --precision {precision} --batch {spec.input_shape[0]}{shape}{dynamic}{options}",
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


def input_size(profile, model_name: str, *, height: Optional[int], width: Optional[int]) -> tuple[int, int]:
    """The size a deploy exports at: the user's, else the profile's, else the model's; SAM always
    takes its own square size unless told (it letterboxes the image)."""
    from evitdeploy.models import get_spec

    spec = get_spec(model_name)
    if spec.promptable:
        return height or spec.height, width or spec.width
    return height or profile.height or spec.height, width or profile.width or spec.width


def deploy(
    profile_name: str,
    model_name: str,
    output: Optional[Path] = None,
    *,
    precision: Optional[str] = None,
    checkpoint: Optional[Path] = None,
    reduced=None,
    data: Optional[Path] = None,
    samples: int = 8,
    seed: int = 0,
    force: bool = False,
    progress: Optional[Callable[[str], None]] = None,
    height: Optional[int] = None,
    width: Optional[int] = None,
    sign_key: Optional[Path] = None,
    backend: Optional[str] = None,
) -> dict:
    """Run the whole flow for a profile; the bundle is written even when a verdict fails, so the
    evidence can be read, and the summary says so. With `sign_key` (a PEM EC private key) the
    bundle is signed in the OpenSSF model-signing format (model.sig). `backend`: one of the
    profile's candidates instead of its own backend (what `--precision auto` chose)."""
    from evitdeploy import api, bundle
    from evitdeploy.bench import host_info
    from evitdeploy.data import load_inputs_and_sizes
    from evitdeploy.precision.options import PrecisionOptions
    from evitdeploy.models import get_spec
    from evitdeploy.profiles import backend_status, host_kind, load_profile, require_backend
    from evitdeploy.requests import BenchRequest, CheckRequest, ExportRequest

    profile = load_profile(profile_name)
    backend_flag = ""  # another candidate than the profile's own backend: the commands and the default name say which
    if backend is not None and candidate_backend(profile, backend) != profile.backend:
        profile = replace(profile, backend=candidate_backend(profile, backend))
        backend_flag = f" --backend {profile.backend}"
    status = backend_status(profile)
    recipe_only = profile.backend == "tensorrt" and status["built"] and not status["installed"]
    if not recipe_only:  # TensorRT absent: the bundle carries the ONNX + plan + build recipe for the device
        require_backend(profile)
    promptable = get_spec(model_name).promptable  # an unknown model fails before anything runs
    height, width = input_size(profile, model_name, height=height, width=width)
    offered = profile.precisions_for(profile.backend)
    precision = precision or (profile.precision if profile.precision in offered else offered[0])
    require_precision(profile, precision)
    limits.check_range("--samples", samples, 1, high=limits.SAMPLES_MAX)
    limits.check_seed(seed)
    _require_memory(
        model_name, profile, precision=precision, reduced=reduced, samples=samples, height=height, width=width,
    )
    signature = None
    if sign_key is not None:  # a key that cannot sign is refused before anything is written
        from evitdeploy.signing import signature_section

        signature = signature_section(Path(sign_key))
    output = Path(output or f"{model_name}-{profile.name}{'-' + profile.backend if backend_flag else ''}-{precision}")
    prepare_output(output, force)
    seconds = {"bench": 0.0}
    with folder_kept_on_success(output.parent), tempfile.TemporaryDirectory(prefix=f".{output.name}.work-", dir=output.parent) as scratch:
        started = time.perf_counter()
        request = ExportRequest(
            model=model_name, target=profile.target, precision=precision, output=Path(scratch) / "artifact", checkpoint=checkpoint,
            batch=profile.batch, height=height, width=width, dynamic=tuple(a for a in profile.dynamic if a == "batch" or not promptable), seed=seed, data=data,
            reduced=reduced or PrecisionOptions(), channels_last=profile.nhwc, profile=profile, engine=not recipe_only,
            delegate=profile.delegate if profile.target == "executorch" else "",
        )
        artifact = api.export_model(request, progress=_staged(progress, 0))
        seconds["export"] = time.perf_counter() - started

        started = time.perf_counter()
        spec = artifact.spec
        inputs, sizes, source = load_inputs_and_sizes(spec, (spec.height, spec.width), source=data, count=samples)
        tolerances = profile.tolerances_for(precision)
        on_kind, why = host_kind(profile)
        budget_ms = profile.budget_for(model_name)
        cannot_run = api.predicts_here(artifact)
        if promptable:  # parity by prompt (mask IoU): PyTorch's masks for the bundle, the artifact's check here
            expected, outputs = None, None
            if not cannot_run:
                check = api.check_artifact(CheckRequest(path=artifact.folder, checkpoint=checkpoint, data=data, samples=samples, threads=profile.threads,
                                                        tolerance_overrides=asdict(tolerances)), progress=_staged(progress, 1))
        if cannot_run:  # the bundle still carries the PyTorch outputs for verify.py where it can run
            expected = None if promptable else api.reference_outputs(artifact, spec, inputs, checkpoint=checkpoint)
            outputs, bench, stats, measured = None, None, None, None
            check = {"kind": "parity", "passed": None, "failures": [], "metrics": {}, "tolerances": asdict(tolerances), "skipped": cannot_run}
            judged, why = False, cannot_run
            seconds["check"] = time.perf_counter() - started
        else:
            if not promptable:
                check, expected, outputs = api.parity_report(
                    artifact, spec, inputs, source=source, tolerances=tolerances, threads=profile.threads, checkpoint=checkpoint,
                    progress=_staged(progress, 1),
                )
            seconds["check"] = time.perf_counter() - started
            cannot_time = api.times_here(artifact)
            if cannot_time:
                bench, stats, measured, judged, why = None, None, None, False, cannot_time
                check["of"] = cannot_time
            else:
                started = time.perf_counter()
                bench = api.bench_artifact(
                    BenchRequest(path=artifact.folder, threads=profile.threads, warmup=profile.warmup, count=profile.count), progress=_staged(progress, 2),
                )
                seconds["bench"] = time.perf_counter() - started
                stats = bench["results"][0]["stats"]
                measured = stats[f"{profile.statistic}_ms"]
                judged = on_kind and budget_ms is not None
        budget = {
            "statistic": profile.statistic, "latency_ms": budget_ms, "measured_ms": measured, "judged": judged, "host": why,
            "passed": (measured <= budget_ms) if judged else None,
        }

        started = time.perf_counter()
        step = _staged(progress, 3)
        if step:
            step(f"writing {output}")
        count = bundle.reference_count(spec.input_shape)
        sections = {
            "tolerances": asdict(tolerances),
            "budget": budget,
            "bench": {"threads": profile.threads, "warmup": profile.warmup, "count": profile.count},
            "check": {**check["metrics"], "passed": check["passed"], "failures": check["failures"], "data": source, "skipped": check.get("skipped"),
                      **_kernels_of(check)},
            "latency": stats,
            "made_on": host_info(profile.threads),
            "commands": _commands(
                model_name, profile, precision=precision, checkpoint=checkpoint, reduced=reduced, output=output, spec=spec, signed=signature is not None,
                backend_flag=backend_flag,
            ),
            **({"signature": signature} if signature else {}),
        }
        reports = {"check.json": check, **({"bench.json": bench} if bench else {})}
        prompted = api.promptable_reference(artifact, spec, inputs[:count], sizes=sizes[:count], checkpoint=checkpoint) if promptable else None
        manifest = bundle.write_bundle(
            output, artifact, profile, inputs=inputs[:count], expected=None if promptable else expected[:count],
            host_outputs=None if outputs is None else outputs[:count], sections=sections, reports=reports, sign_key=sign_key, prompted=prompted,
        )
        seconds["bundle"] = time.perf_counter() - started
    failures = list(check["failures"])
    if judged and not budget["passed"]:
        failures.append(f"{profile.statistic} latency {measured:.2f} ms exceeds the {profile.name} budget of {budget_ms} ms")
    model_bytes = sum(model_size(output / name) for name in (manifest.get("models") or {"model": manifest["model_file"]}).values())  # files or package folders
    return {
        "kind": "deploy",
        "profile": profile.name,
        "model": model_name,
        "target": profile.target,
        "precision": precision,
        "bundle": str(output),
        "passed": not failures,
        "failures": failures,
        "check": {"passed": check["passed"], "metrics": check["metrics"], "tolerances": check["tolerances"], "data": source, "skipped": check.get("skipped"),
                  **_kernels_of(check)},
        "latency": {**stats, "threads": profile.threads} if stats else None,
        "budget": budget,
        "sizes": {"model_bytes": model_bytes, "extra_bytes": bundle.extra_bytes(manifest), "files": len(manifest["files"]) + 1 + (signature is not None)},
        "signed": signature is not None,
        "signature": signature["file"] if signature else None,
        "precision_plan": (manifest.get("precision_plan") or {}).get("summary"),
        "fp16_storage_check": (manifest.get("precision_plan") or {}).get("fp16_storage_check"),
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "commands": manifest["bundle"]["commands"],
    }
