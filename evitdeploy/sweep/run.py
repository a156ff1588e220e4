"""Running a grid: the cells not yet in the results file, by an executor, one line per cell as it ends.

The local executor runs every stage of every cell on this host, one after another (the default,
and what a CI matrix job runs); the farm executor (`sweep.farm`) spreads them over a Ray cluster.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Iterator, Optional

from evitdeploy.files import check_output, file_kept_on_success, folder_kept_on_success
from evitdeploy.errors import UserError
from evitdeploy.sweep.grid import Cell, CellSettings
from evitdeploy.sweep.interrupt import sigint_deferred, sigint_interrupts
from evitdeploy.sweep.results import FAILED, OK, append_record, latest_cells, read_records
from evitdeploy.sweep.stages import run_cell
from evitdeploy.progress import Progress


@contextlib.contextmanager
def _outputs_made(output: Path, artifacts: Path) -> Iterator[None]:
    """The results file and the artifacts folder, made for the run. A run that fails before its
    first record removes what it made; recorded cells stay, for the next run to resume from."""
    with folder_kept_on_success(output.parent), file_kept_on_success(output), folder_kept_on_success(artifacts):
        try:
            output.touch()
        except OSError as exc:
            raise UserError(f"cannot write {output} ({exc.strerror})", "choose a results file you can write to") from None
        yield


class LocalExecutor:
    """Every stage of every cell on this host, in grid order."""

    name = "local"

    def prepare(self, cells: list[Cell], profiles: dict) -> None:
        """Nothing to refuse up front: a backend missing here fails its cells with the reason."""

    def run(
        self, cells: list[Cell], *, artifacts: Path, settings: CellSettings, profiles: dict, on_record: Callable[[dict], None], progress: Progress = None
    ) -> None:
        for cell in cells:
            step = (lambda message, cell=cell: progress(f"{cell.name}: {message}")) if progress else None
            on_record(run_cell(cell, artifacts, settings, profile=profiles.get(cell.profile), progress=step))

    def close(self) -> None:
        pass


EXECUTORS = ("local", "ray")


def make_executor(kind: str = "local", address: Optional[str] = None):
    """`--executor local|ray [--address HOST:PORT|auto]`: without an address, ray starts Ray on this
    machine (one node advertising this host's profiles and backends)."""
    if kind == "local":
        if address is not None:
            raise UserError("--address is for --executor ray", "drop --address, or add --executor ray")
        return LocalExecutor()
    if kind == "ray":
        from evitdeploy.sweep.farm.cluster import check_address
        from evitdeploy.sweep.farm.executor import FarmExecutor

        check_address(address)
        return FarmExecutor(address=address)
    raise UserError(f"unknown executor {kind!r}", f"use one of: {', '.join(EXECUTORS)}")


def cell_outcome(record: dict) -> str:
    """The one-line end of a cell, as progress shows it."""
    return record["status"] + (f" ({record.get('stage')}: {record['error']})" if record["status"] == FAILED else "")


def run_sweep(
    cells: list[Cell],
    output: Path,
    *,
    artifacts: Path,
    settings: CellSettings,
    retry_failed: bool = False,
    progress: Progress = None,
    executor=None,
    profiles: Optional[list] = None,
) -> dict:
    """Run the cells not yet in `output`; returns the grid's records and what was skipped.

    `profiles` are the Profile objects the cells name (their tolerances, threads and, on a farm,
    the nodes that bench them). Everything is checked, and the executor may refuse the grid,
    before the first file is written. Ctrl-C (SIGINT) stops the sweep with KeyboardInterrupt
    wherever it was started from, between two whole records.
    """
    executor = executor or LocalExecutor()
    by_name = {profile.name: profile for profile in profiles or ()}
    unknown = sorted({cell.profile for cell in cells if cell.profile and cell.profile not in by_name})
    if unknown:
        raise UserError(f"cells name profile(s) {', '.join(unknown)} that were not loaded", "pass the profiles the grid was planned with")
    output = Path(output)
    check_output(output, "results file")
    check_output(artifacts, "--artifacts folder", folder=True)
    done = latest_cells(read_records(output, repair=True))  # a corrupt results file is refused before anything is made
    skipped, pending = [], []
    for cell in cells:
        previous = done.get(cell.key)
        if previous is not None and not (retry_failed and previous["status"] != OK):
            skipped.append(cell.name)
            if progress:
                progress(f"{cell.name}: already in {output.name} ({previous['status']}), skipped")
        else:
            pending.append(cell)
    ran = []
    with sigint_interrupts():
        try:
            if progress and pending:  # from here on Ctrl-C stops the sweep cleanly
                progress(f"{len(pending)} cell(s) to run with the {executor.name} executor")
            executor.prepare(pending, by_name)  # a grid the executor cannot serve is refused here, before any file

            def record_cell(record: dict) -> None:
                with sigint_deferred():  # the line and its progress line whole, then Ctrl-C is heard
                    append_record(output, record)
                    cell = Cell.from_dict(record["cell"])
                    done[cell.key] = record
                    ran.append(cell.name)
                    if progress:
                        progress(f"[{len(ran)}/{len(pending)}] {cell.name}: {cell_outcome(record)}")

            with _outputs_made(output, artifacts):
                if pending:
                    executor.run(pending, artifacts=artifacts, settings=settings, profiles=by_name, on_record=record_cell, progress=progress)
        finally:
            with sigint_deferred():  # a farm driver leaves the cluster whole even on a second Ctrl-C
                executor.close()
    records = [done[cell.key] for cell in cells]
    return {"output": str(output), "artifacts": str(artifacts), "executor": executor.name, "ran": ran, "skipped": skipped, "cells": records}
