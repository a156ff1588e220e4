#!/usr/bin/env python3
"""Verify an evitdeploy bundle where it will run: integrity, parity with the reference, latency.

This file is copied verbatim into every bundle as `verify.py`. It needs Python 3.8+, numpy and
the bundle's runtime only (onnxruntime for ONNX bundles): no evitdeploy, no torch. evitdeploy's
own parity, bench and integrity code import their metrics from here, so the device and the host
that made the bundle measure in exactly the same way.

    python3 verify.py [--threads N] [--warmup N] [--count N] [--json]

Exit codes: 0 passed; 1 parity failed or the latency budget was exceeded on a device of the
bundle's kind; 2 the bundle is refused (missing or modified file, newer format); 3 the runtime
is not installed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

FORMAT = 1  # the newest manifest format this script understands
MANIFEST = "manifest.json"
REFERENCE = "reference.npz"
RUNTIMES = {  # target -> (module, pip package)
    "onnx": ("onnxruntime", "onnxruntime"),
    "tflite": ("ai_edge_litert", "ai-edge-litert"),
    "coreml": ("coremltools", "coremltools"),
}
ENGINE_TARGETS = ("trt",)  # serialized engines only load on the runtime version that built them


class BundleError(Exception):
    """A bundle that cannot be trusted or run here, with the fix."""

    def __init__(self, message: str, hint: str = "", exit_code: int = 2):
        super().__init__(message)
        self.message, self.hint, self.exit_code = message, hint, exit_code


# --- measurements shared with evitdeploy (parity, bench, artifact integrity) -----------------


def sha256_of(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cosine_per_sample(ref: np.ndarray, cand: np.ndarray) -> np.ndarray:
    a = ref.reshape(len(ref), -1).astype(np.float64)
    b = cand.reshape(len(cand), -1).astype(np.float64)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    # NaN/Inf in a sample make its cosine NaN (not the 1.0 given to two all-zero outputs)
    return np.where(denom == 0, 1.0, (a * b).sum(axis=1) / np.maximum(denom, 1e-300))


def classification_metrics(ref: np.ndarray, cand: np.ndarray) -> dict:
    top1_ref = ref.argmax(axis=1)
    top5_cand = np.argsort(-cand, axis=1)[:, :5]
    return {
        "top1_agreement": float((cand.argmax(axis=1) == top1_ref).mean()),
        "top5_agreement": float((top5_cand == top1_ref[:, None]).any(axis=1).mean()),
    }


def segmentation_metrics(ref: np.ndarray, cand: np.ndarray) -> dict:
    ref_map, cand_map = ref.argmax(axis=1), cand.argmax(axis=1)
    ious = []
    for cls in np.union1d(np.unique(ref_map), np.unique(cand_map)):
        r, c = ref_map == cls, cand_map == cls
        ious.append((r & c).sum() / (r | c).sum())
    return {"pixel_agreement": float((ref_map == cand_map).mean()), "miou": float(np.mean(ious))}


def compare_outputs(task: str, reference: np.ndarray, candidate: np.ndarray, tolerances: dict) -> dict:
    """Metrics and a verdict. tolerances: max_abs (None: not gated), min_cosine, min_top1, min_pixel_agreement."""
    if reference.shape != candidate.shape:
        return {"passed": False, "failures": [f"output shape {candidate.shape} differs from the reference's {reference.shape}"], "metrics": {}}
    error = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    cosine = cosine_per_sample(reference, candidate)
    metrics = {
        "samples": int(len(reference)),
        "max_abs_error": float(error.max()),
        "mean_abs_error": float(error.mean()),
        "cosine_min": float(cosine.min()),
        "cosine_mean": float(cosine.mean()),
        "nonfinite_outputs": int((~np.isfinite(candidate)).sum()),
        "reference_abs_max": float(np.abs(reference).max()),
    }
    metrics.update((classification_metrics if task == "classification" else segmentation_metrics)(reference, candidate))
    failures = []
    if metrics["nonfinite_outputs"]:
        failures.append(f"{metrics['nonfinite_outputs']} NaN/Inf values in the candidate's outputs")
    if tolerances.get("max_abs") is not None and metrics["max_abs_error"] > tolerances["max_abs"]:
        failures.append(f"max abs error {metrics['max_abs_error']:.3g} > {tolerances['max_abs']:.3g}")
    if metrics["cosine_min"] < tolerances.get("min_cosine", 0.0):
        failures.append(f"min cosine {metrics['cosine_min']:.6f} < {tolerances['min_cosine']}")
    if task == "classification" and metrics["top1_agreement"] < tolerances.get("min_top1", 0.0):
        failures.append(f"top-1 agreement {metrics['top1_agreement']:.4f} < {tolerances['min_top1']}")
    if task == "segmentation" and metrics["pixel_agreement"] < tolerances.get("min_pixel_agreement", 0.0):
        failures.append(f"pixel agreement {metrics['pixel_agreement']:.5f} < {tolerances['min_pixel_agreement']}")
    return {"passed": not failures, "failures": failures, "metrics": metrics}


def latency_stats(latency_samples_ms, batch: int = 1) -> dict:
    samples = np.asarray(latency_samples_ms, dtype=np.float64)
    median = float(np.median(samples))
    return {
        "count": int(samples.size),
        "median_ms": median,
        "p90_ms": float(np.percentile(samples, 90)),
        "p99_ms": float(np.percentile(samples, 99)),
        "mean_ms": float(samples.mean()),
        "std_ms": float(samples.std(ddof=1)) if samples.size > 1 else 0.0,
        "min_ms": float(samples.min()),
        "max_ms": float(samples.max()),
        "throughput_per_s": batch * 1e3 / median if median > 0 else float("inf"),
    }


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace").replace("\x00", " ").strip()
    except OSError:
        return ""


def gpu_names() -> list:
    """NVIDIA GPUs as the driver names them (no CUDA import needed)."""
    names = []
    for info in sorted(Path("/proc/driver/nvidia/gpus").glob("*/information")):
        for line in _read(str(info)).splitlines():
            if line.startswith("Model:"):
                names.append(line.split(":", 1)[1].strip())
    return names


def host_matches(name: str, machines, device_model=None, gpu=None):
    """(whether this host is a device of the profile's kind, why): budgets are judged only there."""
    machine = platform.machine().lower()
    if not machines:
        return False, f"{name} is a device evitdeploy does not run on; measure latency on it with verify.py or the vendor's tools"
    if machine not in machines:
        return False, f"this host is {machine}; profile {name} is for {'/'.join(machines)}"
    if device_model:
        board = _read("/proc/device-tree/model")
        if device_model.lower() not in board.lower():
            return False, f"this host is {board or 'not a device-tree board'}; profile {name} is for a {device_model}"
    if gpu:
        gpus = gpu_names()
        if not any(gpu.lower() in found.lower() for found in gpus):
            return False, f"this host has {', '.join(gpus) or 'no NVIDIA GPU'}; profile {name} is for {gpu} GPUs"
    return True, f"this host matches profile {name} ({machine})"


# --- the bundle ------------------------------------------------------------------------------


def load_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    if not path.is_file():
        raise BundleError(f"{folder} holds no {MANIFEST}", "pass a bundle folder written by `evitdeploy deploy`")
    try:
        manifest = json.loads(path.read_text())
    except ValueError as exc:
        raise BundleError(f"{path} is not valid JSON ({exc})", "re-copy the bundle") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("format"), int) or "bundle" not in manifest:
        raise BundleError(f"{path} is not a bundle manifest", "pass a bundle folder written by `evitdeploy deploy`")
    if manifest["format"] > FORMAT:
        raise BundleError(
            f"{path} has manifest format {manifest['format']}, newer than this verifier reads ({FORMAT})",
            "verify it with the evitdeploy version that made it, or upgrade evitdeploy",
        )
    return manifest


