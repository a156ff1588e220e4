"""Sweeps: export -> check -> bench over a grid of models x targets x precisions x resolutions.

One JSON line per cell, appended (and flushed) as soon as the cell ends, so a killed sweep loses at
most the cell it was in and a re-run resumes by skipping cells already present. A failing cell is
recorded with its stage and error and the sweep goes on. Every cell is independent, so a CI matrix
can run one cell per job and concatenate the .jsonl files for `evitdeploy report`.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

from evitdeploy.artifact import check_output_path
from evitdeploy.errors import UserError
from evitdeploy.schemas import SweepCellResult, check_document, parse_json

SWEEP_SCHEMA = 1
OK, PARITY_FAILED, FAILED = "ok", "parity-failed", "failed"


@dataclass(frozen=True)
class Cell:
    model: str
    target: str
    precision: str
    height: int
    width: int

    @property
    def key(self) -> tuple:
        return (self.model, self.target, self.precision, self.height, self.width)

    @property
    def name(self) -> str:
        return f"{self.model}-{self.target}-{self.precision}-{self.height}x{self.width}"

    @classmethod
    def from_dict(cls, data: dict) -> "Cell":
        return cls(data["model"], data["target"], data["precision"], int(data["height"]), int(data["width"]))


@dataclass(frozen=True)
class CellSettings:
    """What every cell runs with (recorded in each line, so cells stay comparable)."""

    samples: int = 8  # parity inputs
    warmup: int = 10
    count: Optional[int] = None
    min_time_s: float = 0.0
    threads: Optional[int] = None
    data: Optional[str] = None
    seed: int = 0

    def __post_init__(self) -> None:
        from evitdeploy import limits

        limits.check_range("--samples", self.samples, 1, high=limits.SAMPLES_MAX)
        limits.check_timing(self.warmup, self.count, min_time_s=self.min_time_s, threads=self.threads)
        limits.check_seed(self.seed)


def split_list(text: str, what: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise UserError(f"no {what} given", f"pass a comma-separated list of {what}")
    return list(dict.fromkeys(items))


def parse_resolution(text: str) -> tuple[int, int]:
    """'224' -> (224, 224); '1024x2048' -> (1024, 2048) as height x width."""
    parts = text.lower().split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        raise UserError(f"resolution {text!r} is not SIZE or HEIGHTxWIDTH", "e.g. --resolution 224,512x512,1024x2048") from None
    if len(sizes) not in (1, 2) or min(sizes) <= 0:
        raise UserError(f"resolution {text!r} is not SIZE or HEIGHTxWIDTH", "e.g. --resolution 224,512x512,1024x2048")
    return (sizes[0], sizes[-1])


def plan_cells(models: list[str], targets: list[str], precisions: list[str], resolutions: list[str], *, samples: int = 8) -> list[Cell]:
    """The grid, with names and sizes checked up front (a typo should not cost a whole sweep), and
    each size's export and check (with `samples` inputs) against this host's memory.

    Precisions a target does not have yet are not refused here: those cells record the reason.
    """
    from evitdeploy.backends import canonical_target, find, target_names
    from evitdeploy.models import get_spec

    sizes = [parse_resolution(r) for r in resolutions]
    for model in models:
        spec = get_spec(model)
        for height, width in sizes:
            try:
                spec.with_input(None, height, width)
            except UserError as exc:
                raise UserError(exc.message, _resolution_hint(exc.hint, spec), exc.exit_code) from None
            _require_memory(spec.with_input(None, height, width), precisions, samples)
    for target in targets:
        if find(target) is None:
            raise UserError(f"unknown target {target!r}", f"choose from: {target_names()}")
    # aliases ("litert", "tensorrt") under the target's own name: one cell each, and resume keys match
    targets = list(dict.fromkeys(canonical_target(t) for t in targets))
    return [Cell(model=m, target=t, precision=p, height=h, width=w) for m, t, p, (h, w) in itertools.product(models, targets, precisions, sizes)]


def _resolution_hint(hint: str, spec) -> str:
    """A size hint in sweep's terms: --resolution HxW, not export's --height/--width."""
    hint = re.sub(r"--height (\d+) --width (\d+)", r"--resolution \1x\2", hint)
    if "--height" in hint or "--width" in hint:
        multiple = spec.size_multiple
        hint = f"use --resolution HEIGHTxWIDTH with multiples of {multiple}, at least {2 * multiple}"
    return hint


def _require_memory(spec, precisions: list[str], samples: int) -> None:
    from evitdeploy import memory
    from evitdeploy.precision.options import PrecisionOptions

    where = f"{spec.name} at {spec.height}x{spec.width}"
    for precision in dict.fromkeys(p if p in ("fp16", "int8") else "fp32" for p in precisions):
        calib = PrecisionOptions().count_for(spec.height, spec.width) if precision != "fp32" else None
        memory.require_fits(spec, "export", f"the sweep cell {where} ({precision} export)", precision=precision, calib_count=calib)
    memory.require_fits(spec, "check", f"the sweep cell {where} (check on {samples} inputs)", images=samples)


def read_records(path: Path, repair: bool = False) -> list[dict]:
    """Every JSON line of a results file. A trailing half-written line (a killed sweep) is dropped,
    and with `repair` cut from the file; a corrupt line elsewhere is an error naming its number."""
    path = Path(path)
    if not path.exists():
        return []
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = parse_json(line.decode("utf-8"))
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as exc:
            if number == len(lines) and not raw.endswith(b"\n"):  # the unfinished last line
                if repair:
                    os.truncate(path, len(raw) - len(line))
                break
            raise UserError(f"{path} line {number} is not valid JSON ({exc})", "fix or delete that line, or start a new results file") from None
        if record.get("kind") == "sweep-cell":
            check_document(record, SweepCellResult, what=f"{path} line {number}", hint="fix or delete that line, or start a new results file")
        records.append(record)
    return records


def latest_cells(records: list[dict]) -> dict[tuple, dict]:
    """The last record per cell (a retried cell supersedes its earlier line)."""
    cells = {}
    for record in records:
        if record.get("kind") == "sweep-cell":
            cells[Cell.from_dict(record["cell"]).key] = record
    return cells


def _append(path: Path, record: dict) -> None:
    with open(path, "a") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def run_cell(cell: Cell, artifacts: Path, settings: CellSettings, *, progress: Optional[Callable[[str], None]] = None) -> dict:
    """export -> check -> bench for one cell; never raises for a cell's own failure."""
    from evitdeploy import api
    from evitdeploy.artifact import model_size
    from evitdeploy.requests import BenchRequest, CheckRequest, ExportRequest

    record = {
        "kind": "sweep-cell",
        "schema": SWEEP_SCHEMA,
        "cell": {**asdict(cell), "resolution": f"{cell.height}x{cell.width}"},
        "settings": asdict(settings),
        "status": OK,
        "seconds": {},
    }
    folder = artifacts / cell.name
    data = Path(settings.data) if settings.data else None
    stage = "export"
    try:
        started = time.perf_counter()
        request = ExportRequest(
            model=cell.model, target=cell.target, precision=cell.precision, output=folder, height=cell.height, width=cell.width,
            force=True, seed=settings.seed, data=data,
        )
        artifact = api.export_model(request, progress=progress)
        record["seconds"]["export"] = round(time.perf_counter() - started, 3)
        record["artifact"] = str(artifact.folder)
        record["artifact_bytes"] = model_size(artifact.model_file)  # a Core ML .mlpackage is a folder
        stage, started = "check", time.perf_counter()
        parity = api.check_artifact(
            CheckRequest(path=artifact.folder, data=data, samples=settings.samples, threads=settings.threads), progress=progress,
        )
        record["seconds"]["check"] = round(time.perf_counter() - started, 3)
        record["parity"] = parity
        stage, started = "bench", time.perf_counter()
        record["bench"] = api.bench_artifact(
            BenchRequest(
                path=artifact.folder, threads=settings.threads, warmup=settings.warmup, count=settings.count, min_time_s=settings.min_time_s,
            ),
            progress=progress,
        )
        record["seconds"]["bench"] = round(time.perf_counter() - started, 3)
        if not parity["passed"]:
            record["status"] = PARITY_FAILED
            record["error"] = "; ".join(parity["failures"])
    except UserError as exc:
        record.update(status=FAILED, stage=stage, error=str(exc))
    except Exception as exc:  # a bug or a backend crash in one cell must not end the sweep
        record.update(status=FAILED, stage=stage, error=f"{type(exc).__name__}: {exc}")
    return record


