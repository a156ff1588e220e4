"""LiteRT (TFLite) on XNNPACK: the runtime a phone or a Raspberry Pi runs.

The invocation itself (quantized inputs and outputs handled from each tensor's scale and zero
point) lives in this backend's device.py, so a bundle's verify.py runs a .tflite exactly as we do here.
A promptable model's decoder takes its inputs by name and a fixed number of points: a prompt is
padded to it here (backends.promptable.fixed_points_feed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from evitdeploy.backends.tflite.device import tflite_interpreter, tflite_run, tflite_run_named
from evitdeploy.device.runtimes import native_stderr_silenced
from evitdeploy.errors import UserError, first_line
from evitdeploy.backends.runner import Runner, import_runtime
from evitdeploy.spec import ModelSpec

RUNTIME_INSTALL = "pip install 'evitdeploy[litert-runtime]' (the runtime only) or 'evitdeploy[tflite]'"


def import_litert():
    return import_runtime("ai_edge_litert.interpreter", "ai-edge-litert (the LiteRT runtime)", RUNTIME_INSTALL)


class TFLiteRunner(Runner):
    backend = "tflite"

    def __init__(self, model_path: Path, spec: ModelSpec, threads: Optional[int] = None):
        self.model_path = Path(model_path)
        self.spec = spec
        self.threads = threads
        self.interpreter = None
        self.decoder_points = None  # a fixed-points prompt decoder's point count; None for an image model

    def load(self) -> None:
        import_litert()
        if not self.model_path.is_file():
            raise UserError(f"TFLite model not found: {self.model_path}", "pass an artifact folder or a .tflite file")
        try:
            with native_stderr_silenced():  # LiteRT's load-time log lines (why: device.py)
                self.interpreter = tflite_interpreter(self.model_path, self.threads)
        except (ValueError, RuntimeError) as exc:
            first = first_line(exc)
            raise UserError(
                f"LiteRT cannot load {self.model_path}: {first}",
                "the file is empty, truncated or not a .tflite model; re-run `evitdeploy export --target tflite`",
            ) from exc
        named = self.interpreter.get_signature_runner().get_input_details() if self.interpreter.get_signature_list() else {}
        if "point_coords" in named:
            self.decoder_points = int(named["point_coords"]["shape"][1])

    @property
    def providers(self) -> list[str]:
        return ["LiteRT XNNPACK"] if self.interpreter else []

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.decoder_points:
            from evitdeploy.backends.promptable import fixed_points_feed

            return tflite_run_named(self.interpreter, fixed_points_feed(feed, self.decoder_points))
        return {self.spec.output_name: tflite_run(self.interpreter, feed[self.spec.input_name])}

    def close(self) -> None:
        self.interpreter = None

    def versions(self) -> dict[str, str]:
        from importlib import metadata

        return {"ai-edge-litert": metadata.version("ai-edge-litert")}


def for_artifact(artifact, threads: Optional[int] = None, taking_turns: bool = False) -> TFLiteRunner:
    return TFLiteRunner(artifact.model_file, artifact.spec, threads=threads)
