"""Verify an evitdeploy bundle where it will run: integrity, parity with the reference, the whole
pipeline on raw photos (pipeline_check.py), latency.

A bundle carries this package as `evitdeploy_device/` and its target's device module as
`evitdeploy_device/runtime.py`; its short `verify.py` calls main() with them. `evitdeploy verify`
runs the same verify() with the device module from the registry. It needs Python 3.8+, numpy and
the bundle's runtime only: no evitdeploy, no torch.

    python3 verify.py [--threads N] [--warmup N] [--count N] [--json] [--public-key PUB.pem]

A signed bundle (model.sig) is checked against --public-key first, when the `model-signing`
package is installed (pip install model-signing); without a key its report says "signature not checked".

Exit codes: 0 passed; 1 parity failed or the latency budget was exceeded on a device of the
bundle's kind; 2 the bundle is refused (missing or modified file, newer format, a signature that
does not verify); 3 the runtime (or model-signing, for --public-key) is not installed.
"""

import argparse
import json
import platform
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from . import cpu, eval_subset, integrity, metrics, pipeline_check, prompts, runtimes, tasks
from .integrity import MANIFEST, SIGNATURE, BundleError, first_line


@dataclass
class ModelRun:
    """What running the bundle's model(s) here found."""

    parity: dict  # passed, failures, metrics: against the PyTorch outputs the bundle carries
    drift: dict  # metrics against the making host's own outputs of this artifact ({} when not carried)
    latency: Optional[dict]  # latency_stats, or None when --count 0
    providers: list  # where the runtime ran the model
    extra: dict = field(default_factory=dict)  # report keys of a promptable bundle (decoder latency, what latency measures)
    pipeline: dict = field(default_factory=dict)  # raw photos -> preprocessing -> runtime -> postprocessing vs PyTorch's answers
    accuracy: dict = field(default_factory=dict)  # the carried labelled subset scored here (eval_subset.py)


def latency_input(inputs: np.ndarray, batch: int) -> np.ndarray:
    """The latency input: the first reference image repeated to the model's batch."""
    return inputs[[0] * batch]


def _device_module(runtime, target: str):
    """The device module: `runtime` itself, or what the function `runtime(target)` returns."""
    found = runtime if isinstance(runtime, types.ModuleType) else runtime(target)
    if found is None:
        raise BundleError(f"this verifier cannot run {target!r} bundles", "verify it with the evitdeploy that made it", 3)
    return found


def _open(folder, manifest: dict, *, threads, runtime, model_file: str):
    """infer and providers for one of the bundle's models; a model the runtime cannot load is refused."""
    try:
        return runtimes.open_model(folder, dict(manifest, model_file=model_file), threads, runtime=runtime)
    except BundleError:
        raise
    except Exception as exc:  # the runtime's own error types: a truncated or foreign model file
        raise BundleError(f"{model_file} cannot be loaded by this runtime ({first_line(exc)})", "re-copy the bundle from where it was made") from None


def open_models(folder, manifest: dict, runtime, *, threads) -> tuple:
    """(encode, decode, providers): the bundle's model on its runtime (encode(batch) -> output),
    and a promptable bundle's decoder (decode(feed) -> outputs; None for one model). A decoder built
    for a fixed number of points (TFLite, Core ML) gets its feeds padded, saying how many are real."""
    models = integrity.promptable_models(manifest) if manifest["spec"]["task"] == tasks.PROMPTABLE else {"encoder": manifest["model_file"]}
    encode, providers = _open(folder, manifest, threads=threads, runtime=runtime, model_file=models["encoder"])
    if "decoder" not in models:
        return encode, None, providers
    decode, _ = _open(folder, manifest, threads=threads, runtime=runtime, model_file=models["decoder"])
    fixed = manifest.get("export", {}).get("decoder_points")
    if fixed:
        return encode, _padded(decode, int(fixed)), providers
    return encode, decode, providers


def _padded(decode, points: int):
    def infer(feed):
        return decode(prompts.fixed_points_feed(feed, points))

    return infer


