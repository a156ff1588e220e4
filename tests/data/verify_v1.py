#!/usr/bin/env python3
"""Verify an evitdeploy bundle where it will run: integrity, parity with the reference, latency.

This file is copied verbatim into every bundle as `verify.py`. It needs Python 3.8+, numpy and
the bundle's runtime only (onnxruntime for ONNX bundles): no evitdeploy, no torch. evitdeploy's
own parity, bench and integrity code import their metrics from here, so the device and the host
that made the bundle measure in exactly the same way.

    python3 verify.py [--threads N] [--warmup N] [--count N] [--json] [--public-key PUB.pem]

A signed bundle (model.sig) is checked against --public-key first, when the `model-signing`
package is installed (pip install model-signing); without a key its report says "signature not checked".

Exit codes: 0 passed; 1 parity failed or the latency budget was exceeded on a device of the
bundle's kind; 2 the bundle is refused (missing or modified file, newer format, a signature that
does not verify); 3 the runtime (or model-signing, for --public-key) is not installed.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np

FORMAT = 1  # the newest manifest format this script understands
MANIFEST = "manifest.json"
REFERENCE = "reference.npz"
SIGNATURE = "model.sig"  # OpenSSF model-signing signature, when the bundle was signed (deploy --sign-key)
RUNTIMES = {  # target -> (module, pip package)
    "onnx": ("onnxruntime", "onnxruntime"),
    "tflite": ("ai_edge_litert", "ai-edge-litert"),
    "coreml": ("coremltools", "coremltools"),
}
ENGINE_TARGETS = ("trt",)  # serialized engines only load on the runtime version that built them
# ONNX Runtime execution providers, best first: the one order for check, bench and this script
# (evitdeploy's runner imports it), so a bundle's parity on the device is measured on the provider
# it was measured on where it was made. No TensorRT EP: it builds an engine on the first run
# (minutes, again for every new shape), with numerics set by its own flags, and TensorRT is its
# own target (`--target trt`, built and checked with the TensorRT API); an ONNX artifact is
# checked and timed on ONNX Runtime's own kernels: CUDA where present, else CPU.
ONNX_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


def onnx_providers(available) -> list:
    """The providers of ONNX_PROVIDERS this onnxruntime has, in that order."""
    return [provider for provider in ONNX_PROVIDERS if provider in available]


def onnx_session(ort, model, options, providers):
    """An onnxruntime InferenceSession. onnxruntime prints its provider-fallback notice
    ("EP Error ... Falling back ...") on stdout, which would break --json output: send it to stderr."""
    with contextlib.redirect_stdout(sys.stderr):
        return ort.InferenceSession(model, options, providers=providers)


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


def _unit_rows(x: np.ndarray) -> tuple:
    """(each row scaled to unit length, which rows are all zero); scaled by the row's max first,
    so tiny or huge outputs neither underflow nor overflow the norm. NaN/Inf rows become NaN."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        scale = np.abs(x).max(axis=1, keepdims=True) if x.shape[1] else np.zeros((len(x), 1))
        zero = scale[:, 0] == 0
        x = x / np.where(scale == 0, 1.0, scale)
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        return x / np.where(norm == 0, 1.0, norm), zero


def cosine_per_sample(ref: np.ndarray, cand: np.ndarray) -> np.ndarray:
    a, a_zero = _unit_rows(ref.reshape(len(ref), -1).astype(np.float64))
    b, b_zero = _unit_rows(cand.reshape(len(cand), -1).astype(np.float64))
    # Only two all-zero outputs agree (1.0); an all-zero output against a live one is 0.0 (a dead
    # candidate must fail the cosine gate). NaN/Inf in a sample make its cosine NaN.
    return np.where(a_zero & b_zero, 1.0, (a * b).sum(axis=1))


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
    max_abs, min_cosine = tolerances.get("max_abs"), tolerances.get("min_cosine")  # a missing tolerance is not gated
    min_top1, min_pixels = tolerances.get("min_top1"), tolerances.get("min_pixel_agreement")
    if metrics["nonfinite_outputs"]:
        failures.append(f"{metrics['nonfinite_outputs']} NaN/Inf values in the candidate's outputs")
    if max_abs is not None and metrics["max_abs_error"] > max_abs:
        failures.append(f"max abs error {metrics['max_abs_error']:.3g} > {max_abs:.3g}")
    if min_cosine is not None and metrics["cosine_min"] < min_cosine:
        failures.append(f"min cosine {metrics['cosine_min']:.6f} < {min_cosine}")
    if task == "classification" and min_top1 is not None and metrics["top1_agreement"] < min_top1:
        failures.append(f"top-1 agreement {metrics['top1_agreement']:.4f} < {min_top1}")
    if task == "segmentation" and min_pixels is not None and metrics["pixel_agreement"] < min_pixels:
        failures.append(f"pixel agreement {metrics['pixel_agreement']:.5f} < {min_pixels}")
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


