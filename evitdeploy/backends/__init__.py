"""The one registry of backends: every module that needs a fact about a target reads it here.

Adding a backend = a folder `backends/<name>/` (`__init__.py` with its `BACKEND` descriptor,
`export.py`, `runner.py`, `plan.py` where the shared precision plan maps onto it, `device.py`
for what a bundle runs on the device) and its line in `_FOLDERS` below. The folders' `__init__`
modules import nothing heavy, so reading the registry never imports a runtime.
"""

from __future__ import annotations

import importlib
from typing import Optional

from evitdeploy.backends.descriptor import Backend
from evitdeploy.errors import UserError

_FOLDERS = ("onnxruntime", "tensorrt", "tflite", "coreml", "openvino", "executorch")  # the order --help and doctor list them in


def _load() -> dict[str, Backend]:
    found = (importlib.import_module(f"evitdeploy.backends.{folder}").BACKEND for folder in _FOLDERS)
    return {backend.name: backend for backend in found}


BACKENDS: dict[str, Backend] = _load()


def find(name: str) -> Optional[Backend]:
    """The backend a name, folder or alias selects ("litert" -> tflite, "tensorrt" -> trt), or None."""
    return next((b for b in BACKENDS.values() if name in b.names), None)


def target_names() -> str:
    """The targets as a hint lists them, aliases in brackets."""
    return ", ".join(b.name + (f" ({', '.join(b.aliases)})" if b.aliases else "") for b in BACKENDS.values())


def canonical_target(name: str) -> str:
    """A target's own name from any of its spellings; an unknown name unchanged."""
    backend = find(name)
    return backend.name if backend else name


def get_backend(name: str, precision: Optional[str] = None) -> Backend:
    """The backend for a target name, refusing an unknown one or a precision it does not build."""
    backend = find(name)
    if backend is None:
        raise UserError(f"unknown target {name!r}", f"choose one of: {target_names()}")
    if precision is not None and precision not in backend.precisions:
        why = dict(backend.declined).get(precision)
        raise UserError(
            f"precision {precision!r} is not supported for target {backend.name!r}" + (f": {why}" if why else ""),
            f"choose one of: {', '.join(backend.precisions)}",
        )
    return backend


def for_model_file(suffix: str) -> Optional[Backend]:
    """The backend a bare model file (no manifest) belongs to, by its suffix."""
    return next((b for b in BACKENDS.values() if b.opens_bare and b.suffix == suffix), None)


def module(backend: Backend, role: str):
    """One of the backend's modules (export, runner, plan, device), imported when first used."""
    return importlib.import_module(f"evitdeploy.backends.{backend.folder}.{role}")


def export(model, spec, target_name: str, options):
    """Export `model` to the target; the artifact exists only if every validation passed."""
    backend = get_backend(target_name, options.precision)
    return module(backend, "export").export(model, spec, options)


def runner_for(artifact, threads: Optional[int] = None, taking_turns: bool = False):
    """The runner for an artifact. `taking_turns`: two runners alternate on the same cores (gate
    --interleave), so each must leave the cores alone between its turns."""
    backend = get_backend(artifact.target)
    return module(backend, "runner").for_artifact(artifact, threads=threads, taking_turns=taking_turns)


def why_not_here(artifact, what: str) -> Optional[str]:
    """None when this host can `predict` with the artifact (or `time` it meaningfully), else why
    not: the backend's runner module says (`cannot_predict_here` / `cannot_time_here`)."""
    runner = module(get_backend(artifact.target), "runner")
    predict = getattr(runner, "cannot_predict_here", lambda artifact: None)
    if what == "predict":
        return predict(artifact)
    return getattr(runner, "cannot_time_here", predict)(artifact)


def open_artifact(path, verify: bool = True, spec=None):
    """An artifact from its folder, its model file, or a bare model file plus a spec (the registry
    opens it: only it knows which suffix is whose)."""
    from pathlib import Path

    from evitdeploy.artifact import MANIFEST, Artifact, read_manifest, verify_files
    from evitdeploy.spec import ModelSpec

    path = Path(path)
    if not path.exists():
        raise UserError(f"artifact not found: {path}", "pass the folder `evitdeploy export` wrote, or its model file")
    bare = for_model_file(path.suffix)
    folder = path if path.is_dir() and bare is None else path.parent
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        if path.exists() and bare is not None:
            if spec is None:
                raise UserError(
                    f"{path} has no {MANIFEST} beside it, so its model is unknown",
                    "pass --model NAME (and --checkpoint) to say what it is",
                )
            return Artifact(folder, path, bare.name, precision="unknown", spec=spec, manifest={})
        raise UserError(f"{folder} holds no {MANIFEST}", "pass a folder written by `evitdeploy export`")
    manifest = read_manifest(manifest_path)
    if manifest["target"] not in BACKENDS:  # a target as manifests spell it, not an alias
        raise UserError(f"manifest {manifest_path} names target {manifest['target']!r}, which this evitdeploy does not know", f"known targets: {target_names()}; a newer evitdeploy may know it")
    if verify:
        verify_files(folder, manifest)
    # With a manifest, its spec is the artifact's (its size, classes, eps): `spec` only describes a
    # bare model file; api._resolve refuses a --model that contradicts the manifest.
    return Artifact(
        folder, folder / manifest["model_file"], manifest["target"],
        precision=manifest["precision"], spec=ModelSpec.from_dict(manifest["spec"]), manifest=manifest,
    )
