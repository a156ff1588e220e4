"""The one runner contract every backend implements (in the spirit of Polygraphy's runners).

Polygraphy's runners also declare input metadata and check each feed against it before inferring;
ours do not: `infer` is what the shared timing loop measures, so it carries no per-call checks, and
a model file is compared with its spec once, after loading (`check_spec`)."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod

import numpy as np

from evitdeploy.errors import BackendUnavailable


def import_runtime(module: str, what: str, install: str):
    """A backend's runtime module; missing, one line naming `what` is missing and how to install it (exit 3)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendUnavailable(what, install) from exc


class Runner(ABC):
    """load -> infer (numpy in, numpy out) -> close; usable as a context manager."""

    backend: str = "base"
    applied_affinities: str = ""  # the CPUs its workers were pinned to when taking turns ("2;3", ONNX Runtime); "" for none

    @abstractmethod
    def load(self) -> None: ...

    @abstractmethod
    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    @property
    def providers(self) -> list[str]:
        """Where inference runs (execution providers, delegate, compute units), recorded beside
        every latency; [] before load or where the runtime does not say."""
        return []

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