def check_integrity(folder: Path, manifest: dict) -> None:
    """Every file the manifest lists is present with its sha256; nothing is trusted before this."""
    files = manifest.get("files", {})
    for name in files:
        parts = name.split("/")
        if not name or name.startswith("/") or "\\" in name or any(part in ("", ".", "..") for part in parts):
            raise BundleError(f"the manifest lists {name!r}, which is not a file inside the folder", "re-copy the bundle from where it was made")
    covered = lambda name: name in files or any(f.startswith(name + "/") for f in files)  # noqa: E731 (a package folder's files)
    unlisted = [name for name in (manifest.get("model_file"), REFERENCE if "bundle" in manifest else None) if name and not covered(name)]
    if unlisted:
        raise BundleError(f"{unlisted[0]} is not covered by a sha256 in the manifest", "re-copy the bundle from where it was made")
    for name, entry in sorted(files.items()):
        file = folder / name
        if not file.is_file():
            raise BundleError(f"{file} is listed in the manifest but missing", "copy the whole bundle folder")
        if sha256_of(file) != entry["sha256"]:
            raise BundleError(f"{file} does not match the sha256 in the manifest (modified, truncated or corrupt)", "re-copy the bundle from where it was made")


def runtime_versions(target: str) -> dict:
    if target == "trt":
        raise BundleError(
            "a TensorRT bundle is checked where its engine is built",
            "on the device: `evitdeploy build .` (builds model.engine and compares it with reference.npz), or sh build_engine.sh for the engine alone",
            3,
        )
    if target not in RUNTIMES:
        raise BundleError(f"this verifier cannot run {target!r} bundles", "verify it with the evitdeploy that made it", 3)
    module_name, package = RUNTIMES[target]
    if target == "coreml" and platform.system() != "Darwin":
        raise BundleError("Core ML predicts only on macOS", "run this verify.py on a Mac: pip install numpy coremltools", 3)
    try:
        module = __import__(module_name)
    except ImportError as exc:
        raise BundleError(f"{package} is not installed", f"install it with: pip install numpy {package}", 3) from exc
    return {package: getattr(module, "__version__", "unknown"), "numpy": np.__version__, "python": platform.python_version()}


