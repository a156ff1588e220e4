"""`deploy --precision auto`: measure every candidate backend x precision a profile offers, deploy
the fastest that passes the profile's tolerances, and say why each other candidate lost.

The candidates run as a sweep (one cell per backend x precision, checked with the profile's
tolerances and benched with its threads), on this host or on a farm node of the profile. Their
results file and artifacts stay in `<output>-candidates/` beside the bundle: the evidence behind
the choice. The winner is then deployed as an ordinary deploy (measured again, into the bundle).
"""

from __future__ import annotations

import math
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Optional

from evitdeploy import memory
from evitdeploy.errors import EXIT_BACKEND_UNAVAILABLE, UserError
from evitdeploy.requests import DeployRequest
from evitdeploy.progress import Progress

NOT_RUN = "not-run"  # a candidate whose backend is not installed here (local executor only)
TOO_INACCURATE = "too-inaccurate"  # passes parity but loses more than --max-drop points on the user's data
RESULTS, ARTIFACTS = "results.jsonl", "artifacts"


def candidates_folder(output: Path) -> Path:
    """Where the candidates' results file and artifacts go: beside the bundle, named after it."""
    return output.parent / f"{output.name}-candidates"


# ---------------------------------------------------------------------------------------------
# The choice: pure, on sweep records.


def candidate_rows(records: list[dict], statistic: str, max_drop: Optional[float] = None) -> list[dict]:
    """One JSON-ready row per measured candidate, the winner (the fastest by `statistic` that
    passes its tolerances, and loses at most `max_drop` points on the user's data) first; every
    other row says why it lost."""
    from evitdeploy.sweep import OK

    rows = [_judge_accuracy(_row(record, statistic), record, max_drop) for record in records]
    passing = [(row, record) for row, record in zip(rows, records) if row["status"] == OK and row["latency_ms"] is not None]
    if passing:
        winner, winner_record = min(passing, key=lambda pair: pair[0]["latency_ms"])
        winner.update(winner=True, why="fastest that passes the tolerances")
        for row, record in passing:
            if row is not winner:
                row.update(_speed_verdict(row, record, winner=winner, winner_record=winner_record))
        for row in rows:  # a candidate lost on accuracy: was it the faster one?
            if row["status"] == TOO_INACCURATE and row["latency_ms"] is not None:
                change = row["latency_ms"] / winner["latency_ms"] - 1
                pace = f"faster by {-100 * change:.0f}%" if change < 0 else f"slower by {100 * change:.0f}% too"
                row["why"] = f"{pace} ({row['latency_ms']:.3g} ms vs {winner['latency_ms']:.3g} ms) but {row['why']}"
    return sorted(rows, key=_rank)


def _judge_accuracy(row: dict, record: dict, max_drop: Optional[float]) -> dict:
    """The candidate's task metric on the user's data (a cell's eval) and its verdict: a passing
    candidate that loses more than `max_drop` points against PyTorch FP32 loses."""
    from evitdeploy.evaluation.compare import accuracy_of
    from evitdeploy.sweep import OK, PARITY_FAILED

    if not record.get("eval"):
        return {**row, "accuracy": None}
    accuracy = accuracy_of(record["eval"], max_drop)
    row = {**row, "accuracy": accuracy}
    if row["status"] == OK and accuracy["beyond"]:
        row.update(status=TOO_INACCURATE, why=accuracy["said"])
    elif row["status"] == PARITY_FAILED and accuracy["beyond"]:
        row["why"] += f"; and {accuracy['said']}"
    return row


def winner_of(rows: list[dict]) -> Optional[dict]:
    return next((row for row in rows if row["winner"]), None)


def _row(record: dict, statistic: str) -> dict:
    from evitdeploy.backends import find
    from evitdeploy.sweep import FAILED, PARITY_FAILED

    cell, bench, parity = record["cell"], record.get("bench"), record.get("parity") or {}
    stats = bench["results"][0]["stats"] if bench else None
    backend = find(cell["target"])
    status = record["status"]
    if status == FAILED:
        why = f"failed at {record.get('stage')}: {record.get('error')}"
    elif status == PARITY_FAILED:
        why = "missed tolerance: " + "; ".join(parity.get("failures") or [record.get("error") or "parity"])
    else:
        why = None  # a passing candidate: filled in once the winner is known
    return {
        "backend": backend.folder if backend else cell["target"],
        "target": cell["target"],
        "precision": cell["precision"],
        "status": status,
        "latency_ms": stats[f"{statistic}_ms"] if stats else None,
        "parity": parity.get("passed"),
        "failures": list(parity.get("failures") or []),
        "metrics": parity.get("metrics") or {},
        "node": ((record.get("nodes") or {}).get("bench") or {}).get("host"),
        "winner": False,
        "slower_pct": None,
        "within_noise": None,
        "why": why,
    }