def _run_model(folder, manifest: dict, runtime, threads, timing) -> ModelRun:
    """One model on the reference images: parity, drift from the making host, latency."""
    spec, bundle = manifest["spec"], manifest["bundle"]
    inputs, expected, host_outputs = integrity.load_reference(folder, spec)
    infer, _, providers = open_models(folder, manifest, runtime, threads=threads)
    batch = spec["input_shape"][0]
    try:
        outputs = metrics.run_batches(infer, inputs, batch)
    except Exception as exc:
        raise BundleError(
            f"the model refused the reference inputs ({first_line(exc)})", "the model file and the manifest disagree: re-copy the bundle from where it was made"
        ) from None
    parity = metrics.compare_outputs(spec["task"], expected, outputs, tolerances=bundle["tolerances"])
    drift = metrics.compare_outputs(spec["task"], host_outputs, outputs, tolerances={})["metrics"] if host_outputs is not None else {}
    whole = pipeline_check.check(folder, manifest, infer)
    accuracy = eval_subset.check(folder, manifest, infer)
    warmup, count = timing
    latency = metrics.latency_stats(metrics.time_model(infer, latency_input(inputs, batch), warmup, count=count), batch) if count > 0 else None
    extra = gpu_compute(infer, latency_input(inputs, batch), timing, per=batch)
    return ModelRun(parity=parity, drift=drift, latency=latency, providers=providers, pipeline=whole, accuracy=accuracy, extra=extra)


def gpu_compute(infer, batch, timing, per: int, key: str = "gpu_compute") -> dict:
    """{key: GPU compute time stats} where the runtime times its GPU work itself (TensorRT:
    CUDA events around each enqueue, trtexec's "GPU Compute Time"), else {}."""
    warmup, count = timing
    timed = getattr(infer, "gpu_times_ms", None)
    if timed is None or count <= 0:
        return {}
    return {key: metrics.latency_stats(timed(batch, warmup, count), per)}


def int8_kernels(manifest: dict) -> dict:
    """This CPU's INT8 kernel class and, for an INT8 model made for x86 kernels, the class it is for;
    refuses (exit 3) a model whose u8 x s8 sums this CPU would saturate."""
    found = cpu.kernel_class()
    report = cpu.describe(found)
    recorded = manifest.get("int8_kernels")
    if recorded is None:
        return report
    refusal = cpu.refusal(recorded["target"], found)
    if refusal:
        raise BundleError(refusal[0], refusal[1], 3)
    note = cpu.judged_note(recorded["target"], found)
    return dict(report, model_is_for=recorded["target"], **({"note": note} if note else {}))


def _run_promptable(folder, manifest: dict, runtime, threads, timing) -> ModelRun:
    """A promptable (SAM) bundle: the encoder on the reference images, the decoder on the recorded
    prompts; mask IoU, IoU-prediction error and cosine against PyTorch's masks. Latency is the
    encoder's per image (what the budget judges) and, beside it, the decoder's per prompt."""
    spec, bundle = manifest["spec"], manifest["bundle"]
    inputs, feeds, expected = integrity.load_prompted_reference(folder, spec)
    encode, decode, providers = open_models(folder, manifest, runtime, threads=threads)
    try:
        got = prompts.prompted_outputs(encode, decode, inputs, feeds=feeds)
    except Exception as exc:
        raise BundleError(
            f"the models refused the reference inputs or prompts ({first_line(exc)})",
            "the model files and the manifest disagree: re-copy the bundle from where it was made",
        ) from None
    found = prompts.promptable_metrics(expected, got, shown=prompts.shown_per_prompt(feeds, expected["iou_predictions"]))
    failures = prompts.promptable_failures(found, bundle["tolerances"])
    parity = {"passed": not failures, "failures": failures, "metrics": {k: v for k, v in found.items() if not isinstance(v, list)}}
    whole = pipeline_check.check(folder, manifest, encode, decode=decode)
    accuracy = eval_subset.check(folder, manifest, encode, decode=decode)
    warmup, count = timing
    latency = decoder_latency = None
    gpu = {}
    if count > 0:
        first = inputs[:1]
        latency = metrics.latency_stats(metrics.time_model(encode, first, warmup, count=count), 1)
        feed = dict(feeds[0][1], image_embeddings=np.asarray(encode(first), np.float32))
        decoder_latency = metrics.latency_stats(metrics.time_turns([lambda: decode(feed)], warmup, count)[0], 1)
        gpu = {**gpu_compute(encode, first, timing, per=1), **gpu_compute(decode, feed, timing, per=1, key="decoder_gpu_compute")}
    return ModelRun(
        parity=parity,
        drift={},
        latency=latency,
        providers=providers,
        extra={"decoder_latency": decoder_latency, "latency_of": "the encoder, per image", **gpu},
        pipeline=whole,
        accuracy=accuracy,
    )


