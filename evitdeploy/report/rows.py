"""Result JSON -> one row per model x target x precision x resolution x device (the JSON is the source of truth).

Kept apart from rendering: `tables` and `writers` both draw these rows, and this module imports neither.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from evitdeploy.errors import UserError


COLUMNS = {  # name -> (header, digits)
    "model": ("model", None),
    "target": ("target", None),
    "precision": ("precision", None),
    "resolution": ("resolution", None),
    # where the latency was measured: PROFILE@HOST for a sweep cell of a device profile, HOST for
    # other sweep cells, PROFILE alone for a profile's cell that never reached its bench; unknown
    # ("-") for check/bench files and sweep lines older than the `nodes` field
    "device": ("device", None),
    "profile": ("profile", None),
    "megapixels": ("MP", 3),
    "size_mb": ("size MB", 2),
    "parity": ("parity", None),
    "max_abs_error": ("max abs err", 3),
    "cosine_min": ("min cosine", 5),
    "agreement": ("agree", 4),
    "median_ms": ("median ms", 2),
    "p90_ms": ("p90 ms", 2),
    "p99_ms": ("p99 ms", 2),
    "throughput_per_s": ("per s", 1),
    "metric": ("metric", None),  # the eval's headline metric on the user's labelled data (--dataset)
    "accuracy": ("acc %", 2),
    "accuracy_delta": ("Δ pt", 2),  # artifact minus PyTorch FP32, paired on the same images
    "eager_ms": ("eager ms", 2),
    "speedup_vs_torch": ("vs eager", 2),
    "status": ("status", None),
}
DEFAULT_COLUMNS = tuple(c for c in COLUMNS if c not in ("profile", "eager_ms", "speedup_vs_torch"))  # the device names the profile
# fits 160 columns with a device like x86-cpu@ip-10-0-1-23 (p90 and per-second are in the files and --json)
TERMINAL_COLUMNS = tuple(c for c in DEFAULT_COLUMNS if c not in ("megapixels", "cosine_min", "p90_ms", "throughput_per_s", "metric"))
ACCURACY_COLUMNS = ("metric", "accuracy", "accuracy_delta")
REPORTED_KINDS = ("parity", "bench", "sweep-cell", "evaluation")
_RESULT_HINT = "pass JSON written by `check --save` / `bench --save` / `eval --save`, or a `sweep` .jsonl"


def load_results(paths: list[Path]) -> list[dict]:
    """Every result object in the files (.json: one object or a list; .jsonl: one per line),
    each checked against its kind's schema."""
    from evitdeploy import files, schemas
    from evitdeploy.sweep import read_records

    results = []
    for path in map(Path, paths):
        if path.suffix == ".jsonl":
            files.input_file(path, "result file", _RESULT_HINT)  # a missing or unreadable path is one clear error
            found = read_records(path)
        else:
            try:
                data = schemas.parse_json(files.read_input_text(path, "result file", _RESULT_HINT))
            except ValueError as exc:
                raise UserError(f"{path} is not valid JSON ({exc})", _RESULT_HINT) from None
            found = data if isinstance(data, list) else [data]
        for number, item in enumerate(found, 1):
            kind = item.get("kind") if isinstance(item, dict) else type(item).__name__
            if kind not in REPORTED_KINDS:
                raise UserError(f"{path} holds a result of kind {kind!r}, not parity, bench, evaluation or sweep-cell", _RESULT_HINT)
            where = f"{path}" + (f" (result {number})" if len(found) > 1 else "")
            schemas.check_document(item, schemas.RESULT_KINDS[kind], what=f"the {kind} result in {where}", hint=_RESULT_HINT)
        results += found
    if not results:
        named = ", ".join(map(str, paths))
        raise UserError(f"{named} hold{'s' if len(paths) == 1 else ''} 0 results; report needs at least 1", _RESULT_HINT)
    return results


def _shape_fields(shape: list) -> dict:
    batch, _, height, width = shape
    return {"resolution": f"{height}x{width}", "megapixels": batch * height * width / 1e6, "batch": batch}


def _parity_fields(parity: dict) -> dict:
    metrics = parity.get("metrics", {})
    return {
        "parity": "PASS" if parity.get("passed") else "FAIL",
        "max_abs_error": metrics.get("max_abs_error"),
        "cosine_min": metrics.get("cosine_min"),
        "agreement": metrics.get("top1_agreement", metrics.get("pixel_agreement")),
    }


def _bench_fields(bench: dict) -> dict:
    first = bench["results"][0]
    fields = {k: first["stats"][k] for k in ("median_ms", "p90_ms", "p99_ms", "throughput_per_s")}
    if len(bench["results"]) > 1 and "speedup_vs_torch" in bench:
        fields.update(eager_ms=bench["results"][1]["stats"]["median_ms"], speedup_vs_torch=bench["speedup_vs_torch"])
    return fields


def _eval_fields(report: dict) -> dict:
    """The headline metric of an eval (a file, or a sweep cell's `eval`), in percent, and its
    paired delta to PyTorch FP32 in points."""
    from evitdeploy.evaluation.compare import HEADLINE

    metric = next(name for name in HEADLINE.values() if name in report["delta"])
    return {"metric": metric, "accuracy": 100 * report["metrics"][metric]["value"], "accuracy_delta": 100 * report["delta"][metric]["value"]}