def not_installed_row(backend, precision: str) -> dict:
    """A candidate not measured because its backend is missing on this host."""
    return {
        "backend": backend.folder,
        "target": backend.name,
        "precision": precision,
        "status": NOT_RUN,
        "latency_ms": None,
        "parity": None,
        "failures": [],
        "metrics": {},
        "node": None,
        "winner": False,
        "slower_pct": None,
        "within_noise": None,
        "why": f"not installed here (install with: {backend.install})",
    }


def _speed_verdict(row: dict, record: dict, *, winner: dict, winner_record: dict) -> dict:
    """How much slower a passing candidate is than the winner, and whether that is beyond noise
    (the latency gate's test on the two sets of raw samples)."""
    from evitdeploy import gate

    slower = row["latency_ms"] / winner["latency_ms"] - 1
    why = f"slower by {100 * slower:.0f}% ({row['latency_ms']:.3g} ms vs {winner['latency_ms']:.3g} ms)"
    mine, theirs = _samples(record), _samples(winner_record)
    if min(len(mine), len(theirs)) < gate.MIN_SAMPLES:
        return {"slower_pct": 100 * slower, "within_noise": None, "why": f"{why}; too few samples to tell from noise"}
    comparison = gate.compare_samples(theirs, mine, interval=False)
    within = comparison["verdict"] != gate.REGRESSION
    noise = f"within noise ({comparison['reason']})" if within else f"beyond noise (p={comparison['p_slower']:.2g})"
    return {"slower_pct": 100 * slower, "within_noise": within, "p_slower": comparison["p_slower"], "why": f"{why}, {noise}"}


def _samples(record: dict) -> list[float]:
    return record["bench"]["results"][0].get("latency_samples_ms") or []


def _rank(row: dict) -> tuple:
    from evitdeploy.sweep import OK, PARITY_FAILED

    order = 0 if row["winner"] else {OK: 1, TOO_INACCURATE: 2, PARITY_FAILED: 2}.get(row["status"], 3)
    return (order, math.inf if row["latency_ms"] is None else row["latency_ms"])


# ---------------------------------------------------------------------------------------------
# The flow: refuse what cannot be measured fairly, measure, choose, deploy the winner.


def deploy_fastest(request: DeployRequest, progress: Progress = None) -> dict:
    """Measure the profile's candidates, deploy the winner (`request` with its precision and
    backend); the deploy summary gains `selection`. With `request.dataset` every candidate is also
    evaluated on it, and with `request.max_drop` one that loses more points than that loses. With
    no passing candidate nothing is deployed and the summary fails, with the table."""
    from evitdeploy.deploy import deploy, require_dataset
    from evitdeploy.profiles import load_profile
    from evitdeploy.precision.options import PrecisionOptions
    from evitdeploy.sweep import CellSettings, make_executor, run_sweep

    model_name, executor = request.model, request.executor or "local"
    if request.backend is not None:
        raise UserError("--backend picks one backend; --precision auto measures every candidate of the profile", "drop --backend, or pass -p PRECISION")
    profile = load_profile(request.profile)
    _require_measurable(profile, request.reduced, request.backend_options)
    require_dataset(request)
    size = _input_size(profile, model_name, height=request.height, width=request.width)
    settings = CellSettings(
        samples=request.samples,
        warmup=profile.warmup,
        count=profile.count,
        data=str(request.data) if request.data else None,
        seed=request.seed,
        checkpoint=str(request.checkpoint) if request.checkpoint else None,
        dataset=str(request.dataset) if request.dataset else None,
        dataset_limit=request.dataset_limit,
        int8_plan=(request.reduced or PrecisionOptions()).int8_plan,
        calib=(request.reduced or PrecisionOptions()).calib,
        max_drop=request.max_drop,
    )
    cells, not_run = _plan(profile, model_name, size, samples=request.samples, local=executor == "local")
    _check_inputs(profile, model_name, size, settings=settings, sign_key=request.sign_key)
    output = Path(request.output or f"{model_name}-{profile.name}-auto")
    folder = _refuse_existing(output, request.force)
    runner = make_executor(executor, request.address)
    if folder.exists():  # forced: measure afresh (a stale results file would be resumed, not re-measured)
        shutil.rmtree(folder)
    measuring = (lambda message: progress(f"candidate {message}")) if progress else None
    sweep = run_sweep(
        cells,
        folder / RESULTS,
        artifacts=folder / ARTIFACTS,
        settings=settings,
        profiles=[profile],
        executor=runner,
        progress=measuring,
    )
    rows = candidate_rows(sweep["cells"], profile.statistic, max_drop=request.max_drop) + not_run
    winner = winner_of(rows)
    selection = {
        "statistic": profile.statistic,
        **({"dataset": str(request.dataset), "max_drop_pt": request.max_drop} if request.dataset else {}),
        "winner": winner,
        "candidates": rows,
        "results": str(folder / RESULTS),
        "artifacts": str(folder / ARTIFACTS),
        "executor": sweep["executor"],
    }
    if winner is None:
        return {
            "kind": "deploy",
            "profile": profile.name,
            "model": model_name,
            "target": None,
            "precision": "auto",
            "bundle": None,
            "passed": False,
            "failures": [
                f"no candidate passes the {profile.name} tolerances"
                + (f" within a {request.max_drop:g}-pt drop" if request.max_drop is not None else "")
                + "; nothing deployed"
            ],
            "selection": selection,
        }
    # the winner's deploy evaluates it again, into its own summary (and --eval-subset into the bundle)
    reduced = request.reduced or PrecisionOptions()
    if winner["precision"] != "int8":  # --int8-plan is the int8 candidates' alone
        reduced = replace(reduced, int8_plan=PrecisionOptions().int8_plan)
    chosen = replace(
        request,
        output=output,
        precision=winner["precision"],
        backend=winner["backend"],
        reduced=reduced,
        executor=None,
        address=None,
    )
    return {**deploy(chosen, progress=progress), "selection": selection}