def _is_int(value, low=0, high=None) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low and (high is None or value <= high)


def _is_number(value) -> bool:
    if isinstance(value, float):
        return value == value and abs(value) != float("inf")
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) < 10**300


def _optional(check):
    return lambda value: value is None or check(value)


def _text(value) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 4096


# The fields this script reads, and what each must be: every bundle is checked against this list
# before anything indexes into it (evitdeploy's own schemas need pydantic; a device has numpy only).
MANIFEST_FIELDS = (
    ("target", _text, "a target name"),
    ("precision", _text, "a precision name"),
    ("model_file", _text, "a file name"),
    ("files", lambda v: isinstance(v, dict) and all(isinstance(e, dict) and isinstance(e.get("sha256"), str) for e in v.values()),
     "an object of {name: {sha256, bytes}}"),
    ("toolchain", lambda v: isinstance(v, dict), "an object of package versions"),
    ("spec", lambda v: isinstance(v, dict), "an object"),
    ("spec.name", _text, "a model name"),
    ("spec.task", lambda v: v in ("classification", "segmentation"), "classification or segmentation"),
    ("spec.input_shape", lambda v: isinstance(v, list) and len(v) == 4 and all(_is_int(d, 1, 1 << 16) for d in v), "4 positive integers (N, C, H, W)"),
    ("spec.output_name", _text, "an output name"),
    ("spec.input_name", _text, "an input name"),
    ("bundle", lambda v: isinstance(v, dict), "an object"),
    ("bundle.tolerances", lambda v: isinstance(v, dict), "an object"),
    ("bundle.tolerances.max_abs", _optional(lambda v: _is_number(v) and v >= 0), "null (not gated) or a number >= 0"),
    ("bundle.tolerances.min_cosine", lambda v: _is_number(v) and -1 <= v <= 1, "a number in [-1, 1]"),
    ("bundle.tolerances.min_top1", lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    ("bundle.tolerances.min_pixel_agreement", lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    ("bundle.bench", lambda v: isinstance(v, dict), "an object"),
    ("bundle.bench.threads", _optional(lambda v: _is_int(v, 1, 1024)), "null or 1 to 1024 threads"),
    ("bundle.bench.warmup", lambda v: _is_int(v, 0, 100000), "0 to 100000 runs"),
    ("bundle.bench.count", lambda v: _is_int(v, 0, 100000), "0 to 100000 runs"),
    ("bundle.budget", lambda v: isinstance(v, dict), "an object"),
    ("bundle.budget.statistic", lambda v: v in ("median", "p90", "p99"), "median, p90 or p99"),
    ("bundle.budget.latency_ms", _optional(lambda v: _is_number(v) and v > 0), "null or a positive number"),
    ("bundle.profile", lambda v: isinstance(v, dict), "an object"),
    ("bundle.profile.name", _text, "a profile name"),
    ("bundle.profile.host_machines", lambda v: isinstance(v, list) and all(isinstance(m, str) for m in v), "a list of machine names"),
    ("bundle.profile.host_device_model", _optional(lambda v: isinstance(v, str)), "null or a board name"),
    ("bundle.profile.host_gpu", _optional(lambda v: isinstance(v, str)), "null or a GPU name"),
)


def check_manifest_fields(path: Path, manifest: dict) -> None:
    """Every field verify.py reads is present with the type it needs, else one BundleError naming it."""
    for dotted, valid, expected in MANIFEST_FIELDS:
        value, found = manifest, True
        for key in dotted.split("."):
            found = isinstance(value, dict) and key in value
            value = value[key] if found else None
            if not found:
                break
        if not found or not valid(value):
            got = "it is missing" if not found else "got " + (repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "...")
            raise BundleError(f"{path}: field `{dotted}` must be {expected} ({got})", "re-copy the bundle from where it was made")


def load_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    if not path.is_file() or path.is_symlink():
        raise BundleError(f"{folder} holds no {MANIFEST}", "pass a bundle folder written by `evitdeploy deploy`")
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, RecursionError) as exc:  # RecursionError: arrays nested thousands deep
        raise BundleError(f"{path} is not valid JSON ({type(exc).__name__})", "re-copy the bundle") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("format"), int) or "bundle" not in manifest:
        raise BundleError(f"{path} is not a bundle manifest", "pass a bundle folder written by `evitdeploy deploy`")
    if manifest["format"] > FORMAT:
        raise BundleError(
            f"{path} has manifest format {manifest['format']}, newer than this verifier reads ({FORMAT})",
            "verify it with the evitdeploy version that made it, or upgrade evitdeploy",
        )
    check_manifest_fields(path, manifest)
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
    for root, dirs, names in os.walk(folder):  # os.walk does not follow links: each one is seen here
        for entry in dirs + names:
            path = Path(root, entry)
            if path.is_symlink() or not (path.is_dir() or path.is_file()):
                raise BundleError(f"{path} is a {'symbolic link' if path.is_symlink() else 'special file'}; a bundle holds regular files only",
                                  "re-copy the bundle from where it was made (copy files, not links)")
    for name, entry in sorted(files.items()):
        file = folder / name
        if not file.is_file():
            raise BundleError(f"{file} is listed in the manifest but missing", "copy the whole bundle folder")
        if sha256_of(file) != entry["sha256"]:
            raise BundleError(f"{file} does not match the sha256 in the manifest (modified, truncated or corrupt)", "re-copy the bundle from where it was made")


