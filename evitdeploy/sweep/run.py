"""Running a grid: the cells not yet in the results file, by an executor, one line per cell as it ends.

The local executor runs every stage of every cell on this host, one after another (the default,
and what a CI matrix job runs); the farm executor (`sweep.farm`) spreads them over a Ray cluster.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Optional

from evitdeploy.artifact import check_output_path
from evitdeploy.errors import UserError
from evitdeploy.sweep.grid import Cell, CellSettings
from evitdeploy.sweep.interrupt import sigint_deferred, sigint_interrupts
from evitdeploy.sweep.results import FAILED, OK, append_record, latest_cells, read_records
from evitdeploy.sweep.stages import run_cell
from evitdeploy.progress import Progress


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
_HOST_PORT = re.compile(r"[A-Za-z0-9.\-]{1,253}:\d{1,5}")


def make_executor(kind: str = "local", address: Optional[str] = None):
    """`--executor local|ray [--address HOST:PORT|auto]`: without an address, ray starts Ray on this
    machine (one node advertising this host's profiles and backends)."""
    if kind == "local":
        if address is not None:
            raise UserError("--address is for --executor ray", "drop --address, or add --executor ray")
        return LocalExecutor()
    if kind == "ray":
        from evitdeploy.sweep.farm.executor import FarmExecutor

        if address is not None and address != "auto" and not _HOST_PORT.fullmatch(address):
            raise UserError(
                f"--address {address!r} is not HOST:PORT", "pass the head's address, e.g. --address 10.0.0.5:6379, or 'auto' for the cluster running here"
            )
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
    if output.exists() and not output.is_file():
        raise UserError(f"{output} is not a file", "pass a .jsonl path for -o")
    done = latest_cells(read_records(output, repair=True))  # a corrupt results file is refused before anything is made
    check_output_path(output, "results file")
    check_output_path(artifacts, "--artifacts folder")
    if artifacts.exists() and not artifacts.is_dir():
        raise UserError(f"--artifacts {artifacts} is a file, not a folder", "pass a folder for the cell artifacts")
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
            try:
                output.parent.mkdir(parents=True, exist_ok=True)
                output.touch()
                artifacts.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UserError(f"cannot write {output} or {artifacts} ({exc.strerror})", "choose paths you can write to") from exc

            def record_cell(record: dict) -> None:
                with sigint_deferred():  # the line and its progress line whole, then Ctrl-C is heard
                    append_record(output, record)
                    cell = Cell.from_dict(record["cell"])
                    done[cell.key] = record
                    ran.append(cell.name)
                    if progress:
                        progress(f"[{len(ran)}/{len(pending)}] {cell.name}: {cell_outcome(record)}")

            if pending:
                executor.run(pending, artifacts=artifacts, settings=settings, profiles=by_name, on_record=record_cell, progress=progress)
        finally:
            with sigint_deferred():  # a farm driver leaves the cluster whole even on a second Ctrl-C
                executor.close()
    records = [done[cell.key] for cell in cells]
    return {"output": str(output), "artifacts": str(artifacts), "executor": executor.name, "ran": ran, "skipped": skipped, "cells": records}
