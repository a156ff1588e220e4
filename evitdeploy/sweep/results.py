"""The results file: one JSON line per cell, appended and flushed as each cell ends.

A killed sweep loses at most the cells it was in; a re-run resumes by skipping cells already
present. Every line is checked against the sweep-cell schema where it is read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from evitdeploy.errors import UserError
from evitdeploy.files import JSON_MAX_BYTES, read_input
from evitdeploy.schemas import SweepCellResult, check_document, parse_json
from evitdeploy.sweep.grid import Cell

SWEEP_SCHEMA = 1
OK, PARITY_FAILED, FAILED = "ok", "parity-failed", "failed"


def read_records(path: Path, repair: bool = False) -> list[dict]:
    """Every JSON line of a results file. A trailing half-written line (a killed sweep) is dropped,
    and with `repair` cut from the file; a corrupt line elsewhere is an error naming its number."""
    path = Path(path)
    if not os.path.lexists(path):
        return []
    raw = read_input(path, "results file", "pass a .jsonl path for -o", limit=JSON_MAX_BYTES)
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


def append_record(path: Path, record: dict) -> None:
    with open(path, "a") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
