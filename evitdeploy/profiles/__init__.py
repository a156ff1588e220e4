"""Deployment profiles: a target device as data (backend, precision, shapes, tolerances, budget).

Profiles ship as TOML beside this module; a user passes their own with `--profile path.toml`.
Every key is validated so a typo is one clear error, not a silently ignored setting.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (JetPack 6)
    import tomli as tomllib

from evitdeploy import limits
from evitdeploy.errors import EXIT_BACKEND_UNAVAILABLE, UserError
from evitdeploy.parity import Tolerances, tolerances_for
from evitdeploy.spec import DYNAMIC_AXES

PROFILES_DIR = Path(__file__).parent


@dataclass(frozen=True)
class Backend:
    target: str  # the exporter target that produces its artifact
    packages: tuple[str, ...]  # what must be installed to run it
    install: str


BACKENDS = {
    "onnxruntime": Backend("onnx", ("onnxruntime",), "pip install onnxruntime"),
    "tensorrt": Backend("trt", ("tensorrt",), "pip install 'evitdeploy[tensorrt]' (on the device: JetPack's TensorRT)"),
    "coreml": Backend("coreml", ("coremltools",), "pip install 'evitdeploy[coreml]'"),
    "tflite": Backend("tflite", ("litert-torch", "ai-edge-litert", "ai-edge-quantizer"), "pip install 'evitdeploy[tflite]'"),
}
PRECISIONS = ("fp32", "fp16", "int8")
STATISTICS = {"median": "median_ms", "p90": "p90_ms", "p99": "p99_ms"}


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    backend: str
    precision: str
    precisions: tuple[str, ...]
    source: str  # the TOML it came from
    notes: tuple[str, ...] = ()
    batch: int = 1
    height: Optional[int] = None  # None: the model's own size
    width: Optional[int] = None
    dynamic: tuple[str, ...] = ()
    nhwc: bool = False  # channels-last model input (TFLite only)
    shape_min: tuple[int, ...] = ()  # per dynamic axis, for engines with optimization profiles
    shape_max: tuple[int, ...] = ()
    threads: Optional[int] = None
    warmup: int = 10
    count: int = 50
    statistic: str = "median"
    latency_ms: Optional[float] = None
    model_budgets: dict = field(default_factory=dict)
    tolerances: dict = field(default_factory=dict)  # precision -> overrides of parity's defaults
    host_machines: tuple[str, ...] = ()
    host_device_model: Optional[str] = None
    host_gpu: Optional[str] = None

    @property
    def target(self) -> str:
        return BACKENDS[self.backend].target

    def budget_for(self, model: str) -> Optional[float]:
        return self.model_budgets.get(model, self.latency_ms)

    def tolerances_for(self, precision: str) -> Tolerances:
        return tolerances_for(precision).override(**self.tolerances.get(precision, {}))

    def to_dict(self) -> dict:
        data = asdict(self)
        data["target"] = self.target
        return data


# ---------------------------------------------------------------------------------------------
# Validation: a schema of (check, what it must be) per key, per section.


def _is_int(minimum: int, maximum: Optional[int] = None) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= minimum and (maximum is None or v <= maximum)


def _positive_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0


def _unit_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1


def _strings(choices: Optional[tuple] = None) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, list) and all(isinstance(s, str) and (choices is None or s in choices) for s in v)


def _ints(v: Any) -> bool:
    return isinstance(v, list) and all(_is_int(1)(n) for n in v)


def _size(v: Any) -> bool:
    return _is_int(32)(v) and v % 32 == 0


_TOLERANCE_KEYS = {
    "max_abs": (_positive_number, "a positive number"),
    "min_cosine": (_unit_number, "a number in [0, 1]"),
    "min_top1": (_unit_number, "a number in [0, 1]"),
    "min_pixel_agreement": (_unit_number, "a number in [0, 1]"),
}
SCHEMA: dict[str, dict[str, tuple[Callable[[Any], bool], str]]] = {
    "": {
        "description": (lambda v: isinstance(v, str), "a string"),
        "backend": (lambda v: v in BACKENDS, f"one of {', '.join(BACKENDS)}"),
        "precision": (lambda v: v in PRECISIONS, f"one of {', '.join(PRECISIONS)}"),
        "precisions": (_strings(PRECISIONS), f"a list of {', '.join(PRECISIONS)}"),
        "notes": (_strings(), "a list of strings"),
    },
    "input": {
        "batch": (_is_int(1, 1024), "an integer from 1 to 1024"),
        "height": (_size, "a multiple of 32"),
        "width": (_size, "a multiple of 32"),
        "dynamic": (_strings(DYNAMIC_AXES), f"a list of {', '.join(DYNAMIC_AXES)}"),
        "nhwc": (lambda v: isinstance(v, bool), "true or false (TFLite: channels-last input)"),
        "min": (_ints, "a list of positive integers, one per dynamic axis"),
        "max": (_ints, "a list of positive integers, one per dynamic axis"),
    },
    "bench": {
        "threads": (_is_int(1, limits.THREADS_MAX), f"an integer >= 1 (at most {limits.THREADS_MAX})"),
        "warmup": (_is_int(0, limits.WARMUP_MAX), f"an integer >= 0 (at most {limits.WARMUP_MAX})"),
        "count": (_is_int(1, limits.COUNT_MAX), f"an integer >= 1 (at most {limits.COUNT_MAX})"),
    },
    "budget": {
        "statistic": (lambda v: v in STATISTICS, f"one of {', '.join(STATISTICS)}"),
        "latency_ms": (_positive_number, "a positive number of milliseconds"),
        "models": (lambda v: isinstance(v, dict) and all(_positive_number(x) for x in v.values()), "a table of model = milliseconds"),
    },
    "tolerances": {p: (lambda v: isinstance(v, dict), "a table") for p in PRECISIONS},
    "host": {
        "machine": (_strings(), "a list of platform.machine() names, e.g. [\"x86_64\"]"),
        "device_model": (lambda v: isinstance(v, str) and v, "a non-empty string"),
        "gpu": (lambda v: isinstance(v, str) and v, "a non-empty string"),
    },
}
REQUIRED = ("description", "backend", "precision", "precisions")


def _bad(source: str, message: str, hint: str = "see `evitdeploy profiles` and the shipped TOML files for the format") -> UserError:
    return UserError(f"profile {source}: {message}", hint)


def _check_section(source: str, section: str, table: dict, keys: dict) -> None:
    where = f"[{section}]" if section else "the top level"
    for key, value in table.items():
        if section == "" and key in SCHEMA and key:
            continue  # a sub-table
        if key not in keys:
            raise _bad(source, f"unknown key {key!r} in {where}", f"known keys there: {', '.join(keys)}")
        check, expected = keys[key]
        if not check(value):
            raise _bad(source, f"{where} {key} must be {expected}, got {value!r}", "fix the value")


def parse_profile(text: str, name: str, source: str) -> Profile:
    """A Profile from TOML text; every problem is a UserError naming the key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _bad(source, f"is not valid TOML ({exc})", "fix the syntax") from exc
    _check_section(source, "", data, SCHEMA[""])
    for section in data:
        if section in SCHEMA and section and not isinstance(data[section], dict):
            raise _bad(source, f"{section} must be a table ([{section}])", "fix the section")
    for section, keys in SCHEMA.items():
        if section:
            _check_section(source, section, data.get(section, {}), keys)
    for precision, table in data.get("tolerances", {}).items():
        _check_section(source, f"tolerances.{precision}", table, _TOLERANCE_KEYS)
    missing = [key for key in REQUIRED if key not in data]
    if missing:
        raise _bad(source, f"missing required key {missing[0]!r}", f"a profile needs {', '.join(REQUIRED)}")
    if data["precision"] not in data["precisions"]:
        raise _bad(source, f"precision {data['precision']!r} is not in its precisions {data['precisions']}", "add it to precisions")
    shape = data.get("input", {})
    dynamic = tuple(shape.get("dynamic", ()))
    shape_min, shape_max = tuple(shape.get("min", ())), tuple(shape.get("max", ()))
    for label, values in (("min", shape_min), ("max", shape_max)):
        if values and len(values) != len(dynamic):
            raise _bad(source, f"[input] {label} has {len(values)} values for {len(dynamic)} dynamic axes", "give one value per axis in dynamic")
    if shape.get("nhwc") and data["backend"] != "tflite":
        raise _bad(source, "[input] nhwc is for the tflite backend", "drop nhwc, or use backend = \"tflite\"")
    if shape_min and shape_max and any(lo > hi for lo, hi in zip(shape_min, shape_max)):
        raise _bad(source, f"[input] min {list(shape_min)} exceeds max {list(shape_max)}", "min <= max on every axis")
    bench, budget, host = data.get("bench", {}), data.get("budget", {}), data.get("host", {})
    return Profile(
        name=name,
        description=data["description"],
        backend=data["backend"],
        precision=data["precision"],
        precisions=tuple(data["precisions"]),
        source=source,
        notes=tuple(data.get("notes", ())),
        batch=shape.get("batch", 1),
        height=shape.get("height"),
        width=shape.get("width"),
        dynamic=dynamic,
        nhwc=shape.get("nhwc", False),
        shape_min=shape_min,
        shape_max=shape_max,
        threads=bench.get("threads"),
        warmup=bench.get("warmup", 10),
        count=bench.get("count", 50),
        statistic=budget.get("statistic", "median"),
        latency_ms=budget.get("latency_ms"),
        model_budgets=dict(budget.get("models", {})),
        tolerances={p: dict(t) for p, t in data.get("tolerances", {}).items()},
        host_machines=tuple(m.lower() for m in host.get("machine", ())),
        host_device_model=host.get("device_model"),
        host_gpu=host.get("gpu"),
    )