def version_findings(manifest: dict, versions: dict) -> tuple:
    """(warnings, errors) for runtimes whose version differs from the one that made the bundle."""
    warnings, errors = [], []
    made_with = manifest.get("toolchain", {})
    for _, package in RUNTIMES.values():
        if package in versions and package in made_with and versions[package] != made_with[package]:
            line = f"{package} here is {versions[package]}, the bundle was made and checked with {made_with[package]}"
            (errors if manifest["target"] in ENGINE_TARGETS else warnings).append(line)
    return warnings, errors


def open_model(folder: Path, manifest: dict, threads):
    """An `infer(batch) -> outputs` for the bundle's model on this device's runtime."""
    if manifest["target"] == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        preferred = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
        session = ort.InferenceSession(str(folder / manifest["model_file"]), options, providers=preferred)
        declared = session.get_inputs()[0]
        dtype = np.float16 if declared.type == "tensor(float16)" else np.float32
        output = manifest["spec"]["output_name"]

        def infer(batch: np.ndarray) -> np.ndarray:
            return session.run([output], {declared.name: batch.astype(dtype)})[0]

        return infer, session.get_providers()
    if manifest["target"] == "tflite":
        interpreter = tflite_interpreter(folder / manifest["model_file"], threads)
        return (lambda batch: tflite_run(interpreter, batch)), ["LiteRT (XNNPACK)"]
    if manifest["target"] == "coreml":
        import coremltools

        model = coremltools.models.MLModel(str(folder / manifest["model_file"]))
        spec = manifest["spec"]
        return (lambda batch: model.predict({spec["input_name"]: batch.astype(np.float32)})[spec["output_name"]]), ["Core ML (ALL)"]
    raise BundleError(f"this verifier cannot run {manifest['target']!r} bundles", "verify it with the evitdeploy that made it", 3)