def _identity(result: dict) -> dict:
    """model/target/precision/resolution of any result kind (older bench files lack some keys)."""
    if result["kind"] == "sweep-cell":
        cell = result["cell"]
        shape = [1, 3, cell["height"], cell["width"]]
        return {"model": cell["model"], "target": cell["target"], "precision": cell["precision"], **_shape_fields(shape)}
    label = result["results"][0].get("label", "/") if result["kind"] == "bench" else "/"
    target, _, precision = label.partition("/")
    shape = result.get("input_shape") or result["results"][0]["input_shape"]
    return {
        "model": result.get("model", "?"),
        "target": result.get("target") or target,
        "precision": result.get("precision") or precision,
        **_shape_fields(shape),
    }


def _bench_node(result: dict) -> Optional[dict]:
    """Where a sweep cell was timed (absent: never benched, or a line older than `nodes`)."""
    return result.get("nodes", {}).get("bench") if result["kind"] == "sweep-cell" else None


def device_of(result: dict) -> Optional[str]:
    """The device a result's latency is for, as the `device` column shows it (see COLUMNS)."""
    profile = result["cell"].get("profile") if result["kind"] == "sweep-cell" else None
    node = _bench_node(result)
    return "@".join(part for part in (profile, node and node["host"]) if part) or None


def _devices(results: list[dict]) -> list[Optional[str]]:
    """Each result's device. A sweep cell that stopped before its bench takes the device of its
    cell's next benched line (a retry), so the retry replaces the failure's row, not sits beside it."""
    from evitdeploy.sweep.grid import Cell

    devices, retried = [], {}
    for result in reversed(results):
        device = device_of(result)
        if result["kind"] == "sweep-cell":
            cell = Cell.from_dict(result["cell"]).key
            if _bench_node(result) is None:
                device = retried.get(cell, device)
            else:
                retried[cell] = device
        devices.append(device)
    return devices[::-1]


def _where(result: dict) -> dict:
    """A sweep cell's profile and bench node, kept for JSON readers (the `device` column sums them up)."""
    found = {"profile": result["cell"].get("profile"), "bench_node": _bench_node(result)}
    return {name: value for name, value in found.items() if value}


def report_rows(results: list[dict]) -> list[dict]:
    """One row per model x target x precision x resolution x device; later results fill or replace
    fields (a later line of a sweep cell replaces that cell's verdict)."""
    rows: dict[tuple, dict] = {}
    for result, device in zip(results, _devices(results)):
        try:
            ident = {**_identity(result), "device": device}
            key = (ident["model"], ident["target"], ident["precision"], ident["resolution"], ident["batch"], device)
            row = rows.setdefault(key, {**ident, "status": "ok"})
            if result.get("artifact_bytes"):
                row["size_mb"] = result["artifact_bytes"] / 1e6
            if result["kind"] == "parity":
                row.update(_parity_fields(result))
            elif result["kind"] == "bench":
                row.update(_bench_fields(result))
            elif result["kind"] == "evaluation":
                row.update(_eval_fields(result))
            else:
                row.update(_where(result), status=result["status"])
                row.pop("error", None)  # an earlier line's failure, now retried
                if result.get("error"):
                    row["error"] = (f"at {result['stage']}: " if result.get("stage") else "") + result["error"]
                if result.get("parity"):
                    row.update(_parity_fields(result["parity"]))
                if result.get("bench"):
                    row.update(_bench_fields(result["bench"]))
                if result.get("eval"):
                    row.update(_eval_fields(result["eval"]))
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise UserError(f"a {result.get('kind')} result is incomplete ({type(exc).__name__}: {exc})", _RESULT_HINT) from None
    return sorted(rows.values(), key=lambda r: (r["model"], r["target"], r["precision"], r["megapixels"], r["device"] or ""))


def shown_columns(rows: list[dict], columns: Optional[tuple[str, ...]], default: tuple[str, ...]) -> tuple[str, ...]:
    """The chosen columns, else `default` without `device` when no row knows its device."""
    if columns:
        return columns
    hidden = (() if any(r.get("device") for r in rows) else ("device",)) + (() if any(r.get("metric") for r in rows) else ACCURACY_COLUMNS)
    return tuple(c for c in default if c not in hidden)


def parse_columns(text: Optional[str]) -> Optional[tuple[str, ...]]:
    """The chosen columns, or None for each output's default."""
    if not text:
        return None
    columns = tuple(c.strip() for c in text.split(",") if c.strip())
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown or not columns:
        raise UserError(f"unknown column {unknown[0] if unknown else text!r}", f"choose from: {', '.join(COLUMNS)}")
    return columns


def number_text(value, digits: int = 3) -> str:
    """The one number format of every table and report: `digits` decimals, or significant digits
    for the very small and the very large; "-" for a value that is not there."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.{digits}f}"
    return str(value)


def cell_text(row: dict, column: str) -> str:
    """A row's value in `column` as the terminal, Markdown and HTML reports all show it."""
    value = row.get(column)
    digits = COLUMNS[column][1]
    return number_text(float(value), digits) if digits and value is not None else ("-" if value is None else str(value))


def error_lines(rows: list[dict]) -> list[str]:
    """One line per row that failed: where, and why."""
    return [
        f"{r['model']} {r['target']}/{r['precision']} {r['resolution']}" + (f" on {r['device']}" if r.get("device") else "") + f": {r['error']}"
        for r in rows
        if r.get("error")
    ]
