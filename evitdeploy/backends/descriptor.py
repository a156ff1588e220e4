"""What evitdeploy knows about a backend, in one frozen record: the registry reads nothing else.

Every module that needs a fact about a target (its file suffix, precisions, the extra that
installs it, what a device must install to verify a bundle, which files a bundle carries) asks
the registry (`evitdeploy.backends`) for this record instead of keeping a table of its own.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Package:
    """A distribution the backend needs on the host, and what it is for (doctor's rows)."""

    distribution: str
    purpose: str


@dataclass(frozen=True)
class Choice:
    """One value an option may take, where it builds fewer precisions than its backend."""

    value: str
    precisions: tuple[str, ...] = ()  # () = every precision of the backend
    title: str = ""  # how a refusal names it ("the Core ML delegate")
    instead: str = ""  # the hint when a precision is refused ("use --target coreml for ...")


@dataclass(frozen=True)
class BackendOption:
    """An export option one backend takes: `--option NAME=VALUE` on the command line (or the
    option's own flag), an `[options]` table in a profile, `backend_options` in a request. The
    registry validates it once (`evitdeploy.backends.check_options`); only the backend reads it."""

    name: str
    help: str
    choices: tuple[Choice, ...] = ()  # the values it takes, the default first; () = a true/false switch
    flag: str = ""  # a command-line flag of its own ("--nhwc"), besides --option NAME=VALUE
    on_by_default: bool = False  # a switch's default

    @property
    def default(self):
        return self.choices[0].value if self.choices else self.on_by_default

    @property
    def spelled(self) -> str:
        """How a refusal on the command line names it."""
        return self.flag or f"--option {self.name}"

    def choice(self, value) -> "Choice | None":
        return next((c for c in self.choices if c.value == value), None)


@dataclass(frozen=True)
class Backend:
    name: str  # the target as the CLI, manifests and bundles spell it ("onnx", "trt")
    folder: str  # its package under evitdeploy/backends/ (also the name profiles use)
    title: str  # one line for --help and doctor
    model_file: str  # the artifact's model file ("model.onnx", "model.xml")
    precisions: tuple[str, ...]
    packages: tuple[Package, ...]  # host distributions, all needed to export and run it here
    install: str  # the one-line install hint, shown whenever a package is missing
    device_runtime: tuple[str, str]  # (import name, pip package) a device needs to run verify.py
    device_imports: tuple[str, ...] = ()  # modules the device runtime brings and device.py uses (ExecuTorch's tensors are torch's)
    aliases: tuple[str, ...] = ()
    extra: str = ""  # the pyproject extra ("" for the core install)
    carried: tuple[str, ...] = ()  # artifact files a bundle carries beside the model (plans, recipes)
    opens_bare: bool = True  # a bare model file (no manifest) can be checked or benchmarked
    version_bound: bool = False  # a serialized engine loads only on the runtime version that built it
    predicts_on: str = "any host"  # where its runner predicts ("macOS", "an NVIDIA GPU with TensorRT")
    consumes: tuple[str, ...] = ()  # other backends' folders it may import (TensorRT and OpenVINO read the ONNX export)
    options: tuple[BackendOption, ...] = ()  # export options of its own (TFLite's nhwc, ExecuTorch's delegate, TensorRT's engine)
    builds_on_device: str = ""  # the switch option that, off, leaves the build to the device: deploy turns it off where the runtime is missing
    gpu_compute_timing: bool = False  # its runner also times GPU compute alone (`gpu_times_ms`), as trtexec does
    lists_providers: bool = False  # its runner module's `available_providers()` lists execution providers (doctor)
    package: str = ""  # the Python package holding its modules [default: evitdeploy.backends.<folder>]
    stock_int8: str = ""  # its stock quantizer run with defaults (`--int8-plan naive`, a baseline); "" = the plan only
    x86_int8_kernels: bool = False  # its INT8 runs on x86 integer kernels whose class decides accuracy (--int8-kernels)
    declined: tuple[tuple[str, str], ...] = ()  # (precision, why it is not built): the refusal says why, not just "unsupported"

    @property
    def suffix(self) -> str:
        return "." + self.model_file.rsplit(".", 1)[1]

    @property
    def modules(self) -> str:
        """Where its export/runner/plan/device modules live."""
        return self.package or f"evitdeploy.backends.{self.folder}"

    def option(self, name: str) -> "BackendOption | None":
        return next((o for o in self.options if o.name == name), None)

    @property
    def names(self) -> tuple[str, ...]:
        """Every spelling that selects it: its name, its folder and its aliases."""
        return tuple(dict.fromkeys((self.name, self.folder, *self.aliases)))
