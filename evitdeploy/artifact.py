"""Artifacts on disk: a folder with the model file(s) and `manifest.json`.

The manifest carries the ModelSpec, precision, sha256 of every file, toolchain versions and the
command line, so that any later step (check, bench, a device) can trust and understand the files
without guessing. Folders are written under a temporary name and renamed into place (files.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import platform
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Optional

from evitdeploy import __version__
from evitdeploy.device.integrity import FORMAT, BundleError, check_integrity, sha256_of
from evitdeploy.errors import UserError
from evitdeploy.spec import ModelSpec

MANIFEST = "manifest.json"
MANIFEST_FORMAT = FORMAT  # one format for artifacts and bundles; verify.py reads the same


@dataclass(frozen=True)
class Artifact:
    folder: Path
    model_file: Path
    target: str
    precision: str
    spec: ModelSpec
    manifest: dict


def package_versions(*names: str) -> dict[str, str]:
    """Installed versions without importing the packages (importing TensorRT & co. is slow)."""
    versions = {"python": platform.python_version(), "evitdeploy": __version__}
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def _package_files(package: Path) -> list[Path]:
    return sorted((p for p in package.rglob("*") if p.is_file()), key=lambda p: p.relative_to(package).as_posix())


def model_size(path: Path) -> int:
    """Bytes of a model, whatever its kind: a file's size, or the total of every file in a package
    folder (a Core ML .mlpackage). The one size every verb and report states."""
    path = Path(path)
    return sum(p.stat().st_size for p in _package_files(path)) if path.is_dir() else path.stat().st_size


def model_sha256(path: Path, recorded: Optional[dict] = None) -> str:
    """A model's identity, whatever its kind: a file's sha256, or for a package folder the sha256
    over its files' relative paths and sha256 in sorted order (content and names decide, not where
    the folder lies). `recorded`: a manifest's "files" (names relative to the model's folder),
    whose sha256 values are used instead of reading the files again (verified when opened)."""
    path = Path(path)
    recorded = recorded or {}

    def file_sha256(file: Path, name: str) -> str:
        entry = recorded.get(name)
        return entry["sha256"] if isinstance(entry, dict) and isinstance(entry.get("sha256"), str) else sha256_of(file)

    if not path.is_dir():
        return file_sha256(path, path.name)
    digest = hashlib.sha256()
    for file in _package_files(path):
        relative = file.relative_to(path).as_posix()
        digest.update(f"{relative}\0{file_sha256(file, f'{path.name}/{relative}')}\n".encode())
    return digest.hexdigest()


def build_manifest(folder: Path, target: str, precision: str, spec: ModelSpec, model_file: str, **sections) -> dict:
    files = {  # every file, those inside a package folder (.mlpackage) by their relative path
        p.relative_to(folder).as_posix(): {"sha256": sha256_of(p), "bytes": p.stat().st_size}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.relative_to(folder).as_posix() != MANIFEST
    }
    return {
        "format": MANIFEST_FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "target": target,
        "precision": precision,
        "model_file": model_file,
        "spec": spec.to_dict(),
        "files": files,
        "command": " ".join(["evitdeploy", *sys.argv[1:]]) if sys.argv and "evitdeploy" in sys.argv[0] else None,
        **sections,
    }


def read_manifest(path: Path, bundle: bool = False) -> dict:
    """An artifact's (or bundle's) manifest.json, checked against its schema before anything reads it."""
    from evitdeploy import schemas

    what, hint = ("bundle manifest", "re-copy the bundle from where it was made") if bundle else ("manifest", "re-run `evitdeploy export`")

    def known_format(found) -> None:
        version = found.get("format") if isinstance(found, dict) else None
        if not isinstance(version, int) or isinstance(version, bool) or version > MANIFEST_FORMAT:
            raise UserError(
                f"{path} has manifest format {version!r}; this evitdeploy reads format {MANIFEST_FORMAT} and older",
                "upgrade evitdeploy, or use the version that wrote it",
            )

    return schemas.load_document(path, schemas.BundleManifest if bundle else schemas.ArtifactManifest, what, hint=hint, first=known_format)


def verify_files(folder: Path, manifest: dict) -> None:
    """Every file the manifest lists exists with its recorded sha256 (the device's check, here)."""
    try:
        check_integrity(folder, manifest)
    except BundleError as exc:
        raise UserError(exc.message, "re-copy the folder, or re-export it") from exc
