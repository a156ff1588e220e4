"""Deployment profiles: a target device as data (backend, precision, shapes, tolerances, budget).

Profiles ship as TOML beside this module; a user passes their own with `--profile path.toml`.
Every key is validated so a typo is one clear error, not a silently ignored setting.

`candidates` (optional) lists the backends `deploy --precision auto` measures against each other;
the main `backend` must be one of them (it is what a plain deploy uses, so `precision` must be one
it builds). Each candidate is measured at the profile's `precisions` it builds, and every entry of
`precisions` must be built by some candidate.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Annotated, Literal, Optional, Union

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (JetPack 6)
    import tomli as tomllib

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from evitdeploy import limits
from evitdeploy.device import cpu
from evitdeploy.errors import EXIT_BACKEND_UNAVAILABLE, UserError
from evitdeploy.files import TEXT_MAX_BYTES, read_input_text
from evitdeploy.parity import Tolerances, tolerances_for

PROFILES_DIR = Path(__file__).parent


def _from(key: str, convert=None):
    """A Profile field read from the validated TOML at `key` ("input.batch"), converted by `convert`."""
    return field(metadata={"toml": key, "convert": convert})


def _lowered(values) -> tuple:
    return tuple(value.lower() for value in values)


def _dumped(tables: dict) -> dict:
    return {precision: table.model_dump(exclude_none=True) for precision, table in tables.items()}


@dataclass(frozen=True)
class Profile:
    """A profile as the code reads it: the validated TOML (ProfileFile), its tables flattened.
    Each field names the key it is read from; `parse_profile` copies none by hand."""

    name: str = field(metadata={"toml": None})  # the file's stem or the shipped name
    source: str = field(metadata={"toml": None})  # the TOML it came from
    description: str = _from("description")
    backend: str = _from("backend")
    precision: str = _from("precision")
    precisions: tuple[str, ...] = _from("precisions", tuple)
    notes: tuple[str, ...] = _from("notes", tuple)
    batch: int = _from("input.batch")
    height: Optional[int] = _from("input.height")  # None: the model's own size
    width: Optional[int] = _from("input.width")
    dynamic: tuple[str, ...] = _from("input.dynamic", tuple)
    shape_min: tuple[int, ...] = _from("input.min", tuple)  # per dynamic axis, for engines with optimization profiles
    shape_max: tuple[int, ...] = _from("input.max", tuple)
    threads: Optional[int] = _from("bench.threads")
    warmup: int = _from("bench.warmup")
    count: int = _from("bench.count")
    statistic: str = _from("budget.statistic")
    latency_ms: Optional[float] = _from("budget.latency_ms")
    model_budgets: dict = _from("budget.models", dict)
    tolerances: dict = _from("tolerances", _dumped)  # precision -> overrides of parity's defaults
    host_machines: tuple[str, ...] = _from("host.machine", _lowered)
    host_device_model: Optional[str] = _from("host.device_model")
    host_gpu: Optional[str] = _from("host.gpu")
    candidates: tuple[str, ...] = _from(
        "candidates", lambda names: tuple(dict.fromkeys(names))
    )  # backends `deploy --precision auto` measures; () means (backend,)
    backend_options: dict = _from("given_options", dict)  # options its backend declares, as given ({"delegate": "coreml"})
    tensorrt: dict = _from("tensorrt", lambda table: table.model_dump(exclude_none=True) if table else {})  # JetPack's TensorRT range
    int8_kernels: str = _from("int8_kernels", lambda kernels: kernels or "")  # x86 INT8 kernel class its INT8 is for; "" where it does not apply

    def __post_init__(self) -> None:
        if not self.candidates:
            object.__setattr__(self, "candidates", (self.backend,))

    @property
    def target(self) -> str:
        from evitdeploy.backends import get_backend

        return get_backend(self.backend).name

    def precisions_for(self, backend: str) -> tuple[str, ...]:
        """The profile's precisions a backend (a registry folder name) builds, in the profile's order."""
        from evitdeploy.backends import get_backend

        built = get_backend(backend).precisions
        return tuple(p for p in self.precisions if p in built)

    def budget_for(self, model: str) -> Optional[float]:
        return self.model_budgets.get(model, self.latency_ms)

    def tolerances_for(self, precision: str) -> Tolerances:
        return tolerances_for(precision).override(**self.tolerances.get(precision, {}))

    def to_dict(self) -> dict:
        data = asdict(self)
        data["target"] = self.target
        return data


# ---------------------------------------------------------------------------------------------
# Validation: one typed schema of the TOML (pydantic, strict, unknown keys refused: a typo is an
# error, not a silently ignored setting); every problem is one line naming the key.

_Strict = ConfigDict(strict=True, extra="forbid")
_Size = Annotated[int, Field(ge=64, multiple_of=32)]
_Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
_Unit = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
_Text = Annotated[str, Field(min_length=1)]


class _InputTable(BaseModel):
    model_config = _Strict
    batch: Annotated[int, Field(ge=1, le=1024)] = 1
    height: Optional[_Size] = None
    width: Optional[_Size] = None
    dynamic: list[Literal["batch", "height", "width"]] = []
    nhwc: bool = False  # the older spelling of [options] nhwc = true
    min: list[Annotated[int, Field(ge=1)]] = []  # per dynamic axis, for engines with optimization profiles
    max: list[Annotated[int, Field(ge=1)]] = []


class _BenchTable(BaseModel):
    model_config = _Strict
    threads: Optional[Annotated[int, Field(ge=1, le=limits.THREADS_MAX)]] = None
    warmup: Annotated[int, Field(ge=0, le=limits.WARMUP_MAX)] = 10
    count: Annotated[int, Field(ge=1, le=limits.COUNT_MAX)] = 50


class _BudgetTable(BaseModel):
    model_config = _Strict
    statistic: Literal["median", "p90", "p99"] = "median"
    latency_ms: Optional[_Positive] = None
    models: dict[str, _Positive] = {}  # model name -> milliseconds


class _TolerancesTable(BaseModel):
    model_config = _Strict
    max_abs: Optional[_Positive] = None
    min_cosine: Optional[_Unit] = None
    min_top1: Optional[_Unit] = None
    min_pixel_agreement: Optional[_Unit] = None


class _HostTable(BaseModel):
    model_config = _Strict
    machine: list[str] = []  # platform.machine() names, e.g. ["x86_64"]
    device_model: Optional[_Text] = None
    gpu: Optional[_Text] = None


_Version = Annotated[str, Field(pattern=r"^\d+(\.\d+){0,2}$")]


class _TensorRTTable(BaseModel):
    """The TensorRT a device's JetPack has: bundles for it are typed for that version and refused,
    with what to do, on a TensorRT outside [min, below)."""

    model_config = _Strict
    jetpack: _Text
    min: _Version
    below: Optional[_Version] = None


class ProfileFile(BaseModel):
    """A profile's TOML, as the schema every shipped and user profile must match."""

    model_config = _Strict
    description: str
    backend: str  # a backend's folder name in the registry (evitdeploy.backends)
    precision: str
    precisions: list[str]
    candidates: list[str] = []  # backend folders `deploy --precision auto` measures; must include backend
    options: dict[str, Union[bool, str]] = {}  # options its backend declares (see docs/backends/), checked by the registry
    delegate: Optional[str] = None  # the older spelling of [options] delegate
    int8_kernels: Optional[Literal[cpu.TARGETS]] = None  # the x86 INT8 kernel class its INT8 is for
    notes: list[str] = []
    input: _InputTable = _InputTable()
    bench: _BenchTable = _BenchTable()
    budget: _BudgetTable = _BudgetTable()
    tolerances: dict[str, _TolerancesTable] = {}
    host: _HostTable = _HostTable()
    tensorrt: Optional[_TensorRTTable] = None

    @property
    def given_options(self) -> dict:
        """The backend options the file sets, in either spelling."""
        older = {"nhwc": True} if self.input.nhwc else {}
        older.update({"delegate": self.delegate} if self.delegate is not None else {})
        return {**older, **self.options}

    @property
    def _option_keys(self) -> dict:
        """How the file spelled each option, for its refusals."""
        older = {"nhwc": "[input] nhwc"} if self.input.nhwc else {}
        older.update({"delegate": "delegate"} if self.delegate is not None else {})
        return {**older, **{name: f"[options] {name}" for name in self.options}}

    @model_validator(mode="after")
    def _consistent(self) -> "ProfileFile":
        from evitdeploy.backends import BACKENDS, check_options

        shape = self.input
        known = {b.folder: b for b in BACKENDS.values()}
        backend = known.get(self.backend)
        if backend is None:
            raise ValueError(f"backend {self.backend!r} is not known; use one of: {', '.join(known)}")
        unknown = next((name for name in self.candidates if name not in known), None)
        if unknown is not None:
            raise ValueError(f"candidate {unknown!r} is not a known backend; use one of: {', '.join(known)}")
        if self.candidates and self.backend not in self.candidates:
            raise ValueError(f"backend {self.backend!r} is not among its candidates {self.candidates}; add it to candidates")
        offering = [known[name] for name in dict.fromkeys(self.candidates or [self.backend])]
        for precision in {*self.precisions, *self.tolerances}:
            if not any(precision in b.precisions for b in offering):
                raise ValueError(_not_built(precision, offering))
        if self.precision not in self.precisions:
            raise ValueError(f"precision {self.precision!r} is not in its precisions {self.precisions}; add it to precisions")
        if self.precision not in backend.precisions:  # a plain deploy uses the main backend
            raise ValueError(f"precision {self.precision!r} is not one {self.backend} builds; use {', '.join(backend.precisions)}")
        for candidate in offering:
            if not set(self.precisions) & set(candidate.precisions):
                raise ValueError(
                    f"candidate {candidate.folder!r} builds none of its precisions {self.precisions} (it builds {', '.join(candidate.precisions)}); "
                    "add one of those to precisions, or drop the candidate"
                )
        for label, values in (("min", shape.min), ("max", shape.max)):
            if values and len(values) != len(shape.dynamic):
                raise ValueError(f"[input] {label} has {len(values)} values for {len(shape.dynamic)} dynamic axes; give one value per axis in dynamic")
        for candidate in offering:  # every candidate takes the options: deploy passes them to whichever it uses
            try:
                check_options(candidate, self.given_options, self.precisions, keys=self._option_keys)
            except UserError as exc:
                raise ValueError(f"{exc.message}; {exc.hint}") from None
        if self.int8_kernels is not None and not any(b.x86_int8_kernels for b in offering):
            with_kernels = [b.folder for b in known.values() if b.x86_int8_kernels]
            raise ValueError(f"int8_kernels is for backends whose INT8 runs on x86 integer kernels ({', '.join(with_kernels)}); drop int8_kernels")
        if shape.min and shape.max and any(lo > hi for lo, hi in zip(shape.min, shape.max)):
            raise ValueError(f"[input] min {shape.min} exceeds max {shape.max}; min <= max on every axis")
        return self


