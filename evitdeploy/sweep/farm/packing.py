"""Files that travel between farm nodes (an artifact, a checkpoint, a parity image folder) as one
tar in Ray's object store, with its sha256 checked on arrival before anything is unpacked."""

from __future__ import annotations

import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

from evitdeploy.errors import UserError


@dataclass(frozen=True)
class Packed:
    name: str  # the file or folder name it unpacks to
    data: bytes
    sha256: str


def pack(path: Path) -> Packed:
    """A file or a folder (an artifact, a Core ML package) as one uncompressed tar."""
    path = Path(path)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.add(path, arcname=path.name)
    data = buffer.getvalue()
    return Packed(path.name, data, hashlib.sha256(data).hexdigest())


def unpack(packed: Packed, into: Path) -> Path:
    """Check the sha256, then unpack into `into` (tar's "data" filter: no links out, no devices,
    no absolute paths); returns the unpacked path."""
    digest = hashlib.sha256(packed.data).hexdigest()
    if digest != packed.sha256:
        raise UserError(
            f"{packed.name} arrived with sha256 {digest[:12]}…, not the {packed.sha256[:12]}… it left with", "re-run the cell; the transfer was corrupted"
        )
    into = Path(into)
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(packed.data), mode="r") as archive:
        names = {member.name.split("/")[0] for member in archive.getmembers()}
        if names != {packed.name}:
            raise UserError(f"{packed.name}'s archive holds {sorted(names)}", "re-run the cell; the archive is not what the exporting node sent")
        archive.extractall(into, filter="data")
    return into / packed.name
