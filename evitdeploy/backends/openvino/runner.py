"""OpenVINO on this host's CPU, compiled with the artifact's recorded settings (device.settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from evitdeploy.backends.openvino import BACKEND
from evitdeploy.backends.openvino.device import compile_ir, describe, settings
from evitdeploy.backends.runner import Runner, import_runtime
from evitdeploy.errors import EXIT_BACKEND_UNAVAILABLE, UserError, first_line
from evitdeploy.spec import ModelSpec


def import_openvino():
    return import_runtime("openvino", "openvino", BACKEND.install)


class OpenVINORunner(Runner):
    backend = "openvino"

    def __init__(self, model_dir: Path, spec: ModelSpec, manifest: Optional[dict] = None, threads: Optional[int] = None):
        self.model_dir = Path(model_dir)
        self.spec = spec
        self.properties = settings(manifest or {}, threads)
        self.request = None

    def load(self) -> None:
        import_openvino()
        try:
            self.request = compile_ir(self.model_dir, self.properties).create_infer_request()
        except ValueError as exc:
            raise UserError(str(exc), "run it on a CPU with BF16, or export --precision fp32/int8 for this one", EXIT_BACKEND_UNAVAILABLE) from None
        except RuntimeError as exc:
            raise UserError(
                f"OpenVINO cannot load {self.model_dir}: {first_line(exc)}",
                "the folder must hold the model.xml + model.bin `evitdeploy export --target openvino` wrote; re-run the export",
            ) from exc

    @property
    def providers(self) -> list[str]:
        return [describe(self.properties)] if self.request else []

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if len(feed) > 1:  # a promptable model's decoder: inputs and outputs by name
            self.request.infer({name: np.ascontiguousarray(value, dtype=np.float32) for name, value in feed.items()})
            return {output.get_any_name(): self.request.get_tensor(output).data.copy() for output in self.request.model_outputs}
        self.request.infer({0: np.ascontiguousarray(feed[self.spec.input_name], dtype=np.float32)})
        return {self.spec.output_name: self.request.get_output_tensor(0).data.copy()}

    def close(self) -> None:
        self.request = None

    def versions(self) -> dict[str, str]:
        from evitdeploy.artifact import package_versions

        import_openvino()
        return {"openvino": package_versions("openvino")["openvino"]}


def for_artifact(artifact, threads: Optional[int] = None, taking_turns: bool = False) -> OpenVINORunner:
    return OpenVINORunner(artifact.model_file, artifact.spec, artifact.manifest, threads=threads)
