"""Every verb's Rich terminal tables, together so they share one escaping (`as_written`) and
number format (`rows.number_text`, which the Markdown and HTML reports use too)."""

from __future__ import annotations

from typing import Optional, get_args

from rich import box
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from evitdeploy.errors import one_line
from evitdeploy.report.rows import COLUMNS, TERMINAL_COLUMNS, cell_text, error_lines, number_text, shown_columns
from evitdeploy.schemas import Precision

PRECISION_ORDER = get_args(Precision)  # columns of the precisions a plan holds, widest first


def as_written(value) -> str:
    """User-supplied text (names, paths, messages from files) for a Rich title, caption or cell:
    escaped, so `[/]` or `[bold]` in a model name or a path prints as written, on one line."""
    return escape(one_line(value))


def models_table(models: list[dict]) -> Table:
    table = Table(title="EfficientViT models")
    for column in ("name", "task", "dataset", "classes", "input", "description"):
        table.add_column(column)
    for row in models:
        table.add_row(*(str(row[c]) for c in ("name", "task", "dataset", "classes", "input", "description")))
    return table


def parity_table(report: dict) -> Table:
    verdict = "[green]PASS[/green]" if report["passed"] else "[red]FAIL[/red]"
    table = Table(
        title=f"Parity {as_written(report.get('model', ''))} {as_written(report.get('target', ''))}/{as_written(report.get('precision', ''))}: {verdict}"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("tolerance", justify="right")
    tol = report.get("tolerances", {})
    gates = {
        "max_abs_error": ("<=", tol.get("max_abs")),
        "cosine_min": (">=", tol.get("min_cosine")),
        "top1_agreement": (">=", tol.get("min_top1")),
        "pixel_agreement": (">=", tol.get("min_pixel_agreement")),
        "mask_iou_min": (">=", tol.get("min_mask_iou")),
        "iou_prediction_max_error": ("<=", tol.get("max_iou_error")),
        "low_res_cosine_min": (">=", tol.get("min_cosine")),
    }
    for key, value in report.get("metrics", {}).items():
        op, limit = gates.get(key, ("", None))
        table.add_row(as_written(key), as_written(number_text(value, 6)), f"{op} {as_written(number_text(limit, 6))}" if limit is not None else "")
    from evitdeploy.device.cpu import made_for

    kernels = report.get("int8_kernels") or {}
    judged = (
        f"INT8 for {made_for(kernels['target'])}, judged on this CPU's {kernels['this_cpu']} kernels" + (f": {kernels['note']}" if kernels.get("note") else "")
        if kernels
        else ""
    )
    table.caption = (
        f"data: {as_written(report.get('data', ''))}"
        + (f"\npreprocessing: {as_written(report['preprocessing'])}" if report.get("preprocessing") else "")
        + (f"\n{as_written(judged)}" if judged else "")
        + "".join(f"\n[red]{as_written(f)}[/red]" for f in report.get("failures", []))
    )
    return table


def _agreement(scores: dict) -> str:
    value = scores.get("top1_agreement", scores.get("pixel_agreement"))
    return number_text(value, 4)


def _precision_rank(precision: str) -> tuple:
    return (PRECISION_ORDER.index(precision) if precision in PRECISION_ORDER else len(PRECISION_ORDER), precision)


def plan_table(plan: dict) -> list[Table]:
    """The plan per block, then (INT8) the sensitivity ranking and the search's steps."""
    precisions = sorted(plan["summary"]["nodes"], key=_precision_rank)  # every precision the plan holds, bf16 too
    calibration = plan.get("calibration", {})
    groups = Table(
        title=f"Precision plan {plan['model']} {plan['precision']} at {'x'.join(map(str, plan['input_shape'][2:]))} "
        f"({calibration.get('count', '?')} calibration images, {plan['method']})",
        box=box.SIMPLE_HEAD,
    )
    groups.add_column("block")
    for precision in precisions:
        groups.add_column(precision, justify="right")
    groups.add_column("why FP32")
    for group in plan["groups"]:
        groups.add_row(group["group"], *(str(group["counts"].get(p, "")) for p in precisions), "; ".join(group["reasons"]))
    tables = [groups]
    if plan.get("sensitivity"):
        ranking = Table(title="Sensitivity: each block reduced alone, held-out images vs FP32 (most harmful first)", box=box.SIMPLE_HEAD)
        for column in ("rank", "block", "1 - cosine", "min cosine", "agreement"):
            ranking.add_column(column, justify="right" if column != "block" else "left")
        for rank, entry in enumerate(plan["sensitivity"], 1):
            ranking.add_row(str(rank), entry["group"], number_text(entry["error"]), number_text(entry["cosine_min"], 6), _agreement(entry))
        tables.append(ranking)
    search = plan.get("search")
    if search:
        target = search.get("target") or f"min cosine {search['target_min_cosine']}"
        steps = Table(
            title=f"Search: target {as_written(target)}, budget {search['budget_blocks']} blocks: {search['stopped']} ({search['seconds']} s)",
            box=box.SIMPLE_HEAD,
        )
        by_task = any("task_drop_pt" in step for step in search["steps"])
        for column in ("step", "blocks in FP32", "min cosine", "mean cosine", "agreement", "NaN/Inf", *(("task metric %", "drop pt") if by_task else ())):
            steps.add_column(column, justify="right" if column != "blocks in FP32" else "left")
        for index, step in enumerate(search["steps"]):
            steps.add_row(
                str(index),
                ", ".join(step["float_groups"]) or "(rules only)",
                number_text(step["cosine_min"], 6),
                number_text(step["cosine_mean"], 6),
                _agreement(step),
                str(step["nonfinite"]),
                *((number_text(100 * step["task_metric"], 2), number_text(step["task_drop_pt"], 2)) if by_task else ()),
            )
        tables.append(steps)
    numerics = plan.get("torch_fp16")
    if numerics:
        fp16 = Table(title=f"FP16 in PyTorch on {numerics['device']} vs FP32 ({numerics['data']})", box=box.SIMPLE_HEAD)
        for column in ("FP16", "NaN/Inf", "min cosine", "max abs error", "agreement", "FP16 tolerances"):
            fp16.add_column(column, justify="right" if column != "FP16" else "left")
        for label, title in (("plain", "plain (every op FP16)"), ("plan", "the plan")):
            m = numerics[label]
            fp16.add_row(
                title, str(m["nonfinite_outputs"]), number_text(m["cosine_min"], 6), number_text(m["max_abs_error"]), _agreement(m), _verdict(m["passed"])
            )
        tables.append(fp16)
    return tables


def bench_table(summary: dict) -> Table:
    host = summary.get("host", {})
    table = Table(title=f"Latency {as_written(summary.get('model', ''))} ({as_written(host.get('threads'))} threads, {as_written(host.get('cpu', ''))})")
    for column in ("run", "input", "median ms", "p90 ms", "p99 ms", "mean ms", "std ms", "ms/MP", "per s", "n"):
        table.add_column(column, justify="right" if column not in ("run", "input") else "left")
    for result in summary.get("results", []):
        s = result["stats"]
        table.add_row(
            as_written(result["label"]),
            "x".join(map(str, result["input_shape"])),
            *(number_text(s[k], 4) for k in ("median_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms")),
            number_text(result["ms_per_megapixel"], 4),
            number_text(s["throughput_per_s"], 4),
            str(s["count"]),
        )
        if "gpu_compute" in result:  # TensorRT: GPU compute time from CUDA events, as trtexec reports it
            g = result["gpu_compute"]
            table.add_row(
                f"{as_written(result['label'])} GPU compute",
                "",
                *(number_text(g[k], 4) for k in ("median_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms")),
                number_text(result["ms_per_megapixel"] * g["median_ms"] / s["median_ms"], 4),
                number_text(g["throughput_per_s"], 4),
                str(g["count"]),
            )
    if "speedup_vs_torch" in summary:
        table.caption = f"speedup vs PyTorch eager (median): {summary['speedup_vs_torch']:.2f}x"
    return table


def doctor_table(diagnosis: dict) -> Table:
    table = Table(title="evitdeploy doctor")
    for column in ("backend", "status", "versions", "for", "install"):
        table.add_column(column)
    for entry in diagnosis["backends"]:
        status = "[green]ok[/green]" if entry["installed"] else ("[red]MISSING (core)[/red]" if entry["core"] else "[yellow]missing[/yellow]")
        versions = ", ".join(f"{k} {v}" for k, v in entry["versions"].items() if v) or "-"
        if entry.get("providers"):
            versions += "\n" + ", ".join(entry["providers"])
        # escape: Rich would read "evitdeploy[tensorrt]" as a style tag and print "evitdeploy"
        table.add_row(entry["name"], status, escape(versions), escape(entry["purpose"]), "" if entry["installed"] else escape(entry["install"]))
    kernels = diagnosis.get("cpu")
    if kernels:
        table.caption = escape(f"This CPU's INT8 kernels: {kernels['int8_kernels']} ({kernels['meaning']})")
    return table


def profiles_table(profiles: list[dict]) -> Table:
    table = Table(title="Deployment profiles (`--profile NAME`, or your own .toml)")
    for column in ("profile", "backend", "precision", "budget", "ready here", "for"):
        table.add_column(column)
    for p in profiles:
        if not p["built"]:
            ready = "[yellow]not built yet[/yellow]"
        elif not p["installed"]:
            ready = f"[yellow]missing {', '.join(p['missing_packages'])}[/yellow]"
        else:
            ready = "[green]yes[/green]"
        precisions = f"{p['precision']} ({', '.join(p['precisions'])})"
        budget = f"{p['statistic']} {p['latency_ms']} ms" if p["latency_ms"] else "-"
        table.add_row(as_written(p["name"]), as_written(p["backend"]), as_written(precisions), as_written(budget), ready, as_written(p["description"]))
    return table


def _verdict(passed: Optional[bool]) -> str:
    return "-" if passed is None else ("[green]pass[/green]" if passed else "[red]FAIL[/red]")


def deploy_table(summary: dict) -> Table:
    verdict = "[green]PASSED[/green]" if summary["passed"] else "[red]FAILED[/red]"
    table = Table(
        title=f"deploy {as_written(summary['model'])} -> {as_written(summary['profile'])} ({as_written(summary['target'])}/{as_written(summary['precision'])}): {verdict}"
    )
    for column in ("step", "result", "verdict", "s"):
        table.add_column(column, justify="right" if column == "s" else "left")
    seconds, check, budget, latency = summary["seconds"], summary["check"], summary["budget"], summary["latency"]
    metrics, sizes = check["metrics"], summary["sizes"]
    plan = summary.get("precision_plan")
    exported = f"{sizes['model_bytes'] / 1e6:.2f} MB model" + (
        f"; plan {', '.join(f'{n} {p}' for p, n in sorted(plan['nodes'].items()))} nodes" if plan else ""
    )
    table.add_row("export", as_written(exported), "-", number_text(seconds["export"], 3))
    if check.get("skipped"):
        parity = f"not run here: {check['skipped']}; the bundle carries the PyTorch outputs for it"
    elif "prompts" in metrics:  # a promptable model
        parity = (
            f"{metrics['prompts']} prompts vs PyTorch: min mask IoU {metrics['mask_iou_min']:.4f}, IoU-prediction max error "
            f"{metrics['iou_prediction_max_error']:.2g}, min low-res cosine {metrics['low_res_cosine_min']:.6f}"
        )
    else:
        agreement = f"top-1 {metrics['top1_agreement']:.3f}" if "top1_agreement" in metrics else f"pixels {metrics.get('pixel_agreement', 0):.4f}"
        parity = f"{metrics.get('samples')} photos vs PyTorch: min cosine {metrics.get('cosine_min', 0):.6f}, max abs {metrics.get('max_abs_error', 0):.3g}, {agreement}"
    table.add_row("check", as_written(parity), _verdict(check["passed"]), number_text(seconds["check"], 3))
    storage = summary.get("fp16_storage_check")
    if storage:  # FP16 numerics where the FP16 kernels are not here (a TensorRT recipe) or hide overflow (ORT CPU)
        planned, plain = storage["planned"], storage["plain"]
        table.add_row(
            "fp16 storage",
            f"every FP16 write rounded: plan {planned['nonfinite']} NaN/Inf, min cosine {planned['cosine_min']:.6f}; "
            f"plain FP16 {plain['nonfinite']} NaN/Inf, min cosine {plain['cosine_min']:.6f}",
            _verdict(planned["nonfinite"] == 0),
            "-",
        )
    if latency:
        timing = f"median {latency['median_ms']:.3f} ms, p90 {latency['p90_ms']:.3f}, p99 {latency['p99_ms']:.3f} ({latency['count']} runs, {latency['threads']} threads)"
    else:
        timing = "not measured here"
    if budget["latency_ms"] is not None:
        timing += f"; budget {budget['statistic']} {budget['latency_ms']} ms " + ("" if budget["judged"] else f"not judged: {budget['host']}")
    table.add_row("bench", as_written(timing), _verdict(budget["passed"]), number_text(seconds["bench"], 3))
    accuracy = summary.get("accuracy")
    if accuracy:
        if accuracy.get("skipped"):
            text, verdict = f"not evaluated here: {accuracy['skipped']}", "-"
        else:
            text = f"{accuracy['metric']} {100 * accuracy['value']:.2f}% vs FP32 {100 * accuracy['fp32']:.2f}%: {accuracy['said']}"
            verdict = _verdict(None if accuracy["max_drop_pt"] is None else not accuracy["beyond"])
        table.add_row("eval", as_written(text), verdict, number_text(seconds.get("eval"), 3))
    signed = f", signed ({summary['signature']})" if summary.get("signed") else ""
    table.add_row(
        "bundle",
        f"{as_written(summary['bundle'])}: {sizes['files']} files, {sizes['extra_bytes'] / 1e6:.2f} MB beyond the model{signed}",
        "-",
        number_text(seconds["bundle"], 3),
    )
    table.caption = as_written("; ".join(summary["failures"]) if summary["failures"] else f"on the device: {summary['commands']['verify_on_device']}")
    return table


def verification_table(report: dict) -> Table:
    verdict = "[green]PASSED[/green]" if report["passed"] else "[red]FAILED[/red]"
    table = Table(
        title=f"verify {as_written(report['model'])} {as_written(report['target'])}/{as_written(report['precision'])} ({as_written(report['profile'])}): {verdict}"
    )
    table.add_column("what")
    table.add_column("result")
    metrics = report["parity"]["metrics"]
    keys = ("samples", "max_abs_error", "cosine_min", "top1_agreement", "pixel_agreement", "nonfinite_outputs")
    table.add_row("integrity", "every file matches its sha256")
    signature = report.get("signature") or {}
    if signature.get("checked"):
        table.add_row("signature", f"{signature['file']} verified with {escape(signature['public_key'])}: no file changed since signing")
    elif signature.get("signed"):
        table.add_row("signature", f"{signature['file']} present, not checked (no --public-key)")
    table.add_row("parity vs PyTorch", ", ".join(f"{k} {number_text(metrics[k], 6)}" for k in keys if k in metrics))
    if report.get("pipeline"):
        from evitdeploy.device.pipeline_check import summary

        table.add_row("whole pipeline", as_written(summary(report["pipeline"])))
    if (report.get("accuracy") or {}).get("checked"):
        from evitdeploy.device import eval_subset

        table.add_row("accuracy", as_written(eval_subset.summary(report["accuracy"])))
    drift = report["drift_from_making_host"]
    if drift:
        table.add_row("vs making host", f"max abs {number_text(drift.get('max_abs_error'), 3)}, min cosine {number_text(drift.get('cosine_min'), 6)}")
    if report["latency"]:
        latency = report["latency"]
        table.add_row("latency", f"median {latency['median_ms']:.3f} ms, p90 {latency['p90_ms']:.3f}, p99 {latency['p99_ms']:.3f} ({latency['count']} runs)")
    budget = report["budget"]
    if budget.get("latency_ms"):
        table.add_row(
            "budget", as_written(f"{budget['statistic']} <= {budget['latency_ms']} ms: {'judged' if budget['judged'] else 'not judged'} ({budget['host']})")
        )
    runtime = report["runtime"]
    table.add_row("runtime", as_written(", ".join(f"{k} {v}" for k, v in runtime.items() if k != "providers") + f"; {', '.join(runtime['providers'])}"))
    for line in report["warnings"]:
        table.add_row("[yellow]warning[/yellow]", as_written(line))
    for line in report["failures"]:
        table.add_row("[red]failure[/red]", as_written(line))
    return table


def gate_table(report: dict) -> Table:
    styles = {"regression": "[red]REGRESSION[/red]", "improvement": "[green]FASTER[/green]", "no change": "[green]PASS[/green]"}
    new = report["new"]
    table = Table(
        title=f"Latency gate {as_written(new.get('model') or '')} {as_written(new.get('label') or '')}: {styles[report['verdict']]} ({report['mode']})"
    )
    for column in ("side", "artifact", "median ms", "p90 ms", "p99 ms", "std ms", "n"):
        table.add_column(column, justify="left" if column in ("side", "artifact") else "right")
    for name in ("baseline", "new"):
        side, s = report[name], report[name]["stats"]
        table.add_row(name, as_written(side.get("artifact")), *(number_text(s[k], 4) for k in ("median_ms", "p90_ms", "p99_ms", "std_ms")), str(s["count"]))
    low, high = report["ratio_interval"] or (float("nan"), float("nan"))
    notes = [
        as_written(report["reason"]),
        f"median ratio {report['ratio']:.3f} ({report['change_pct']:+.1f}%), {100 * report['confidence']:g}% CI [{low:.3f}, {high:.3f}]; "
        f"Mann-Whitney p(slower)={report['p_slower']:.3g}, p(faster)={report['p_faster']:.3g}",
    ]
    notes += [f"[yellow]mismatch allowed: {as_written(m)}[/yellow]" for m in report.get("mismatches", [])]
    notes += [f"[yellow]note: {as_written(w)}[/yellow]" for w in report.get("warnings", [])]
    table.caption = "\n".join(notes)
    return table


def accuracy_gate_table(report: dict) -> Table:
    """`gate` on two eval results: both sides' headline metric and the paired delta."""
    styles = {"regression": "[red]REGRESSION[/red]", "improvement": "[green]BETTER[/green]", "no change": "[green]PASS[/green]"}
    table = Table(title=f"Accuracy gate {as_written(report['metric'])}: {styles[report['verdict']]}")
    for column in ("side", "artifact", report["metric"]):
        table.add_column(as_written(column), justify="right" if column == report["metric"] else "left")
    for name in ("baseline", "new"):
        table.add_row(name, as_written(report[name]["artifact"]), f"{100 * report[name]['value']:.2f}")
    delta = report["delta"]
    table.caption = (
        f"{as_written(report['reason'])}\nnew minus baseline {100 * delta['value']:+.2f} pt, paired 95% interval "
        f"[{100 * delta['low']:+.2f}, {100 * delta['high']:+.2f}] over {report['matched']} matched"
    )
    return table


def rows_table(rows: list[dict], columns: Optional[tuple[str, ...]] = None) -> Table:
    columns = shown_columns(rows, columns, TERMINAL_COLUMNS)
    table = Table(title="evitdeploy results", box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    for column in columns:
        table.add_column(COLUMNS[column][0], justify="right" if COLUMNS[column][1] else "left", no_wrap=True)
    for row in rows:
        table.add_row(*(Text(cell_text(row, c)) for c in columns))
    table.caption = "\n".join(f"[red]{escape(e)}[/red]" for e in error_lines(rows)) or None
    return table


def _validation_text(metrics: dict) -> str:
    """An export's parity in one phrase, by what kind of metrics it has."""
    if "mask_iou_min" in metrics:  # a promptable model: per prompt and mask
        return (
            f"min mask IoU {metrics['mask_iou_min']:.4f} over {metrics['prompts']} prompts, IoU-prediction max error "
            f"{metrics['iou_prediction_max_error']:.1e}, min low-res cosine {metrics['low_res_cosine_min']:.6f}"
        )
    return f"max abs err {metrics['max_abs_error']:.2e}, min cosine {metrics['cosine_min']:.6f}"


def export_headline(artifact) -> str:
    """`exported PATH (size, opset, input); validation ... vs PyTorch`, Rich markup (paths escaped)."""
    from evitdeploy.artifact import model_size

    manifest = artifact.manifest
    check = manifest["validation"]["checks"][0].get("metrics")
    return (
        f"[green]exported[/green] {as_written(artifact.model_file)} ({model_size(artifact.model_file) / 1e6:.2f} MB, "
        + (f"opset {manifest['export']['opset']}, " if "opset" in manifest["export"] else f"{manifest['export']['exporter']}, ")
        + f"input {'x'.join(map(str, artifact.spec.input_shape))}"
        + (f", dynamic {','.join(artifact.spec.dynamic_axes)}" if artifact.spec.dynamic_axes else "")
        + (
            f"); validation {_validation_text(check)} vs PyTorch"
            if check
            else f"); {as_written(manifest['validation']['checks'][0].get('skipped', 'not run against PyTorch here'))}"
        )
    )


def export_lines(manifest: dict) -> list[str]:
    """The rest of an export's summary, plain text: what the manifest's sections say (a converter's
    package by precision, a delegate's partition, the precision plan, the FP16 storage check)."""
    lines = []
    package = manifest["validation"].get("package")
    package = package.get("encoder", package) if package else None  # a SAM artifact: the encoder's package is the planned one
    if package:
        lines.append(
            f"package: ops by precision {package['ops_by_precision']}; {package['plan_fp32_ops']} ops kept FP32 by the plan; "
            f"{package['compressed_weight_ops']} compressed weight ops"
        )
    for role, part in manifest["export"].get("partition", {}).items():  # a delegate's share of the graph
        outside = ", ".join(f"{op} {n}" for op, n in part["outside_delegate"].items()) or "nothing"
        lines.append(
            f"{role}: {part['delegate']} took {part['delegated_nodes']} ops in {part['delegated_subgraphs']} subgraphs; on portable kernels: {outside}"
        )
    plan = manifest.get("precision_plan")
    if plan and plan.get("naive"):
        lines.append(f"naive INT8, no plan: {plan['naive']}; calibration {manifest['calibration']['count']} images")
    elif plan:
        counts = ", ".join(f"{n} {p}" for p, n in sorted(plan["summary"]["nodes"].items()))
        search = plan.get("search") or {}
        lines.append(
            f"plan: {counts} nodes; calibration {manifest['calibration']['count']} images ({plan['method']})"
            + (f"; search {search['stopped']}, held-out min cosine {search['final']['cosine_min']:.5f}" if search else "")
            + (f", {search['final']['task_drop_pt']:.2f} pt below FP32 on labelled photos" if "task_drop_pt" in search.get("final", {}) else "")
            + (f"; blocks kept FP32: {', '.join(plan['summary']['float_groups'])}" if plan["summary"]["float_groups"] else "")
        )
        storage = plan.get("fp16_storage_check")
        if storage:
            lines.append(
                f"FP16 storage check: planned {storage['planned']['nonfinite']} NaN/Inf (min cosine "
                f"{storage['planned']['cosine_min']:.6f}); plain FP16 would give {storage['plain']['nonfinite']} NaN/Inf"
            )
    missed = [f for check in manifest["validation"]["checks"] for f in check.get("failures") or []]
    if missed:  # only a naive baseline is written with a miss: recorded, not enforced
        lines.append(f"parity vs PyTorch MISSED: {'; '.join(missed)} (recorded, not refused: a naive baseline; `check` fails it)")
    return lines


def evaluation_table(report: dict) -> Table:
    """`eval`: each metric for the artifact and PyTorch FP32 with their 95% intervals, and the delta."""
    dataset = report["dataset"]
    table = Table(
        title=f"eval {as_written(report['model'])} {as_written(report['target'])}/{as_written(report['precision'])} on "
        f"{as_written(dataset['root'])} ({as_written(dataset['layout'])}, {report['images']} of {dataset['of']} images)"
    )
    for column in ("metric", report["target"], "PyTorch FP32", "delta (paired)"):
        table.add_column(as_written(column), justify="left" if column == "metric" else "right")

    def shown(entry: dict, signed: bool = False) -> str:
        sign = "+" if signed else ""
        return f"{100 * entry['value']:{sign}.2f} [{100 * entry['low']:{sign}.2f}, {100 * entry['high']:{sign}.2f}]"

    for name, entry in report["metrics"].items():
        table.add_row(name.replace("_", " ") + " %", shown(entry), shown(report["fp32"][name]), shown(report["delta"][name], signed=True) + " pt")
    table.caption = as_written(
        f"{report['disagreements']} {report['disagreements_of']}; {report['interval']}; {report['images_per_second']} images/s (both models)"
    )
    return table
