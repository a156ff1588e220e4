"""Sweeps: export -> check -> bench over a grid of models x targets (or device profiles) x
precisions x resolutions, on this host or fanned out over a Ray farm (`sweep.farm`).

One JSON line per cell, appended (and flushed) as soon as the cell ends, so a killed sweep loses at
most the cells it was in and a re-run resumes by skipping cells already present. A failing cell is
recorded with its stage and error and the sweep goes on. Every cell is independent, so a CI matrix
can run one cell per job and concatenate the .jsonl files for `evitdeploy report`.
"""

from evitdeploy.sweep.grid import Cell, CellSettings, parse_resolution, plan_cells, split_list
from evitdeploy.sweep.results import FAILED, OK, PARITY_FAILED, SWEEP_SCHEMA, latest_cells, read_records
from evitdeploy.sweep.run import EXECUTORS, LocalExecutor, make_executor, run_sweep
from evitdeploy.sweep.stages import run_cell

__all__ = [
    "Cell",
    "CellSettings",
    "EXECUTORS",
    "FAILED",
    "LocalExecutor",
    "OK",
    "PARITY_FAILED",
    "SWEEP_SCHEMA",
    "latest_cells",
    "make_executor",
    "parse_resolution",
    "plan_cells",
    "read_records",
    "run_cell",
    "run_sweep",
    "split_list",
]
