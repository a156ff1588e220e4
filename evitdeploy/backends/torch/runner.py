"""PyTorch eager: the reference every artifact is compared against."""

from __future__ import annotations

from typing import Optional

import numpy as np

from evitdeploy.backends.runner import Runner
from evitdeploy.spec import ModelSpec


class TorchRunner(Runner):
    backend = "torch"

    def __init__(self, model, spec: ModelSpec, threads: Optional[int] = None):
        self.model = model
        self.spec = spec
        self.threads = threads
        self._previous_threads: Optional[int] = None

    def load(self) -> None:
        import torch

        self.model.eval()
        if self.threads:
            self._previous_threads = torch.get_num_threads()
            torch.set_num_threads(self.threads)

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        with torch.inference_mode():
            out = self.model(torch.from_numpy(np.ascontiguousarray(feed[self.spec.input_name])))
        return {self.spec.output_name: out.numpy()}

    def close(self) -> None:
        import torch

        if self._previous_threads:
            torch.set_num_threads(self._previous_threads)
            self._previous_threads = None

    def versions(self) -> dict[str, str]:
        import torch

        return {"torch": torch.__version__}


class TorchDecoderRunner(Runner):
    """A promptable model's prompt decoder in PyTorch eager: named inputs in, named outputs out."""

    backend = "torch"

    def __init__(self, decoder):
        self.decoder = decoder

    def load(self) -> None:
        self.decoder.eval()

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        with torch.inference_mode():
            outputs = self.decoder(*(torch.from_numpy(np.ascontiguousarray(feed[name])) for name in self.decoder.input_names))
        if isinstance(outputs, dict):  # a fixed-points decoder names its outputs
            return {name: out.numpy() for name, out in outputs.items()}
        return {name: out.numpy() for name, out in zip(self.decoder.output_names, outputs)}

    def versions(self) -> dict[str, str]:
        import torch

        return {"torch": torch.__version__}
