"""Whether a bundle can be trusted: its manifest's fields, every file's sha256, its signature.

Numpy and the standard library only (a bundle carries this file): evitdeploy's artifacts and
`evitdeploy verify` use these same checks, so a bundle refused on the device is refused here too,
with the same first line.
"""

import ast
import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np

from . import cpu
from .tasks import TASKS

FORMAT = 1  # the newest manifest format this code understands
MANIFEST = "manifest.json"
REFERENCE = "reference.npz"
SIGNATURE = "model.sig"  # OpenSSF model-signing signature, when the bundle was signed (deploy --sign-key)


class BundleError(Exception):
    """A bundle that cannot be trusted or run here, with the fix."""

    def __init__(self, message: str, hint: str = "", exit_code: int = 2):
        super().__init__(message)
        self.message, self.hint, self.exit_code = message, hint, exit_code


def sha256_of(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


# The fields verification reads, and what each must be: every bundle is checked against this list
# before anything indexes into it (evitdeploy's own schemas need pydantic; a device has numpy only).
# tests/test_manifest_contract.py keeps it in step with evitdeploy.schemas.BundleManifest.
MANIFEST_FIELDS = (
    ("target", _text, "a target name"),
    ("precision", _text, "a precision name"),
    ("model_file", _text, "a file name"),
    (
        "files",
        lambda v: isinstance(v, dict) and all(isinstance(e, dict) and isinstance(e.get("sha256"), str) for e in v.values()),
        "an object of {name: {sha256, bytes}}",
    ),
    ("toolchain", lambda v: isinstance(v, dict), "an object of package versions"),
    ("spec", lambda v: isinstance(v, dict), "an object"),
    ("spec.name", _text, "a model name"),
    ("spec.task", lambda v: v in TASKS, ", ".join(TASKS[:-1]) + " or " + TASKS[-1]),
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
# Sections only some bundles carry: checked when their top-level key is there and not null.
OPTIONAL_FIELDS = (
    ("int8_kernels", _optional(lambda v: isinstance(v, dict)), "null or an object"),
    ("int8_kernels.target", lambda v: v in cpu.TARGETS, "one of " + ", ".join(cpu.TARGETS)),
)


def check_manifest_fields(path: Path, manifest: dict) -> None:
    """Every field verify.py reads is present with the type it needs, else one BundleError naming it."""
    present = tuple(field for field in OPTIONAL_FIELDS if manifest.get(field[0].split(".")[0]) is not None)
    for dotted, valid, expected in MANIFEST_FIELDS + present:
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
                raise BundleError(
                    f"{path} is a {'symbolic link' if path.is_symlink() else 'special file'}; a bundle holds regular files only",
                    "re-copy the bundle from where it was made (copy files, not links)",
                )
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
        raise BundleError(
            f"{folder} carries no signature ({SIGNATURE}), so it cannot be checked against {key}",
            "ask for a bundle made with `evitdeploy deploy --sign-key KEY.pem`, or verify without --public-key",
        )
    if not key.is_file():
        raise BundleError(f"public key not found: {key}", "pass the PEM public key paired with the signing key (openssl ec -in key.pem -pubout -out pub.pem)")
    try:
        from model_signing import hashing, verifying
    except ImportError as exc:
        raise BundleError("model-signing is not installed, so the signature cannot be checked", "install it with: pip install model-signing", 3) from exc
    try:
        config = verifying.Config().use_elliptic_key_verifier(public_key=key)
    except Exception as exc:
        raise BundleError(
            f"{key} is not a PEM elliptic-curve public key ({type(exc).__name__})",
            "pass the public key paired with the signing key (openssl ec -in key.pem -pubout -out pub.pem)",
        ) from exc
    # the same files as the standard `model_signing verify key`: all but the signature and git's files
    config.set_hashing_config(hashing.Config().set_ignored_paths(paths=[SIGNATURE], ignore_git_paths=True))
    try:
        config.verify(folder, signature)
    except Exception as exc:
        message = _signature_failure(exc, key)
        hint = (
            "pass the public key paired with the signing key (manifest.json's bundle.signature.public_key_sha256 identifies it)"
            if message.startswith(SIGNATURE + " was not made")
            else "do not use this bundle: re-copy it from its maker, or ask for a newly signed one"
        )
        raise BundleError(message, hint) from exc
    report.update(checked=True, public_key=str(key))
    return report


def trusted_manifest(folder: Path, public_key=None) -> tuple:
    """(manifest, signature report) once the bundle is trusted: its signature first (with a key,
    nothing unsigned is read), then every file against the manifest's sha256. A manifest that says
    it was signed needs its signature file."""
    signature = check_signature(folder, public_key)
    manifest = load_manifest(folder)
    recorded = manifest["bundle"].get("signature") if isinstance(manifest["bundle"], dict) else None
    if recorded and not signature["signed"]:
        raise BundleError(f"the manifest says this bundle was signed, but its signature ({SIGNATURE}) is missing", "re-copy the whole bundle from its maker")
    check_integrity(folder, manifest)
    return manifest, signature


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


PROMPTED_ARRAYS = ("inputs", "prompt_images", "prompt_offsets", "prompt_points", "prompt_labels", "mask_side", "expected_masks", "expected_iou")


def promptable_models(manifest: dict) -> dict:
    """{"encoder": file, "decoder": file} of a promptable bundle, each one of its listed files."""
    models = manifest.get("models")
    files = manifest["files"]
    if (
        not isinstance(models, dict)
        or sorted(models) != ["decoder", "encoder"]
        or not all(isinstance(name, str) and (name in files or any(f.startswith(name + "/") for f in files)) for name in models.values())
    ):
        raise BundleError(
            f"{MANIFEST}: a promptable bundle names its encoder and decoder under `models`, each a file it lists", "re-copy the bundle from where it was made"
        )
    tolerances = manifest["bundle"]["tolerances"]
    for key, valid in (("min_mask_iou", lambda v: _is_number(v) and 0 <= v <= 1), ("max_iou_error", lambda v: v is None or (_is_number(v) and v >= 0))):
        if key in tolerances and not valid(tolerances[key]):
            raise BundleError(
                f"{MANIFEST}: field `bundle.tolerances.{key}` must be a number ({tolerances[key]!r})", "re-copy the bundle from where it was made"
            )
    return models


def load_prompted_reference(folder: Path, spec: dict) -> tuple:
    """(inputs, decoder feeds, PyTorch's outputs) of a promptable bundle's reference.npz, checked:
    no pickles, every array, numbers where numbers belong, prompts that index the inputs."""
    from .prompts import feeds_from_flat

    path = folder / REFERENCE
    hint = "re-copy the bundle from where it was made"
    try:
        with np.load(path, allow_pickle=False) as reference:
            missing = [key for key in PROMPTED_ARRAYS if key not in reference.files]
            if missing:
                raise BundleError(f"{path} holds no {missing[0]!r} array (it has {', '.join(reference.files) or 'none'})", hint)
            arrays = {key: reference[key] for key in PROMPTED_ARRAYS}
    except BundleError:
        raise
    except Exception as exc:
        raise BundleError(f"{path} cannot be read as numeric arrays ({first_line(exc)})", hint) from None
    for name, array in arrays.items():
        integer = name in ("prompt_images", "prompt_offsets", "mask_side")
        if not np.issubdtype(array.dtype, np.integer if integer else np.floating):
            raise BundleError(f"{path}: {name!r} holds {array.dtype} values, not {'integers' if integer else 'floats'}", hint)
    inputs = arrays["inputs"]
    if inputs.ndim != 4 or tuple(inputs.shape[1:]) != tuple(spec["input_shape"][1:]) or len(inputs) < 1:
        raise BundleError(f"{path}: 'inputs' has shape {inputs.shape}; the model takes (N, {', '.join(map(str, spec['input_shape'][1:]))})", hint)
    try:
        feeds = feeds_from_flat(arrays, images=len(inputs))
    except ValueError as exc:
        raise BundleError(f"{path}: {exc}", hint) from None
    masks, ious = arrays["expected_masks"], arrays["expected_iou"]
    if masks.ndim != 4 or len(masks) != len(feeds) or ious.shape != masks.shape[:2]:
        raise BundleError(f"{path}: 'expected_masks' {masks.shape} and 'expected_iou' {ious.shape} do not fit {len(feeds)} prompts", hint)
    return inputs, feeds, {"low_res_masks": masks.astype(np.float32), "iou_predictions": ious.astype(np.float32)}