def _not_built(precision: str, offering: list) -> str:
    """Why a precision is refused: no backend the profile may use builds it."""
    if len(offering) == 1:
        return f"precision {precision!r} is not one {offering[0].folder} builds; use {', '.join(offering[0].precisions)}"
    built = dict.fromkeys(p for b in offering for p in b.precisions)
    return f"precision {precision!r} is not one any of its candidates ({', '.join(b.folder for b in offering)}) builds; use {', '.join(built)}"


def _bad(source: str, message: str, hint: str = "see `evitdeploy profiles` and the shipped TOML files for the format") -> UserError:
    return UserError(f"profile {source}: {message}", hint)


def _problem(error: dict) -> str:
    """One pydantic error in the profile's own terms: `[bench] threads: input should be ...`."""
    names: list[str] = []
    for part in error["loc"]:
        if isinstance(part, int) and names:
            names[-1] += f"[{part}]"
        elif part != "[key]":
            names.append(str(part))
    where = f"[{'.'.join(names[:-1])}] {names[-1]}" if len(names) > 1 else (names[0] if names else "the top level")
    section = f"[{'.'.join(names[:-1])}]" if len(names) > 1 else "the top level"
    if error["type"] == "extra_forbidden":
        return f"unknown key {names[-1]!r} in {section}"
    if error["type"] == "missing":
        return f"missing required key {names[-1]!r}" + (f" in {section}" if len(names) > 1 else "")
    if error["type"] == "value_error":
        return error["msg"].removeprefix("Value error, ")
    if error["loc"][-1] == "[key]":
        return f"unknown key {error['input']!r} in [{'.'.join(names[:-1])}]"
    if error["type"] == "model_type":
        return f"{'.'.join(names)} must be a table ([{'.'.join(names)}])"
    return f"{where}: {error['msg'][0].lower() + error['msg'][1:]}, got {error['input']!r}"


