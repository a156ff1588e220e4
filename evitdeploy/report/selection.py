"""The table `deploy --precision auto` prints under the deploy's: every candidate, and why it lost."""

from __future__ import annotations

from rich.table import Table

from evitdeploy.report.rows import number_text
from evitdeploy.report.tables import as_written


def _parity(row: dict) -> str:
    if row["parity"] is None:
        return "-"
    return "[green]pass[/green]" if row["parity"] else "[red]FAIL[/red]"


def selection_table(selection: dict) -> Table:
    """One row per candidate backend x precision, the winner first."""
    winner = selection["winner"]
    chosen = f"{as_written(winner['backend'])}/{as_written(winner['precision'])}" if winner else "[red]none passes[/red]"
    judged = f" within a {selection['max_drop_pt']:g}-pt drop on your data" if selection.get("max_drop_pt") is not None else ""
    table = Table(title=f"--precision auto: {chosen} (fastest by {as_written(selection['statistic'])} latency that passes the tolerances{judged})")
    evaluated = any(row.get("accuracy") for row in selection["candidates"])
    for column in ("", "backend", "precision", f"{selection['statistic']} ms", "parity", *(("acc %", "Δ pt") if evaluated else ()), "why"):
        table.add_column(column, justify="right" if column.endswith((" ms", "%", " pt")) else "left")
    for row in selection["candidates"]:
        accuracy = row.get("accuracy")
        table.add_row(
            "[green]✓[/green]" if row["winner"] else "",
            as_written(row["backend"]),
            as_written(row["precision"]),
            number_text(row["latency_ms"], 3),
            _parity(row),
            *((number_text(100 * accuracy["value"], 2), number_text(-accuracy["drop_pt"], 2)) if accuracy else ("-", "-"))[: 2 if evaluated else 0],
            as_written(row["why"] or ""),
        )
    table.caption = f"measurements: {as_written(selection['results'])}"
    return table
