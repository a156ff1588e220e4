"""One cell's work in two stages that may run on different machines: export + check (anywhere the
backend and CPUs are) and bench (only on the device the latency is for).

Each stage fills the cell's record and never raises for the cell's own failure: a failing cell is
recorded with its stage and error, and the sweep goes on.
"""

from __future__ import annotations

import socket
import time
from dataclasses import asdict
from pathlib import Path
from typing import Optional

from evitdeploy.errors import UserError
from evitdeploy.sweep.grid import Cell, CellSettings
from evitdeploy.sweep.results import FAILED, OK, PARITY_FAILED, SWEEP_SCHEMA
from evitdeploy.progress import Progress


def this_host(**extra) -> dict:
    """Where a stage ran, as the record names it."""
    return {"host": socket.gethostname(), **extra}


def new_record(cell: Cell, settings: CellSettings, executor: str = "local") -> dict:
    return {
        "kind": "sweep-cell",
        "schema": SWEEP_SCHEMA,
        "cell": {**asdict(cell), "resolution": f"{cell.height}x{cell.width}"},
        "settings": asdict(settings),
        "executor": executor,
        "status": OK,
        "seconds": {},
        "timeline": {},  # stage -> [start, end] in Unix seconds on the node that ran it
        "nodes": {},  # "export" / "bench" -> where that stage ran
    }


def fail(record: dict, stage: str, error: str) -> dict:
    record.update(status=FAILED, stage=stage, error=error)
    return record


def _failure(exc: Exception) -> str:
    return str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"


def _threads(settings: CellSettings, profile) -> Optional[int]:
    return settings.threads if settings.threads is not None or profile is None else profile.threads


def _reduced(cell: Cell, settings: CellSettings):
    """The cell's calibration and plan: --calib for every reduced precision; for int8, --int8-plan
    and (a searched plan with --dataset and --max-drop, not a SAM encoder's) the task-metric search target."""
    from evitdeploy.models import get_spec
    from evitdeploy.precision.options import PrecisionOptions

    if cell.precision != "int8":
        return PrecisionOptions(calib=settings.calib)
    searched = settings.int8_plan == PrecisionOptions().int8_plan and settings.max_drop is not None and settings.dataset and not get_spec(cell.model).promptable
    return PrecisionOptions(
        calib=settings.calib,
        int8_plan=settings.int8_plan,
        **({"dataset": settings.dataset, "max_drop": settings.max_drop} if searched else {}),
    )


def export_and_check(record: dict, folder: Path, settings: CellSettings, *, profile=None, progress: Progress = None) -> dict:
    """Export the cell's artifact into `folder` and check it against PyTorch (with the profile's
    tolerances for a profile's cell)."""
    from evitdeploy import api
    from evitdeploy.artifact import model_size
    from evitdeploy.backends import get_backend, options_for
    from evitdeploy.requests import CheckRequest, ExportRequest

    cell = Cell.from_dict(record["cell"])
    given = profile.backend_options if profile is not None else options_for(get_backend(cell.target), settings.backend_options)
    data = Path(settings.data) if settings.data else None
    stage = "export"
    try:
        started, wall = time.perf_counter(), time.time()
        request = ExportRequest(
            model=cell.model,
            target=cell.target,
            precision=cell.precision,
            output=folder,
            height=cell.height,
            width=cell.width,
            force=True,
            seed=settings.seed,
            data=data,
            checkpoint=Path(settings.checkpoint) if settings.checkpoint else None,
            backend_options=given,
            reduced=_reduced(cell, settings),
        )
        artifact = api.export_model(request, progress=progress)
        record["seconds"]["export"] = round(time.perf_counter() - started, 3)
        record["artifact"] = str(artifact.folder)
        record["artifact_bytes"] = model_size(artifact.model_file)  # a Core ML .mlpackage is a folder
        stage, started = "check", time.perf_counter()
        tolerances = asdict(profile.tolerances_for(cell.precision)) if profile is not None else None
        record["parity"] = api.check_artifact(
            CheckRequest(path=artifact.folder, data=data, samples=settings.samples, threads=_threads(settings, profile), tolerance_overrides=tolerances),
            progress=progress,
        )
        record["seconds"]["check"] = round(time.perf_counter() - started, 3)
        record["timeline"]["export"] = [wall, time.time()]
    except Exception as exc:  # a bug or a backend crash in one cell must not end the sweep
        record["timeline"]["export"] = [wall, time.time()]
        return fail(record, stage, _failure(exc))
    return record


def bench(record: dict, folder: Path, settings: CellSettings, *, profile=None, progress: Progress = None) -> dict:
    """Time the artifact in `folder` on this host; the cell's verdict (ok / parity-failed) is set here."""
    from evitdeploy import api
    from evitdeploy.requests import BenchRequest

    started, wall = time.perf_counter(), time.time()
    try:
        record["bench"] = api.bench_artifact(
            BenchRequest(path=folder, threads=_threads(settings, profile), warmup=settings.warmup, count=settings.count, min_time_s=settings.min_time_s),
            progress=progress,
        )
    except Exception as exc:  # one cell's crash is that cell's result
        record["timeline"]["bench"] = [wall, time.time()]
        return fail(record, "bench", _failure(exc))
    record["seconds"]["bench"] = round(time.perf_counter() - started, 3)
    record["timeline"]["bench"] = [wall, time.time()]
    parity = record["parity"]
    if not parity["passed"]:
        record["status"] = PARITY_FAILED
        record["error"] = "; ".join(parity["failures"])
    if settings.dataset:
        evaluate(record, folder, settings, profile=profile, progress=progress)
    return record


EVAL_KEPT = ("dataset", "images", "instances", "metrics", "fp32", "delta", "disagreements", "disagreements_of", "interval", "seconds")


def evaluate(record: dict, folder: Path, settings: CellSettings, *, profile=None, progress: Progress = None) -> dict:
    """The artifact's task metric on `settings.dataset`, beside PyTorch FP32's, on the node that
    benched it (an INT8 model's accuracy depends on the integer kernels that run it). The record
    keeps the summary (per-image rows stay with `evitdeploy eval --save`)."""
    from evitdeploy.evaluation.run import evaluate as run_eval
    from evitdeploy.requests import EvalRequest

    started = time.perf_counter()
    try:
        report = run_eval(
            EvalRequest(
                path=folder,
                dataset=Path(settings.dataset),
                limit=settings.dataset_limit,
                seed=settings.seed,
                checkpoint=Path(settings.checkpoint) if settings.checkpoint else None,
                threads=_threads(settings, profile),
            ),
            progress=progress,
        )
    except Exception as exc:  # this cell's failure, not the sweep's
        return fail(record, "eval", _failure(exc))
    record["eval"] = {key: report[key] for key in EVAL_KEPT if key in report}
    record["seconds"]["eval"] = round(time.perf_counter() - started, 3)
    return record


def run_cell(cell: Cell, artifacts: Path, settings: CellSettings, *, profile=None, progress: Progress = None) -> dict:
    """export -> check -> bench for one cell on this host; never raises for a cell's own failure."""
    record = new_record(cell, settings)
    folder = artifacts / cell.name
    record["nodes"]["export"] = this_host()
    export_and_check(record, folder, settings, profile=profile, progress=progress)
    if record["status"] == FAILED:
        return record
    record["nodes"]["bench"] = this_host()
    return bench(record, folder, settings, profile=profile, progress=progress)