def parse_profile(text: str, name: str, source: str) -> Profile:
    """A Profile from TOML text; every problem is a UserError naming the key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _bad(source, f"is not valid TOML ({exc})", "fix the syntax") from exc
    try:
        checked = ProfileFile.model_validate(data)
    except ValidationError as exc:
        raise _bad(source, _problem(exc.errors(include_url=False)[0]), "fix the value; the shipped TOML files show the format") from None
    return _flattened(checked, name=name, source=source)


def _flattened(checked: "ProfileFile", **given) -> Profile:
    values = dict(given)
    for item in fields(Profile):
        key = item.metadata["toml"]
        if key is None:
            continue
        value = checked
        for part in key.split("."):
            value = getattr(value, part)
        convert = item.metadata["convert"]
        values[item.name] = convert(value) if convert else value
    return Profile(**values)


def shipped_names() -> list[str]:
    return sorted(path.stem for path in PROFILES_DIR.glob("*.toml"))


def load_profile(name_or_path: str) -> Profile:
    """A shipped profile by name, or a user's TOML file by path."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or (os.path.lexists(path) and not path.is_dir()):
        text = read_input_text(path, "profile file", "pass a UTF-8 TOML file, or a shipped name (see `evitdeploy profiles`)", limit=TEXT_MAX_BYTES)
        return parse_profile(text, path.stem, str(path))
    shipped = PROFILES_DIR / f"{name_or_path}.toml"
    if not shipped.is_file():
        raise UserError(f"unknown profile {name_or_path!r}", f"choose one of: {', '.join(shipped_names())}, or pass a .toml path")
    return parse_profile(shipped.read_text(), name_or_path, f"{name_or_path} (shipped)")


