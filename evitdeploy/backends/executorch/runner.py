"""ExecuTorch's Python runtime (the wheel's XNNPACK delegate and portable kernels) running a .pte.

The invocation lives in this backend's device.py (contiguous inputs, the thread pool), so a
bundle's verify.py runs a .pte exactly as we do. A promptable model's decoder takes a fixed number
of points: a prompt is padded to it here (backends.promptable.fixed_points_feed). A .pte lowered
to the Core ML delegate runs only in an app built with it (iOS/macOS): the pip runtime has no
Core ML backend, and says so (exit 3).
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Optional

import numpy as np

from evitdeploy.backends.executorch import BACKEND
from evitdeploy.backends.executorch.device import delegates_in, executorch_method, executorch_run, input_shapes, missing_delegates
from evitdeploy.backends.runner import Runner, import_runtime
from evitdeploy.device.runtimes import native_stderr_silenced
from evitdeploy.errors import EXIT_BACKEND_UNAVAILABLE, UserError, first_line
from evitdeploy.spec import ModelSpec


@contextlib.contextmanager
def quiet_runtime():
    """ExecuTorch and torchao log noise on import and load (cpuinfo lines, optional CUDA kernels
    torchao cannot load on a CPU build, a pytree deprecation); none of it is an error."""
    with native_stderr_silenced(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def import_executorch(name: str = "executorch.runtime", purpose: str = "its Python runtime runs .pte files"):
    """An ExecuTorch module, imported quietly; missing, the one line that says how to install it."""
    with quiet_runtime():
        return import_runtime(name, f"executorch ({purpose})", BACKEND.install)


def delegates_of(artifact) -> list[str]:
    return delegates_in(artifact.manifest or {})


class ExecuTorchRunner(Runner):
    backend = "executorch"

    def __init__(self, model_path: Path, spec: ModelSpec, threads: Optional[int] = None, delegates: tuple = ()):
        self.model_path = Path(model_path)
        self.spec = spec
        self.threads = threads
        self.delegates = tuple(delegates)
        self.method = None
        self.shapes: list[tuple] = []
        self.decoder_points = None  # a fixed-points prompt decoder's point count; None for an image model

    def load(self) -> None:
        import_executorch()
        if not self.model_path.is_file():
            raise UserError(f"ExecuTorch program not found: {self.model_path}", "pass an artifact folder or a .pte file")
        missing = missing_delegates(self.delegates)
        if missing:
            raise UserError(
                f"this ExecuTorch runtime has no {', '.join(missing)}: the .pte runs only in an app built with that delegate",
                "run it on the device (Core ML: an iOS/macOS app linking ExecuTorch's CoreML backend); here the export checked its program and partition",
                EXIT_BACKEND_UNAVAILABLE,
            )
        try:
            with quiet_runtime():
                self.method = executorch_method(self.model_path, self.threads)
        except (RuntimeError, ValueError) as exc:
            raise UserError(
                f"ExecuTorch cannot load {self.model_path}: {first_line(exc)}",
                "the file is empty, truncated or not a .pte program; re-run `evitdeploy export --target executorch`",
            ) from exc
        self.shapes = input_shapes(self.method)
        if len(self.shapes) > 1:
            from evitdeploy.device.prompts import decoder_input_shapes

            self.decoder_points = int(self.shapes[1][1])
            self.names = list(decoder_input_shapes(self.spec.embedding, self.decoder_points, point_count=True))

    @property
    def providers(self) -> list[str]:
        return [f"ExecuTorch ({', '.join(self.delegates) or 'XnnpackBackend'})"] if self.method else []

    def check_spec(self, spec) -> None:
        if not self.decoder_points and self.shapes and tuple(self.shapes[0]) != tuple(spec.input_shape):
            raise UserError(
                f"{self.model_path.name} takes input {self.shapes[0]}, not {tuple(spec.input_shape)}",
                "a .pte has static shapes: export one per input size, or drop --height/--width/--batch",
            )

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.decoder_points:
            from evitdeploy.backends.promptable import fixed_points_feed
            from evitdeploy.device.prompts import DECODER_OUTPUTS

            fixed = fixed_points_feed(feed, self.decoder_points)
            return dict(zip(DECODER_OUTPUTS, executorch_run(self.method, [fixed[name] for name in self.names], self.threads)))
        return {self.spec.output_name: executorch_run(self.method, [feed[self.spec.input_name]], self.threads)[0]}

    def close(self) -> None:
        self.method = None

    def versions(self) -> dict[str, str]:
        from importlib import metadata

        return {"executorch": metadata.version("executorch")}


def for_artifact(artifact, threads: Optional[int] = None, taking_turns: bool = False) -> ExecuTorchRunner:
    """One process-wide thread pool: runners taking turns set it on every call (device.use_threads)."""
    return ExecuTorchRunner(artifact.model_file, artifact.spec, threads=threads, delegates=delegates_of(artifact))


def cannot_predict_here(artifact) -> Optional[str]:
    try:
        with quiet_runtime():
            missing = missing_delegates(delegates_of(artifact))
    except ImportError:
        return None  # the runner's load says what to install
    if missing:
        return f"this ExecuTorch runtime has no {', '.join(missing)}: parity and latency are measured in an app on the device"
    return None