def verify(folder, runtime, threads=None, warmup=None, count=None, judge_budget: bool = True, public_key=None, schema_check=None) -> dict:
    """The whole verification as JSON-ready data; raises BundleError before running anything untrusted.
    `runtime`: the target's device module, or a function of the target name returning it (None for
    none), asked only once the manifest is trusted. `schema_check(manifest_path)`: evitdeploy's full
    schema of the manifest, where it is installed (after the checks made here, so both give the
    same first message)."""
    folder = Path(folder)
    manifest, signature = integrity.trusted_manifest(folder, public_key)
    if schema_check is not None:
        schema_check(folder / MANIFEST)
    runtime = _device_module(runtime, manifest["target"])
    versions = runtimes.runtime_versions(runtime, manifest)
    kernels = int8_kernels(manifest)
    warnings, errors = runtimes.version_findings(manifest, versions, runtime)
    if kernels.get("note"):
        warnings.append(kernels["note"])
    if signature["signed"] and not signature["checked"]:
        warnings.append(integrity.SIGNATURE_NOT_CHECKED.format(SIGNATURE))
    if errors:
        raise BundleError(errors[0], "build the engine again on this device (see README.txt)")
    bundle = manifest["bundle"]
    spec = manifest["spec"]
    threads = threads or bundle["bench"].get("threads")
    warmup = bundle["bench"]["warmup"] if warmup is None else warmup
    count = bundle["bench"]["count"] if count is None else count
    run = _run_promptable if spec["task"] == tasks.PROMPTABLE else _run_model
    ran = run(folder, manifest, runtime, threads=threads, timing=(warmup, count))
    parity, latency = ran.parity, ran.latency
    budget = bundle.get("budget") or {}
    profile = bundle["profile"]
    on_kind, why = runtimes.host_matches(profile["name"], profile["host_machines"], profile["host_device_model"], gpu=profile["host_gpu"])
    failures = list(parity["failures"]) + ["whole pipeline: " + line for line in ran.pipeline.get("failures", [])]
    failures += ["accuracy: " + line for line in ran.accuracy.get("failures", [])]
    judged = bool(judge_budget and on_kind and latency and budget.get("latency_ms"))
    if judged:
        measured = latency[budget["statistic"] + "_ms"]
        if measured > budget["latency_ms"]:
            failures.append(f"{budget['statistic']} latency {measured:.2f} ms exceeds the budget of {budget['latency_ms']} ms")
    return {
        "kind": "bundle-verification",
        "bundle": str(folder),
        "model": spec["name"],
        "target": manifest["target"],
        "precision": manifest["precision"],
        "profile": profile["name"],
        "passed": not failures,
        "failures": failures,
        "warnings": warnings,
        "signature": signature,
        "parity": {**parity, "tolerances": bundle["tolerances"], "vs": "PyTorch FP32 outputs recorded when the bundle was made"},
        "pipeline": {**ran.pipeline, "vs": "PyTorch FP32's answers for the bundle's raw photos, through the same preprocessing and postprocessing"},
        "accuracy": {**ran.accuracy, "vs": "PyTorch FP32's score on the bundle's labelled photos, recorded when the bundle was made"},
        "drift_from_making_host": ran.drift,
        "latency": latency,
        **ran.extra,
        "budget": {**budget, "judged": judged, "host": why},
        "runtime": {**versions, "providers": ran.providers, "threads": threads},
        "host": {"machine": platform.machine(), "platform": platform.platform(), **kernels},
    }