def list_profiles() -> list[dict]:
    """Every shipped profile with whether its backend is built and installed here."""
    profiles = [load_profile(name) for name in shipped_names()]
    return [{**profile.to_dict(), **backend_status(profile)} for profile in profiles]


# ---------------------------------------------------------------------------------------------
# Readiness: is the backend built in this version, installed here, and is this host of that kind?


def backend_status(profile: Profile) -> dict:
    from evitdeploy.backends import get_backend
    from evitdeploy.doctor import installed

    backend = get_backend(profile.backend)
    missing = [p.distribution for p in backend.packages if not installed(p.distribution)]
    return {"built": True, "installed": not missing, "missing_packages": missing, "install": backend.install}


def require_backend(profile: Profile) -> None:
    """Exit 3 with the reason when this profile's backend cannot run here."""
    status = backend_status(profile)
    if not status["installed"]:
        raise UserError(
            f"profile {profile.name} needs {', '.join(status['missing_packages'])}, which is not installed",
            f"install it with: {status['install']}",
            EXIT_BACKEND_UNAVAILABLE,
        )


def host_kind(profile: Profile) -> tuple[bool, str]:
    """Whether this host is a device of the profile's kind, and why: budgets are judged only there."""
    from evitdeploy.device.runtimes import host_matches

    return host_matches(profile.name, profile.host_machines, profile.host_device_model, gpu=profile.host_gpu)
