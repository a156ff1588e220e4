"""Terminal tables rendered from the JSON results (the JSON is the source of truth)."""

from __future__ import annotations

from rich.table import Table


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.{digits}f}"
    return str(value)


def models_table(models: list[dict]) -> Table:
    table = Table(title="EfficientViT models")
    for column in ("name", "task", "dataset", "classes", "input", "description"):
        table.add_column(column)
    for row in models:
        table.add_row(*(str(row[c]) for c in ("name", "task", "dataset", "classes", "input", "description")))
    return table


def parity_table(report: dict) -> Table:
    verdict = "[green]PASS[/green]" if report["passed"] else "[red]FAIL[/red]"
    table = Table(title=f"Parity {report.get('model', '')} {report.get('target', '')}/{report.get('precision', '')}: {verdict}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("tolerance", justify="right")
    tol = report.get("tolerances", {})
    gates = {
        "max_abs_error": ("<=", tol.get("max_abs")),
        "cosine_min": (">=", tol.get("min_cosine")),
        "top1_agreement": (">=", tol.get("min_top1")),
        "pixel_agreement": (">=", tol.get("min_pixel_agreement")),
    }
    for key, value in report.get("metrics", {}).items():
        op, limit = gates.get(key, ("", None))
        table.add_row(key, _fmt(value, 6), f"{op} {_fmt(limit, 6)}" if limit is not None else "")
    table.caption = f"data: {report.get('data', '')}" + "".join(f"\n[red]{f}[/red]" for f in report.get("failures", []))
    return table


def bench_table(summary: dict) -> Table:
    host = summary.get("host", {})
    table = Table(title=f"Latency {summary.get('model', '')} ({host.get('threads')} threads, {host.get('cpu', '')})")
    for column in ("run", "input", "median ms", "p90 ms", "p99 ms", "mean ms", "std ms", "ms/MP", "per s", "n"):
        table.add_column(column, justify="right" if column not in ("run", "input") else "left")
    for result in summary.get("results", []):
        s = result["stats"]
        table.add_row(
            result["label"],
            "x".join(map(str, result["input_shape"])),
            *(_fmt(s[k], 4) for k in ("median_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms")),
            _fmt(result["ms_per_megapixel"], 4),
            _fmt(s["throughput_per_s"], 4),
            str(s["count"]),
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
        table.add_row(entry["name"], status, versions, entry["purpose"], "" if entry["installed"] else entry["install"])
    return table


def summary_table(results: list[dict]) -> Table:
    """One row per artifact from any mix of parity and bench JSON results."""
    rows: dict[str, dict] = {}
    for result in results:
        row = rows.setdefault(result.get("artifact", "?"), {"model": result.get("model", "")})
        if result.get("kind") == "parity":
            m = result["metrics"]
            row.update(
                target=f"{result['target']}/{result['precision']}",
                parity="PASS" if result["passed"] else "FAIL",
                max_abs=_fmt(m.get("max_abs_error")),
                agreement=_fmt(m.get("top1_agreement", m.get("pixel_agreement"))),
            )
        elif result.get("kind") == "bench":
            first = result["results"][0]
            row.update(median=_fmt(first["stats"]["median_ms"], 4), input="x".join(map(str, first["input_shape"])))
            if len(result["results"]) > 1:
                row.update(eager=_fmt(result["results"][1]["stats"]["median_ms"], 4), speedup=f"{result['speedup_vs_torch']:.2f}x")
    table = Table(title="evitdeploy results")
    columns = ("model", "target", "input", "parity", "max_abs", "agreement", "median", "eager", "speedup")
    headers = ("model", "target", "input", "parity", "max abs err", "top-1/pixel agree", "median ms", "eager ms", "vs eager")
    for header in headers:
        table.add_column(header)
    for row in rows.values():
        table.add_row(*(row.get(c, "-") for c in columns))
    return table


def gate_table(report: dict) -> Table:
    styles = {"regression": "[red]REGRESSION[/red]", "improvement": "[green]FASTER[/green]", "no change": "[green]PASS[/green]"}
    new = report["new"]
    table = Table(title=f"Latency gate {new.get('model') or ''} {new.get('label') or ''}: {styles[report['verdict']]} ({report['mode']})")
    for column in ("side", "artifact", "median ms", "p90 ms", "p99 ms", "std ms", "n"):
        table.add_column(column, justify="left" if column in ("side", "artifact") else "right")
    for name in ("baseline", "new"):
        side, s = report[name], report[name]["stats"]
        table.add_row(name, str(side.get("artifact")), *(_fmt(s[k], 4) for k in ("median_ms", "p90_ms", "p99_ms", "std_ms")), str(s["count"]))
    low, high = report["ratio_interval"] or (float("nan"), float("nan"))
    notes = [
        report["reason"],
        f"median ratio {report['ratio']:.3f} ({report['change_pct']:+.1f}%), {100 * report['confidence']:g}% CI [{low:.3f}, {high:.3f}]; "
        f"Mann-Whitney p(slower)={report['p_slower']:.3g}, p(faster)={report['p_faster']:.3g}",
    ]
    notes += [f"[yellow]mismatch allowed: {m}[/yellow]" for m in report.get("mismatches", [])]
    notes += [f"[yellow]note: {w}[/yellow]" for w in report.get("warnings", [])]
    table.caption = "\n".join(notes)
    return table
