"""The one registry of backends: every module that needs a fact about a target reads it here.

Adding a backend = a folder (`__init__.py` with its `BACKEND` descriptor, `export.py`,
`runner.py`, `plan.py` where the shared precision plan maps onto it, `device.py` for what a
bundle runs on the device) and one registry entry: its line in `_FOLDERS` below for a folder
under `evitdeploy/backends/`, or an entry point in the `evitdeploy.backends` group for a package
of its own (`toy = "my_package.toy_backend"`). The folders' `__init__` modules import nothing
heavy, so reading the registry never imports a runtime. Options a backend takes are declared in
its descriptor and checked here (`check_options`), once, for the CLI, requests and profiles.
"""

from __future__ import annotations

import importlib
from dataclasses import replace
from importlib import metadata
from typing import Any, Mapping, Optional

from evitdeploy.backends.descriptor import Backend
from evitdeploy.errors import UserError

_FOLDERS = ("onnxruntime", "tensorrt", "tflite", "coreml", "openvino", "executorch")  # the order --help and doctor list them in
ENTRY_POINTS = "evitdeploy.backends"  # the group a backend outside this package registers in


def _plugins() -> list[str]:
    """Packages other distributions register as backends (after ours, in name order)."""
    return [entry.value for entry in sorted(metadata.entry_points(group=ENTRY_POINTS), key=lambda e: e.name)]


def _load() -> dict[str, Backend]:
    found = [importlib.import_module(f"evitdeploy.backends.{folder}").BACKEND for folder in _FOLDERS]
    for package in _plugins():
        backend = importlib.import_module(package).BACKEND
        found.append(replace(backend, package=package))
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
    return importlib.import_module(f"{backend.modules}.{role}")


def check_options(backend: Backend, given: Mapping[str, Any], precisions, *, keys: Optional[Mapping[str, str]] = None) -> dict:
    """Every option `backend` declares, with its value: the given ones checked (name, value, and the
    precisions a choice builds), the others at their defaults. A wrong one is a UserError naming
    what the backend takes, spelled as the command line does, or with `keys` (option -> the TOML
    key it came from) as a profile does."""
    precisions = (precisions,) if isinstance(precisions, str) else tuple(precisions)
    values = {option.name: option.default for option in backend.options}
    for name, value in given.items():
        spelled = _spelled(name, keys)
        option = backend.option(name)
        if option is None:
            raise _not_taken(backend, name, spelled, in_profile=keys is not None)
        values[name] = _checked_value(backend, option, value, spelled=spelled, in_profile=keys is not None)
        choice = option.choice(values[name])
        refused = [p for p in precisions if choice is not None and choice.precisions and p not in choice.precisions]
        if refused and keys is not None:
            raise UserError(
                f"{choice.title} takes {', '.join(choice.precisions)} only, but precisions is {list(precisions)}", f"use precisions = {list(choice.precisions)}"
            )
        if refused:
            raise UserError(f"{choice.title} takes {', '.join(choice.precisions)} here, not {refused[0]}", choice.instead)
    return values


def _spelled(name: str, keys: Optional[Mapping[str, str]]) -> str:
    if keys is not None:
        return keys.get(name, f"[options] {name}")
    option = next((o for b in BACKENDS.values() for o in b.options if o.name == name), None)
    return option.spelled if option else f"--option {name}"


def _not_taken(backend: Backend, name: str, spelled: str, *, in_profile: bool) -> UserError:
    offering = [b for b in BACKENDS.values() if b.option(name)]
    own = backend.folder if in_profile else backend.name
    takes = f"{own} takes {', '.join(o.name for o in backend.options)}" if backend.options else f"{own} takes no options"
    if not offering:
        return UserError(f"{spelled} is not an option of any backend", f"drop it; {takes}")
    if in_profile:
        return UserError(f"{spelled} is for the {', '.join(b.folder for b in offering)} backend", f'drop {name}, or use backend = "{offering[0].folder}"')
    return UserError(f"{spelled} is for --target {', '.join(b.name for b in offering)}", f"drop {spelled}; {takes}")


def _checked_value(backend: Backend, option, value, *, spelled: str, in_profile: bool):
    """A switch as a bool ("true"/"false" from the command line), a choice as one of its values."""
    if not option.choices:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise UserError(f"{spelled} takes true or false, not {value!r}", f"e.g. --option {option.name}=true")
    if not isinstance(value, str) or option.choice(value) is None:
        own = backend.folder if in_profile else backend.name
        verb = "use" if in_profile else "choose"
        raise UserError(f"{spelled} {value!r} is not one {own} takes", f"{verb} one of: {', '.join(c.value for c in option.choices)}")
    return value


def options_for(backend: Backend, given: Mapping[str, Any]) -> dict:
    """The options of `given` that `backend` declares (a grid's options go to the targets that take them)."""
    return {name: value for name, value in given.items() if backend.option(name)}


def check_grid_options(targets, given: Mapping[str, Any]) -> None:
    """Refuse an option no target of a grid takes, or a value one of them refuses."""
    backends = [get_backend(target) for target in targets]
    for name in given:
        if not any(backend.option(name) for backend in backends):
            raise _not_taken(backends[0], name, _spelled(name, None), in_profile=False)
    for backend in backends:
        check_options(backend, options_for(backend, given), ())


def option_help(name: str) -> str:
    """An option's help as the targets that take it describe it ("tflite: NHWC input ...")."""
    return "; ".join(f"{b.name}: {o.help}" for b in BACKENDS.values() for o in b.options if o.name == name)


def options_help() -> str:
    """Every target's options, for --option's help."""
    listed = [f"{b.name}: {', '.join(o.name for o in b.options)}" for b in BACKENDS.values() if b.options]
    return "; ".join(listed) or "none"


def option_flags(backend: Backend, given: Mapping[str, Any]) -> str:
    """The command-line flags that give these options (recorded commands): an option's own flag
    where it has one (`--nhwc`, `--delegate coreml`), else `--option NAME=VALUE`."""
    flags = []
    for name, value in given.items():
        option = backend.option(name)
        if option is not None and option.flag and (option.choices or value is True):
            flags.append(option.flag if value is True else f"{option.flag} {value}")
        else:
            flags.append(f"--option {name}={str(value).lower() if isinstance(value, bool) else value}")
    return "".join(f" {flag}" for flag in flags)


def parse_option_flags(pairs, **flags) -> dict:
    """`--option NAME=VALUE` (repeatable) as a mapping; the names and values are checked against
    the target by `check_options`."""
    options = {}
    for pair in pairs or ():
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise UserError(f"--option {pair!r} is not NAME=VALUE", "e.g. --option delegate=coreml (see a target's options in docs/backends/)")
        options[name.strip()] = value.strip()
    options.update({name: value for name, value in flags.items() if value not in (None, False, "")})  # an option's own flag (--nhwc, --delegate)
    return options


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
        raise UserError(
            f"manifest {manifest_path} names target {manifest['target']!r}, which this evitdeploy does not know",
            f"known targets: {target_names()}; a newer evitdeploy may know it",
        )
    if verify:
        verify_files(folder, manifest)
    # With a manifest, its spec is the artifact's (its size, classes, eps): `spec` only describes a
    # bare model file; api.resolve_artifact refuses a --model that contradicts the manifest.
    return Artifact(
        folder,
        folder / manifest["model_file"],
        manifest["target"],
        precision=manifest["precision"],
        spec=ModelSpec.from_dict(manifest["spec"]),
        manifest=manifest,
    )