SIGNATURE_NOT_CHECKED = "signature not checked: this bundle is signed ({}); pass --public-key PUB.pem to check it"


def _signature_failure(exc: Exception, key) -> str:
    """model-signing's verification error as one line naming what changed."""
    text = " ".join(str(exc).split())
    if text.startswith("Signature mismatch"):
        try:  # model-signing 1.x: "Signature mismatch: " + str(a list of one line per difference)
            differences = ast.literal_eval(str(exc).split(":", 1)[1].strip())
        except (ValueError, SyntaxError, RecursionError, MemoryError):
            differences = []
        found = {"changed": [], "added": [], "missing": []}
        for line in differences if isinstance(differences, list) else []:
            changed = re.match(r"Hash mismatch for '(.+?)': Expected", str(line))
            listed = re.match(r"(Extra|Missing) files found in model '.*': (.*)$|(Extra|Missing) files in model '.*': (.*)$", str(line))
            if changed:
                found["changed"].append(changed.group(1))
            elif listed:
                kind, names = (listed.group(1), listed.group(2)) if listed.group(1) else (listed.group(3), listed.group(4))
                found["added" if kind == "Extra" else "missing"] += [n.strip() for n in names.split(",")]
        named = "; ".join(f"{what}: {', '.join(sorted(names))}" for what, names in found.items() if names)
        return "the bundle changed after it was signed (" + (named or shorten(text)) + ")"
    if text.startswith("Key mismatch"):
        return f"{SIGNATURE} was not made with the private key paired with {key}"
    if type(exc).__name__ == "InvalidSignature":
        return f"{SIGNATURE} does not verify with {key}: the signature or its signed file list was altered"
    return f"{SIGNATURE} could not be verified with {key} ({type(exc).__name__}: {shorten(text) or 'no detail'})"