def _print(report: dict) -> None:
    found = report["parity"]["metrics"]
    print(f"bundle    {report['bundle']}: {report['model']} {report['target']}/{report['precision']} for {report['profile']}")
    print(
        f"runtime   {', '.join(f'{k} {v}' for k, v in report['runtime'].items() if k not in ('providers', 'threads'))}; threads {report['runtime']['threads']}"
    )
    signature = report.get("signature") or {}
    if signature.get("checked"):
        print(f"signature {signature['file']} verified with {signature['public_key']}: no file changed since signing")
    host = report["host"]
    print(
        f"cpu       {host['machine']}, INT8 kernels {host['int8_kernels']}"
        + (f" (the model is for {cpu.made_for(host['model_is_for'])})" if host.get("model_is_for") else "")
        + f": {host['meaning']}"
    )
    for line in report["warnings"]:
        print(f"warning   {line}")
    keys = (
        "samples",
        "prompts",
        "max_abs_error",
        "cosine_min",
        "top1_agreement",
        "pixel_agreement",
        "mask_iou_min",
        "iou_prediction_max_error",
        "low_res_cosine_min",
        "nonfinite_outputs",
    )
    print("parity    " + ", ".join(f"{k} {found[k]:.6g}" for k in keys if k in found) + " (vs PyTorch FP32)")
    if report.get("pipeline"):
        print("pipeline  " + pipeline_check.summary(report["pipeline"]))
    if report.get("accuracy", {}).get("checked"):
        print("accuracy  " + eval_subset.summary(report["accuracy"]))
    drift = report["drift_from_making_host"]
    if drift:
        print(f"drift     vs the making host's own outputs: max abs {drift['max_abs_error']:.3g}, min cosine {drift['cosine_min']:.6f}")
    latency = report["latency"]
    if latency:
        of = f" ({report['latency_of']})" if report.get("latency_of") else ""
        print(f"latency   median {latency['median_ms']:.3f} ms, p90 {latency['p90_ms']:.3f}, p99 {latency['p99_ms']:.3f} ({latency['count']} runs){of}")
    decoder = report.get("decoder_latency")
    if decoder:
        print(f"decoder   median {decoder['median_ms']:.3f} ms per prompt, p90 {decoder['p90_ms']:.3f} ({decoder['count']} runs)")
    for key, label in (("gpu_compute", "gpu       "), ("decoder_gpu_compute", "gpu (dec) ")):
        if report.get(key):
            gpu = report[key]
            print(f"{label}compute median {gpu['median_ms']:.3f} ms, p90 {gpu['p90_ms']:.3f}, p99 {gpu['p99_ms']:.3f} (CUDA events, copies excluded)")
    budget = report["budget"]
    if budget.get("latency_ms"):
        print(f"budget    {budget['statistic']} <= {budget['latency_ms']} ms: " + ("judged" if budget["judged"] else "not judged") + f" ({budget['host']})")
    print("PASSED" if report["passed"] else "FAILED: " + "; ".join(report["failures"]))


def main(argv=None, runtime=None, bundle=None) -> int:
    """The device's command line. `runtime`: the device module (default: the carried `runtime.py`
    beside this file); `bundle`: the folder verified when none is named (the bundle's own)."""
    parser = argparse.ArgumentParser(description="Verify this bundle here: integrity, parity with the reference outputs, latency.")
    parser.add_argument(
        "bundle", nargs="?", default=str(bundle or Path(__file__).resolve().parent.parent), help="bundle folder [default: this script's folder]"
    )
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads [default: the profile's]")
    parser.add_argument("--warmup", type=int, default=None, help="untimed runs [default: the profile's]")
    parser.add_argument("--count", type=int, default=None, help="timed runs; 0 skips latency [default: the profile's]")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--public-key",
        default=None,
        metavar="PUB.pem",
        help="check the bundle's signature (model.sig) with this PEM public key first; needs `pip install model-signing`",
    )
    args = parser.parse_args(argv)
    if any(v is not None and v < 0 for v in (args.threads, args.warmup, args.count)):
        parser.error("--threads, --warmup and --count must be >= 0")
    if runtime is None:
        from . import runtime  # the bundle's own target: evitdeploy_device/runtime.py
    try:
        report = verify(args.bundle, runtime, args.threads, warmup=args.warmup, count=args.count, public_key=args.public_key)
    except BundleError as exc:
        print(f"error: {exc.message}" + (f" — {exc.hint}" if exc.hint else ""), file=sys.stderr)
        return exc.exit_code
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print(report)
    return 0 if report["passed"] else 1
