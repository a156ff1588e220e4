"""The ray executor: every cell's export + check goes to any node with the backend and a CPU (many
at once), its bench to a node of its profile, held alone; results come back as each cell ends.

Ray schedules, moves the artifacts (object store) and notices dead nodes; this module only submits,
waits with a timeout, and turns what comes back (or does not) into one record per cell.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from evitdeploy.errors import EXIT_BACKEND_UNAVAILABLE, UserError
from evitdeploy.sweep.farm import cluster, resources
from evitdeploy.sweep.farm.packing import pack, unpack
from evitdeploy.sweep.farm.tasks import bench_stage, export_stage
from evitdeploy.sweep.grid import Cell, CellSettings
from evitdeploy.sweep.interrupt import sigint_deferred
from evitdeploy.sweep.results import FAILED
from evitdeploy.sweep.stages import fail, new_record

NODE_CHECK_S = 2.0  # how often the live nodes are re-read while waiting


@dataclass
class _Task:
    stage: str  # "export" or "bench"
    cell: Cell
    record: dict
    needs: dict
    artifact: object = None  # the export's second return: the packed artifact's ObjectRef
    extra: dict = field(default_factory=dict)


def _backend(cell: Cell) -> str:
    from evitdeploy.backends import get_backend

    return get_backend(cell.target).folder


def unservable(cells: list[Cell], nodes: list[dict]) -> Optional[str]:
    """What the farm lacks for these cells, as one phrase, or None when every cell can be served."""
    missing: Counter = Counter()
    for cell in cells:
        backend = _backend(cell)
        if not any(resources.satisfiable(resources.export_needs(backend), node["resources"]) for node in nodes):
            missing[f"no node that takes exports has the {backend} backend"] += 1
        elif not any(resources.satisfiable(resources.bench_needs(backend, cell.profile), node["resources"]) for node in nodes):
            missing[f"no node is profile {cell.profile} with {backend}" if cell.profile else f"no node has the {backend} backend"] += 1
    if not missing:
        return None
    return "; ".join(f"{what} ({count} cell{'s' if count > 1 else ''})" for what, count in missing.items())


class FarmExecutor:
    name = "ray"

    def __init__(self, address: Optional[str] = None, *, retries: int = 1, poll_s: float = 0.5):
        self.address = address
        self.retries = retries  # Ray re-runs a task whose node or worker died, on another node that fits
        self.poll_s = poll_s
        self._connected = False

    def prepare(self, cells: list[Cell], profiles: dict) -> None:
        """Join (or start) the cluster and refuse, before any work, a grid it cannot serve."""
        self._connected = True  # close() leaves even a connection that Ctrl-C cut short
        cluster.connect(self.address)
        nodes = cluster.alive_nodes()
        problem = unservable(cells, nodes)
        if problem:
            raise UserError(
                f"the farm cannot serve this grid: {problem}; the farm has {cluster.describe(nodes)}",
                "join a node of that kind (`evitdeploy worker --address HEAD:PORT --profile NAME` on it), or leave those cells out",
                EXIT_BACKEND_UNAVAILABLE,
            )

    def close(self) -> None:
        if self._connected:
            cluster.disconnect()
            self._connected = False

    def run(self, cells: list[Cell], *, artifacts: Path, settings: CellSettings, profiles: dict, on_record: Callable[[dict], None], progress=None) -> None:
        """Exports go out as CPUs free up, never more at once than the farm has CPUs, and none while
        a bench waits for its node: a bench is seconds, an export tens of them, and results should
        stream as cells end rather than after every export of the grid."""
        ray = cluster.import_ray()
        export_remote, bench_remote = ray.remote(export_stage), ray.remote(bench_stage)
        each = {"num_cpus": 1, "max_retries": self.retries}  # Ray re-runs a task whose worker or node died
        inputs = {name: ray.put(pack(Path(value))) for name in ("checkpoint", "data", "calib", "dataset") if (value := getattr(settings, name))}
        export_inputs = {name: ref for name, ref in inputs.items() if name != "dataset"}
        bench_inputs = {name: ref for name, ref in inputs.items() if name in ("checkpoint", "dataset")} if settings.dataset else {}
        waiting = list(cells)  # not yet submitted
        pending: dict = {}
        window = max(1, int(sum(node["resources"].get("CPU", 0) for node in cluster.alive_nodes() if resources.EXPORTS in node["resources"])))
        if progress:
            progress(f"{len(cells)} cell(s) for the farm, up to {window} exports at once ({cluster.describe(cluster.alive_nodes())})")
        try:
            last_check = time.monotonic()
            while waiting or pending:
                stages = Counter(task.stage for task in pending.values())
                while waiting and stages["export"] < window and not stages["bench"]:
                    cell = waiting.pop(0)
                    needs = resources.export_needs(_backend(cell))
                    with sigint_deferred():  # a submitted task is in `pending`, so Ctrl-C cancels it
                        record_ref, artifact_ref = export_remote.options(num_returns=2, resources=needs, name=f"export {cell.name}", **each).remote(
                            new_record(cell, settings, executor="ray"),
                            settings,
                            profile=profiles.get(cell.profile),
                            **export_inputs,
                        )
                        pending[record_ref] = _Task(
                            "export", cell, record=new_record(cell, settings, executor="ray"), needs={**needs, "CPU": 1}, artifact=artifact_ref
                        )
                    stages["export"] += 1
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=self.poll_s)
                for ref in ready:
                    task = pending.pop(ref)
                    record = self._result(ray, ref, task)
                    if task.stage == "export" and record["status"] != FAILED:
                        try:
                            record["artifact"] = self._keep_artifact(ray, task, artifacts)
                            record["parity"]["artifact"] = record["artifact"]  # not the exporting node's temporary folder
                        except Exception as exc:  # the copy for the user; the bench still gets Ray's
                            fail(record, "export", f"the artifact did not arrive intact: {exc}")
                    if task.stage == "export" and record["status"] != FAILED:
                        backend = _backend(task.cell)
                        needs = resources.bench_needs(backend, task.cell.profile)
                        with sigint_deferred():
                            bench_ref = bench_remote.options(resources=needs, name=f"bench {task.cell.name}", **each).remote(
                                record,
                                task.artifact,
                                settings,
                                profile=profiles.get(task.cell.profile),
                                **bench_inputs,
                            )
                            pending[bench_ref] = _Task("bench", task.cell, record=record, needs={**needs, "CPU": 1})
                        if progress:
                            where = f"a node of profile {task.cell.profile}" if task.cell.profile else f"a node with {backend}"
                            progress(f"{task.cell.name}: exported and checked on {record['nodes']['export']['host']}; benching on {where}")
                    else:
                        self._annotate(record)
                        on_record(record)
                if time.monotonic() - last_check >= NODE_CHECK_S:
                    last_check = time.monotonic()
                    self._drop_unservable(ray, pending, on_record)
        except KeyboardInterrupt:
            with sigint_deferred():  # a second Ctrl-C still leaves no task running
                if progress and pending:
                    progress(f"cancelling {len(pending)} farm task(s)")
                for ref in pending:
                    ray.cancel(ref, force=True)
            raise

    @staticmethod
    def _result(ray, ref, task: _Task) -> dict:
        """The stage's record, or the cell failed at that stage with what Ray says happened."""
        try:
            return ray.get(ref)
        except ray.exceptions.RayError as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return fail(dict(task.record), task.stage, f"{type(exc).__name__} on the farm: {reason}")

    @staticmethod
    def _keep_artifact(ray, task: _Task, artifacts: Path) -> str:
        """A copy of the cell's artifact in --artifacts, as a local sweep leaves it (sha256 checked)."""
        folder = Path(artifacts) / task.cell.name
        if folder.exists():
            shutil.rmtree(folder)
        return str(unpack(ray.get(task.artifact), Path(artifacts)))

    @staticmethod
    def _annotate(record: dict) -> None:
        """Each stage's node named with the profiles it advertises (the driver reads those once)."""
        nodes = {node["node_id"]: node for node in cluster.alive_nodes()} if record.get("nodes") else {}
        for where in record.get("nodes", {}).values():
            node = nodes.get(where.get("node_id"))
            if node is not None:
                where["profiles"] = resources.node_profiles(node["resources"])

    @staticmethod
    def _drop_unservable(ray, pending: dict, on_record: Callable[[dict], None]) -> None:
        """A task no live node can take any more (its node died, and no other of its kind is left)
        fails its cell now instead of waiting for ever."""
        nodes = cluster.alive_nodes()
        for ref, task in list(pending.items()):
            if not any(resources.satisfiable(task.needs, node["resources"]) for node in nodes):
                pending.pop(ref)
                ray.cancel(ref, force=True)
                lacking = ", ".join(k for k in task.needs if not any(node["resources"].get(k, 0) >= task.needs[k] for node in nodes))
                on_record(
                    fail(
                        dict(task.record),
                        task.stage,
                        f"no live node offers {lacking or 'what it needs'} any more (a node left or died mid-cell); re-run with --retry-failed once it is back",
                    )
                )
