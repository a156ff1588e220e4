"""The two farm tasks of a cell, as they run on a node: export + check, and bench.

Each works in a private temporary folder on its node and returns plain data (the record, the
packed artifact); Ray carries both. Inputs that are files on the driver (checkpoint, parity images)
arrive packed and are unpacked, sha256-checked, next to the work.
"""

from __future__ import annotations

import dataclasses
import socket
import tempfile
from pathlib import Path
from typing import Optional

from evitdeploy.sweep.farm.packing import Packed, pack, unpack
from evitdeploy.sweep.grid import Cell, CellSettings
from evitdeploy.sweep.results import FAILED
from evitdeploy.sweep.stages import bench, export_and_check, fail


def _node() -> dict:
    import ray

    return {"host": socket.gethostname(), "node_id": ray.get_runtime_context().get_node_id()}


def _local_settings(settings: CellSettings, inputs: dict[str, Optional[Packed]], folder: Path) -> CellSettings:
    """The settings with the driver's checkpoint / data paths replaced by their copies on this node."""
    local = {field: str(unpack(packed, folder / field)) for field, packed in inputs.items() if packed is not None}
    return dataclasses.replace(settings, **local)


def export_stage(
    record: dict,
    settings: CellSettings,
    *,
    checkpoint: Optional[Packed] = None,
    data: Optional[Packed] = None,
    calib: Optional[Packed] = None,
    profile=None,
) -> tuple[dict, Optional[Packed]]:
    """Export and check on this node; returns the record and the packed artifact (None on failure)."""
    record["nodes"]["export"] = _node()
    cell = Cell.from_dict(record["cell"])
    with tempfile.TemporaryDirectory(prefix="evitdeploy-export-") as work:
        try:
            local = _local_settings(settings, {"checkpoint": checkpoint, "data": data, "calib": calib}, Path(work))
        except Exception as exc:  # a corrupted transfer is this cell's failure
            return fail(record, "export", f"inputs did not arrive intact: {exc}"), None
        export_and_check(record, Path(work) / cell.name, local, profile=profile)
        if record["status"] == FAILED:
            return record, None
        return record, pack(Path(work) / cell.name)


def bench_stage(
    record: dict,
    artifact: Packed,
    settings: CellSettings,
    *,
    checkpoint: Optional[Packed] = None,
    dataset: Optional[Packed] = None,
    profile=None,
) -> dict:
    """Unpack (sha256 first) and time the artifact on this node, which the farm gives this task
    alone; with a dataset, evaluate it here too (the reference's checkpoint travels with it)."""
    record["nodes"]["bench"] = _node()
    with tempfile.TemporaryDirectory(prefix="evitdeploy-bench-") as work:
        try:
            folder = unpack(artifact, Path(work) / "artifact")
            local = _local_settings(settings, {"checkpoint": checkpoint, "dataset": dataset}, Path(work))
        except Exception as exc:
            return fail(record, "bench", f"the artifact or the dataset did not arrive intact: {exc}")
        return bench(record, folder, local, profile=profile)
