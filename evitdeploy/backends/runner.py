"""The one runner contract every backend implements (in the spirit of Polygraphy's runners)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TensorMeta:
    name: str
    shape: tuple  # ints, or strings for dynamic dimensions
    dtype: str


class Runner(ABC):
    """load -> input_metadata / infer (numpy in, numpy out) -> close; usable as a context manager."""

    backend: str = "base"

    @abstractmethod
    def load(self) -> None: ...

    @abstractmethod
    def input_metadata(self) -> list[TensorMeta]: ...

    @abstractmethod
    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def check_spec(self, spec) -> None:
        """Refuse a model file whose inputs/outputs differ from its spec, where the runtime tells."""

    def close(self) -> None:
        """Release the session / model; a closed runner can be loaded again."""

    def versions(self) -> dict[str, str]:
        """Versions of the runtime packages, recorded beside every result."""
        return {}

    def __enter__(self) -> "Runner":
        self.load()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