@contextlib.contextmanager
def _native_stderr_silenced():
    """LiteRT's C++ side prints an "INFO: Created ... delegate" and a deprecation line tagged
    "ERROR:" on every load; neither is an error. Load failures still raise in Python."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):
        yield
        return
    sys.stderr.flush()
    saved, devnull = os.dup(fd), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    try:
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


def tflite_interpreter(path, threads=None):
    """A LiteRT interpreter on XNNPACK (its default CPU delegate), tensors allocated."""
    from ai_edge_litert.interpreter import Interpreter

    with _native_stderr_silenced():
        interpreter = Interpreter(model_path=str(path), num_threads=threads)
        interpreter.allocate_tensors()
    return interpreter


def _quantized(details) -> tuple:
    scale, zero_point = details["quantization"]
    return (scale, zero_point) if scale else None


def tflite_run(interpreter, batch: np.ndarray) -> np.ndarray:
    """One NCHW float32 batch through the interpreter. An NHWC model input gets it transposed;
    integer inputs and outputs (full-integer INT8 models) are quantized and dequantized with the
    tensor's own scale and zero point, so callers see float32."""
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    if batch.ndim == 4 and tuple(source["shape"]) == (batch.shape[0], *batch.shape[2:], batch.shape[1]) != batch.shape:
        batch = batch.transpose(0, 2, 3, 1)  # an --nhwc model: references and parity inputs are NCHW
    quantized = _quantized(source)
    if quantized and np.issubdtype(source["dtype"], np.integer):
        scale, zero_point = quantized
        limits = np.iinfo(source["dtype"])
        batch = np.clip(np.round(batch / scale) + zero_point, limits.min, limits.max)
    interpreter.set_tensor(source["index"], np.ascontiguousarray(batch, dtype=source["dtype"]))
    interpreter.invoke()
    output = interpreter.get_tensor(target["index"])
    quantized = _quantized(target)
    if quantized and np.issubdtype(target["dtype"], np.integer):
        scale, zero_point = quantized
        return (output.astype(np.float32) - zero_point) * np.float32(scale)
    return output.astype(np.float32)


def run_batches(infer, inputs: np.ndarray, batch: int) -> np.ndarray:
    """All inputs through the model `batch` at a time; a short last batch is padded, then cut."""
    outputs = []
    for start in range(0, len(inputs), batch):
        chunk = inputs[start : start + batch]
        if len(chunk) < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - len(chunk), axis=0)])
        outputs.append(np.asarray(infer(chunk), dtype=np.float32))
    return np.concatenate(outputs)[: len(inputs)]


def time_model(infer, batch_input: np.ndarray, warmup: int, count: int) -> list:
    for _ in range(warmup):
        infer(batch_input)
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        infer(batch_input)
        samples.append((time.perf_counter() - started) * 1e3)
    return samples