def check_signature(folder, public_key=None) -> dict:
    """The bundle's OpenSSF model-signing signature checked against `public_key` (PEM), before
    anything else is read. Raises BundleError for a bundle changed after signing (naming what
    changed), another key, a missing signature, or model-signing not installed (exit 3).
    Without a key nothing is checked: {"signed", "checked": False, ...} says so."""
    folder = Path(folder)
    signature = folder / SIGNATURE
    signed = signature.is_file() and not signature.is_symlink()
    report = {"file": SIGNATURE if signed else None, "signed": signed, "checked": False, "public_key": None}
    if public_key is None:
        return report
    key = Path(public_key)
    if not signed:
        raise BundleError(f"{folder} carries no signature ({SIGNATURE}), so it cannot be checked against {key}",
                          "ask for a bundle made with `evitdeploy deploy --sign-key KEY.pem`, or verify without --public-key")
    if not key.is_file():
        raise BundleError(f"public key not found: {key}", "pass the PEM public key paired with the signing key (openssl ec -in key.pem -pubout -out pub.pem)")
    try:
        from model_signing import hashing, verifying
    except ImportError as exc:
        raise BundleError("model-signing is not installed, so the signature cannot be checked", "install it with: pip install model-signing", 3) from exc
    try:
        config = verifying.Config().use_elliptic_key_verifier(public_key=key)
    except Exception as exc:  # noqa: BLE001 (not PEM, not an EC key, an unsupported curve)
        raise BundleError(f"{key} is not a PEM elliptic-curve public key ({type(exc).__name__})",
                          "pass the public key paired with the signing key (openssl ec -in key.pem -pubout -out pub.pem)") from exc
    # the same files as the standard `model_signing verify key`: all but the signature and git's files
    config.set_hashing_config(hashing.Config().set_ignored_paths(paths=[SIGNATURE], ignore_git_paths=True))
    try:
        config.verify(folder, signature)
    except Exception as exc:  # noqa: BLE001 (model-signing raises ValueError, cryptography's InvalidSignature, protobuf errors)
        message = _signature_failure(exc, key)
        hint = ("pass the public key paired with the signing key (manifest.json's bundle.signature.public_key_sha256 identifies it)"
                if message.startswith(SIGNATURE + " was not made") else "do not use this bundle: re-copy it from its maker, or ask for a newly signed one")
        raise BundleError(message, hint) from exc
    report.update(checked=True, public_key=str(key))
    return report


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
        preferred = onnx_providers(ort.get_available_providers())
        session = onnx_session(ort, str(folder / manifest["model_file"]), options, preferred)
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


def verify(folder, threads=None, warmup=None, count=None, judge_budget: bool = True, public_key=None, schema_check=None) -> dict:
    """The whole verification as JSON-ready data; raises BundleError before running anything untrusted.
    `schema_check(manifest_path)`: evitdeploy's full schema of the manifest, where it is installed
    (after the checks this script makes itself, so both give the same first message)."""
    folder = Path(folder)
    signature = check_signature(folder, public_key)  # first: with a key, nothing unsigned is read
    manifest = load_manifest(folder)
    recorded = manifest["bundle"].get("signature") if isinstance(manifest["bundle"], dict) else None
    if recorded and not signature["signed"]:
        raise BundleError(f"the manifest says this bundle was signed, but its signature ({SIGNATURE}) is missing", "re-copy the whole bundle from its maker")
    check_integrity(folder, manifest)
    if schema_check is not None:
        schema_check(folder / MANIFEST)
    versions = runtime_versions(manifest["target"])
    warnings, errors = version_findings(manifest, versions)
    if signature["signed"] and not signature["checked"]:
        warnings.append(SIGNATURE_NOT_CHECKED.format(SIGNATURE))
    if errors:
        raise BundleError(errors[0], "build the engine again on this device (see README.txt)")
    bundle = manifest["bundle"]
    spec = manifest["spec"]
    inputs, expected, host_outputs = load_reference(folder, spec)
    threads = threads or bundle["bench"].get("threads")
    try:
        infer, providers = open_model(folder, manifest, threads)
    except BundleError:
        raise
    except Exception as exc:  # the runtime's own error types: a truncated or foreign model file
        raise BundleError(f"{manifest['model_file']} cannot be loaded by this runtime ({first_line(exc)})", "re-copy the bundle from where it was made") from None
    batch = spec["input_shape"][0]
    try:
        outputs = run_batches(infer, inputs, batch)
    except Exception as exc:
        raise BundleError(f"the model refused the reference inputs ({first_line(exc)})",
                          "the model file and the manifest disagree: re-copy the bundle from where it was made") from None
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
        "signature": signature,
        "parity": {**parity, "tolerances": bundle["tolerances"], "vs": "PyTorch FP32 outputs recorded when the bundle was made"},
        "drift_from_making_host": drift,
        "latency": latency,
        "budget": {**budget, "judged": judged, "host": why},
        "runtime": {**versions, "providers": providers, "threads": threads},
        "host": {"machine": platform.machine(), "platform": platform.platform()},
    }


