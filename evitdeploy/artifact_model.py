"""An artifact's runner(s) as device/pipeline.py's callables: `encode(batch)` and, for a promptable
model, `decode(feed)`; each call timed, the encoder's output checked against the spec's shape.
What `predict` and `eval` run, so both give the answer a bundle's app gets."""

from __future__ import annotations

import time
from typing import Optional

import numpy as np

from evitdeploy.backends import runner_for
from evitdeploy.errors import UserError


class ArtifactModel:
    def __init__(self, artifact, threads: Optional[int]):
        self.spec = artifact.spec
        if self.spec.promptable:
            from evitdeploy.backends.promptable import artifact_models

            models = artifact_models(artifact)
            self.runners = [runner_for(models["encoder"], threads), runner_for(models["decoder"], threads)]
        else:
            self.runners = [runner_for(artifact, threads)]
        self.latency_ms: list[float] = []

    def __enter__(self):
        for runner in self.runners:
            runner.load()
        self.runners[0].check_spec(self.spec)
        return self

    def __exit__(self, *exc) -> None:
        for runner in self.runners:
            runner.close()

    def _timed(self, runner, feed: dict) -> dict:
        started = time.perf_counter()
        outputs = runner.infer(feed)
        self.latency_ms.append((time.perf_counter() - started) * 1e3)
        return outputs

    def encode(self, batch: np.ndarray) -> np.ndarray:
        spec = self.spec
        outputs = self._timed(self.runners[0], {spec.input_name: batch})
        output = np.asarray(outputs.get(spec.output_name, next(iter(outputs.values()))), dtype=np.float32)
        expected = spec.output_shape(spec.input_shape[0], spec.height, spec.width)
        if output.shape != tuple(expected):
            raise UserError(f"the model's output has shape {output.shape}; its spec says {tuple(expected)}", "re-export the artifact")
        return output

    def decode(self, feed: dict) -> dict:
        from evitdeploy.device.prompts import DECODER_INPUTS

        return self._timed(self.runners[1], {name: feed[name] for name in DECODER_INPUTS})