def shipped_names() -> list[str]:
    return sorted(path.stem for path in PROFILES_DIR.glob("*.toml"))


def load_profile(name_or_path: str) -> Profile:
    """A shipped profile by name, or a user's TOML file by path."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.is_file():
        if not path.is_file():
            raise UserError(f"profile file not found: {path}", "pass an existing .toml, or a shipped name (see `evitdeploy profiles`)")
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise _bad(str(path), f"cannot be read ({exc})", "pass a UTF-8 TOML file") from exc
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
    from evitdeploy.doctor import installed
    from evitdeploy.exporters import TARGETS

    backend = BACKENDS[profile.backend]
    built = backend.target in TARGETS
    missing = [p for p in backend.packages if not installed(p)]
    return {"built": built, "installed": not missing, "missing_packages": missing, "install": backend.install}


def require_backend(profile: Profile) -> None:
    """Exit 3 with the reason when this profile's backend cannot run here."""
    status = backend_status(profile)
    if not status["built"]:
        raise UserError(
            f"profile {profile.name} needs the {profile.backend} backend, which this version of evitdeploy does not build yet",
            "use an ONNX Runtime profile (x86-cpu, arm64-cpu, raspberry-pi-5) or `evitdeploy profiles` to see what is ready",
            EXIT_BACKEND_UNAVAILABLE,
        )
    if not status["installed"]:
        raise UserError(
            f"profile {profile.name} needs {', '.join(status['missing_packages'])}, which is not installed",
            f"install it with: {status['install']}",
            EXIT_BACKEND_UNAVAILABLE,
        )


def host_kind(profile: Profile) -> tuple[bool, str]:
    """Whether this host is a device of the profile's kind, and why: budgets are judged only there."""
    from evitdeploy.device_verify import host_matches

    return host_matches(profile.name, profile.host_machines, profile.host_device_model, profile.host_gpu)