def _require_measurable(profile, reduced, backend_options) -> None:
    """Refuse what the candidates would not be measured with, so the bundle is what was chosen."""
    from evitdeploy.precision.options import PrecisionOptions

    if backend_options:
        raise UserError("--precision auto measures every candidate with the profile's own options", "drop --option, or put it in the profile's [options]")
    if reduced is not None and replace(reduced, int8_plan=PrecisionOptions().int8_plan, calib=None) != PrecisionOptions():
        raise UserError(
            "--precision auto measures every candidate with the default precision plan (or the naive one: --int8-plan) on your --calib images, so it "
            "takes no --calib-count, --calib-method, --fp16-io, --fp16-margin, --min-cosine-target, --search-budget or --int8-kernels",
            "drop those flags (the profile's int8_kernels applies), or deploy one backend and precision with them (--backend B -p P)",
        )
    if profile.batch != 1 or profile.dynamic:
        raise UserError(
            f"profile {profile.name} asks for batch {profile.batch}"
            + (f" and dynamic {', '.join(profile.dynamic)}" if profile.dynamic else "")
            + "; --precision auto measures its candidates at batch 1 with static shapes",
            "deploy one precision with -p (and --backend B)",
        )


def _input_size(profile, model_name: str, *, height: Optional[int], width: Optional[int]) -> tuple[int, int]:
    """The size deploy would use; a size the model cannot take is refused here, in deploy's terms."""
    from evitdeploy.deploy import input_size
    from evitdeploy.models import get_spec

    size = input_size(profile, model_name, height=height, width=width)  # an unknown model is refused here
    memory.with_input(get_spec(model_name), profile.batch, height=size[0], width=size[1])
    return size


def _check_inputs(profile, model_name: str, size: tuple[int, int], *, settings, sign_key: Optional[Path]) -> None:
    """Refuse, before any candidate runs, what would fail every one of them: weights that do not
    load, parity data that cannot be read, labelled data that does not fit the model, a key that
    cannot sign."""
    from evitdeploy.data import load_inputs_and_sizes
    from evitdeploy.models import build_model, get_spec

    spec = memory.with_input(get_spec(model_name), profile.batch, height=size[0], width=size[1])
    _, spec = build_model(spec, Path(settings.checkpoint) if settings.checkpoint else None, seed=settings.seed)  # the checkpoint's classes
    load_inputs_and_sizes(spec, size, source=Path(settings.data) if settings.data else None, count=settings.samples)
    if settings.dataset:  # its layout and classes against the model, before any candidate runs
        from evitdeploy.labelled.datasets import open_dataset

        open_dataset(Path(settings.dataset), spec, limit=settings.dataset_limit, seed=settings.seed)
    if sign_key is not None:
        from evitdeploy.signing import signature_section

        signature_section(Path(sign_key))


def _plan(profile, model_name: str, size: tuple[int, int], *, samples: int, local: bool) -> tuple[list, list[dict]]:
    """The cells (one per candidate backend x precision it builds, each checked against this
    host's memory) and, on this host, rows for candidates whose backend is not installed."""
    from evitdeploy.backends import get_backend
    from evitdeploy.profiles import backend_status
    from evitdeploy.sweep import plan_cells

    cells, not_run = [], []
    for folder in profile.candidates:
        candidate = replace(profile, backend=folder)
        precisions = list(profile.precisions_for(folder))
        if local and not backend_status(candidate)["installed"]:
            not_run += [not_installed_row(get_backend(folder), precision) for precision in precisions]
            continue
        cells += plan_cells([model_name], [], precisions, resolutions=[f"{size[0]}x{size[1]}"], samples=samples, profiles=[candidate])
    if not cells:
        installs = "; ".join(dict.fromkeys(get_backend(folder).install for folder in profile.candidates))
        raise UserError(f"no candidate backend of profile {profile.name} is installed here", f"install one: {installs}", EXIT_BACKEND_UNAVAILABLE)
    return cells, not_run


def _refuse_existing(output: Path, force: bool) -> Path:
    """The candidates folder beside `output`; an existing bundle or candidates folder is refused
    unless forced. Writes nothing."""
    from evitdeploy.files import prepare_output

    folder = candidates_folder(output)
    prepare_output(output, force)
    prepare_output(folder, force)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is a file, not a folder", "remove it, or choose another --output")
    return folder