def shorten(text: str, limit: int = 200) -> str:
    """The text, or as many whole words of it as fit in `limit` characters followed by an ellipsis
    (a single word longer than half the limit is cut inside it)."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip() + "…"


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception from a runtime, for a one-line error (cut at a word)."""
    text = str(exc).strip()
    return shorten(text.splitlines()[0].strip(), limit) if text else type(exc).__name__


def load_reference(folder: Path, spec: dict) -> tuple:
    """(inputs, expected, host_outputs or None) from reference.npz, checked against the spec:
    no pickles, the right keys, float arrays whose shapes fit the model."""
    path = folder / REFERENCE
    hint = "re-copy the bundle from where it was made"
    try:
        with np.load(path, allow_pickle=False) as reference:
            missing = [key for key in ("inputs", "expected") if key not in reference.files]
            if missing:
                raise BundleError(f"{path} holds no {missing[0]!r} array (it has {', '.join(reference.files) or 'none'})", hint)
            arrays = {key: reference[key] for key in ("inputs", "expected", "host_outputs") if key in reference.files}
    except BundleError:
        raise
    except Exception as exc:  # not a zip, a pickled object array, a truncated member
        raise BundleError(f"{path} cannot be read as numeric arrays ({first_line(exc)})", hint) from None
    inputs, expected = arrays["inputs"], arrays["expected"]
    host_outputs = arrays.get("host_outputs")
    wanted = tuple(spec["input_shape"][1:])
    for name, array in arrays.items():
        if not np.issubdtype(array.dtype, np.floating):
            raise BundleError(f"{path}: {name!r} holds {array.dtype} values, not floats", hint)
    if inputs.ndim != 4 or tuple(inputs.shape[1:]) != wanted or len(inputs) < 1:
        raise BundleError(f"{path}: 'inputs' has shape {inputs.shape}; the model takes (N, {', '.join(map(str, wanted))})", hint)
    if len(expected) != len(inputs) or expected.ndim < 2:
        raise BundleError(f"{path}: 'expected' has shape {expected.shape} for {len(inputs)} inputs", hint)
    if host_outputs is not None and host_outputs.shape != expected.shape:
        raise BundleError(f"{path}: 'host_outputs' has shape {host_outputs.shape}, 'expected' {expected.shape}", hint)
    return inputs, expected, host_outputs


def latency_input(inputs: np.ndarray, batch: int) -> np.ndarray:
    """The latency input: the first reference image repeated to the model's batch."""
    return inputs[[0] * batch]


def _print(report: dict) -> None:
    metrics = report["parity"]["metrics"]
    print(f"bundle    {report['bundle']}: {report['model']} {report['target']}/{report['precision']} for {report['profile']}")
    print(f"runtime   {', '.join(f'{k} {v}' for k, v in report['runtime'].items() if k not in ('providers', 'threads'))}; threads {report['runtime']['threads']}")
    signature = report.get("signature") or {}
    if signature.get("checked"):
        print(f"signature {signature['file']} verified with {signature['public_key']}: no file changed since signing")
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
    parser.add_argument("--public-key", default=None, metavar="PUB.pem", help="check the bundle's signature (model.sig) with this PEM public key first; needs `pip install model-signing`")
    args = parser.parse_args(argv)
    if any(v is not None and v < 0 for v in (args.threads, args.warmup, args.count)):
        parser.error("--threads, --warmup and --count must be >= 0")
    try:
        report = verify(args.bundle, args.threads, args.warmup, args.count, public_key=args.public_key)
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
