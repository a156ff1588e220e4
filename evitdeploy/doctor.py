"""Which backends are installed, their versions, and how to install what is missing.

One row per registered backend (evitdeploy.backends) plus the few tools that are not a backend.
Versions come from package metadata, so the doctor never imports a heavy backend.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from importlib import metadata


@dataclass(frozen=True)
class Tool:
    name: str
    packages: tuple[str, ...]  # distribution names; all must be present
    purpose: str
    install: str
    core: bool = False
    predicts_on: str = ""  # backends only: where its runner predicts
    backend: object = None  # backends only: its descriptor


TOOLS = (  # what is not a backend: the reference, sample photos, TensorRT's tooling, signing
    Tool("torch", ("torch",), "reference model and export", install="pip install torch==2.13.0", core=True),
    Tool("sample-photos", ("scikit-image",), "real photos for parity and calibration", install="pip install scikit-image", core=True),
    Tool("polygraphy", ("polygraphy",), "TensorRT tooling", install="pip install 'evitdeploy[tensorrt]'"),
    Tool("signing", ("model-signing",), "signed bundles (deploy --sign-key, verify --public-key)", install="pip install 'evitdeploy[signing]'"),
    Tool("farm", ("ray",), "sweeps over a Ray farm of devices (sweep --executor ray, worker)", install="pip install 'evitdeploy[farm]'"),
)


def _rows() -> list[Tool]:
    from evitdeploy.backends import BACKENDS

    backends = [
        Tool(b.folder, tuple(p.distribution for p in b.packages), b.title, install=b.install, core=not b.extra, predicts_on=b.predicts_on, backend=b)
        for b in BACKENDS.values()
    ]
    return [*TOOLS[:2], *backends, *TOOLS[2:]]


def _version(package: str):
    with contextlib.suppress(metadata.PackageNotFoundError):
        return metadata.version(package)
    return None


def installed(package: str) -> bool:
    return _version(package) is not None


def diagnose() -> dict:
    """JSON-ready: one entry per backend and tool, and whether the core is complete."""
    entries = []
    for row in _rows():
        versions = {p: _version(p) for p in row.packages}
        present = all(versions.values())
        entry = {
            "name": row.name,
            "packages": list(row.packages),
            "purpose": row.purpose,
            "install": row.install,
            "core": row.core,
            "installed": present,
            "versions": versions,
        }
        if row.predicts_on:
            entry["predicts_on"] = row.predicts_on
        if row.backend is not None and row.backend.lists_providers and present:
            from evitdeploy.backends import module

            entry["providers"] = module(row.backend, "runner").available_providers()
        entries.append(entry)
    core_ok = all(e["installed"] for e in entries if e["core"])
    from evitdeploy.device import cpu

    return {"core_ok": core_ok, "backends": entries, "cpu": cpu.describe()}