def run_sweep(
    cells: list[Cell],
    output: Path,
    *,
    artifacts: Path,
    settings: CellSettings,
    retry_failed: bool = False,
    progress: Optional[Callable[[str], None]] = None,
) -> dict:
    """Run the cells not yet in `output`; returns the grid's records and what was skipped."""
    output = Path(output)
    if output.exists() and not output.is_file():
        raise UserError(f"{output} is not a file", "pass a .jsonl path for -o")
    done = latest_cells(read_records(output, repair=True))  # a corrupt results file is refused before anything is made
    check_output_path(output, "results file")
    check_output_path(artifacts, "--artifacts folder")
    if artifacts.exists() and not artifacts.is_dir():
        raise UserError(f"--artifacts {artifacts} is a file, not a folder", "pass a folder for the cell artifacts")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.touch()
        artifacts.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot write {output} or {artifacts} ({exc.strerror})", "choose paths you can write to") from exc
    skipped, ran = [], []
    for index, cell in enumerate(cells, 1):
        previous = done.get(cell.key)
        if previous is not None and not (retry_failed and previous["status"] != OK):
            skipped.append(cell.name)
            if progress:
                progress(f"[{index}/{len(cells)}] {cell.name}: already in {output.name} ({previous['status']}), skipped")
            continue

        def step(message: str, index=index, cell=cell) -> None:
            if progress:
                progress(f"[{index}/{len(cells)}] {cell.name}: {message}")

        record = run_cell(cell, artifacts, settings, progress=step)
        _append(output, record)
        done[cell.key] = record
        ran.append(cell.name)
        step(record["status"] + (f" ({record.get('stage')}: {record['error']})" if record["status"] == FAILED else ""))
    records = [done[cell.key] for cell in cells]
    return {"output": str(output), "artifacts": str(artifacts), "ran": ran, "skipped": skipped, "cells": records}