def verify(folder, threads=None, warmup=None, count=None, judge_budget: bool = True) -> dict:
    """The whole verification as JSON-ready data; raises BundleError before running anything untrusted."""
    folder = Path(folder)
    manifest = load_manifest(folder)
    check_integrity(folder, manifest)
    versions = runtime_versions(manifest["target"])
    warnings, errors = version_findings(manifest, versions)
    if errors:
        raise BundleError(errors[0], "build the engine again on this device (see README.txt)")
    bundle = manifest["bundle"]
    spec = manifest["spec"]
    with np.load(folder / REFERENCE, allow_pickle=False) as reference:
        inputs, expected = reference["inputs"], reference["expected"]
        host_outputs = reference["host_outputs"] if "host_outputs" in reference.files else None
    threads = threads or bundle["bench"].get("threads")
    infer, providers = open_model(folder, manifest, threads)
    batch = spec["input_shape"][0]
    outputs = run_batches(infer, inputs, batch)
    parity = compare_outputs(spec["task"], expected, outputs, bundle["tolerances"])
    drift = compare_outputs(spec["task"], host_outputs, outputs, {})["metrics"] if host_outputs is not None else {}
    warmup = bundle["bench"]["warmup"] if warmup is None else warmup
    count = bundle["bench"]["count"] if count is None else count
    feed = latency_input(inputs, batch)
    latency = latency_stats(time_model(infer, feed, warmup, count), batch) if count > 0 else None
    budget = bundle.get("budget") or {}
    on_kind, why = host_matches(bundle["profile"]["name"], bundle["profile"]["host_machines"], bundle["profile"]["host_device_model"], bundle["profile"]["host_gpu"])
    failures = list(parity["failures"])
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
        "profile": bundle["profile"]["name"],
        "passed": not failures,
        "failures": failures,
        "warnings": warnings,
        "parity": {**parity, "tolerances": bundle["tolerances"], "vs": "PyTorch FP32 outputs recorded when the bundle was made"},
        "drift_from_making_host": drift,
        "latency": latency,
        "budget": {**budget, "judged": judged, "host": why},
        "runtime": {**versions, "providers": providers, "threads": threads},
        "host": {"machine": platform.machine(), "platform": platform.platform()},
    }


def latency_input(inputs: np.ndarray, batch: int) -> np.ndarray:
    """The latency input: the first reference image repeated to the model's batch."""
    return inputs[[0] * batch]


def _print(report: dict) -> None:
    metrics = report["parity"]["metrics"]
    print(f"bundle    {report['bundle']}: {report['model']} {report['target']}/{report['precision']} for {report['profile']}")
    print(f"runtime   {', '.join(f'{k} {v}' for k, v in report['runtime'].items() if k not in ('providers', 'threads'))}; threads {report['runtime']['threads']}")
    for line in report["warnings"]:
        print(f"warning   {line}")
    keys = ("samples", "max_abs_error", "cosine_min", "top1_agreement", "pixel_agreement", "nonfinite_outputs")
    print("parity    " + ", ".join(f"{k} {metrics[k]:.6g}" for k in keys if k in metrics) + " (vs PyTorch FP32)")
    drift = report["drift_from_making_host"]
    if drift:
        print(f"drift     vs the making host's own outputs: max abs {drift['max_abs_error']:.3g}, min cosine {drift['cosine_min']:.6f}")
    latency = report["latency"]
    if latency:
        print(f"latency   median {latency['median_ms']:.3f} ms, p90 {latency['p90_ms']:.3f}, p99 {latency['p99_ms']:.3f} ({latency['count']} runs)")
    budget = report["budget"]
    if budget.get("latency_ms"):
        print(f"budget    {budget['statistic']} <= {budget['latency_ms']} ms: " + ("judged" if budget["judged"] else "not judged") + f" ({budget['host']})")
    print("PASSED" if report["passed"] else "FAILED: " + "; ".join(report["failures"]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Verify this bundle here: integrity, parity with the reference outputs, latency.")
    parser.add_argument("bundle", nargs="?", default=str(Path(__file__).resolve().parent), help="bundle folder [default: this script's folder]")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads [default: the profile's]")
    parser.add_argument("--warmup", type=int, default=None, help="untimed runs [default: the profile's]")
    parser.add_argument("--count", type=int, default=None, help="timed runs; 0 skips latency [default: the profile's]")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if any(v is not None and v < 0 for v in (args.threads, args.warmup, args.count)):
        parser.error("--threads, --warmup and --count must be >= 0")
    try:
        report = verify(args.bundle, args.threads, args.warmup, args.count)
    except BundleError as exc:
        print(f"error: {exc.message}" + (f" — {exc.hint}" if exc.hint else ""), file=sys.stderr)
        return exc.exit_code
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print(report)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
