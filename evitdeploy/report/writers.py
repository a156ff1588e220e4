"""report.md (+ PNG plots beside it) or one self-contained report.html (plots embedded) from merged rows.

Apart from the terminal tables: only these writers touch the filesystem and draw plots (matplotlib).
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Optional

from evitdeploy.errors import UserError
from evitdeploy.report.rows import COLUMNS, DEFAULT_COLUMNS, cell_text, error_lines, shown_columns


def _markdown_table(rows: list[dict], columns: tuple[str, ...]) -> str:
    header = "| " + " | ".join(COLUMNS[c][0] for c in columns) + " |"
    rule = "|" + "|".join("---:" if COLUMNS[c][1] else "---" for c in columns) + "|"
    body = ["| " + " | ".join(cell_text(r, c).replace("|", "\\|") for c in columns) + " |" for r in rows]
    return "\n".join([header, rule, *body])


def _figures(rows: list[dict]) -> dict[str, Optional[bytes]]:
    from evitdeploy import plots

    return {
        "latency-vs-megapixels": plots.latency_vs_megapixels(rows),
        "drift-vs-latency": plots.drift_vs_latency(rows),
        "accuracy-vs-latency": plots.accuracy_vs_latency(rows),
    }


_FIGURE_TITLES = {
    "latency-vs-megapixels": "Latency vs megapixels (log-log; slope 1 = linear in pixels)",
    "drift-vs-latency": "Accuracy drift vs latency (Pareto front per model, resolution and device)",
    "accuracy-vs-latency": "Task metric on your data vs latency (Pareto front per model, resolution and device)",
}


def write_report(rows: list[dict], output: Path, columns: Optional[tuple[str, ...]] = None, title: str = "evitdeploy report") -> list[Path]:
    """report.md (+ PNGs beside it) or one self-contained report.html; returns the files written."""
    from evitdeploy.files import check_output, write_bytes

    columns = shown_columns(rows, columns, DEFAULT_COLUMNS)
    output = Path(output)
    if output.suffix not in (".md", ".html"):
        raise UserError(f"cannot tell the format of {output}", "name the output report.md or report.html")
    if not output.parent.is_dir():
        raise UserError(f"folder {output.parent} does not exist", "create it first or choose another -o")
    check_output(output, "report")
    figures = _figures(rows)
    written = []
    try:
        if output.suffix == ".md":
            parts = [f"# {title}", "", _markdown_table(rows, columns), ""]
            parts += [f"- {error}" for error in error_lines(rows)] + ([""] if error_lines(rows) else [])
            for name, png in figures.items():
                if png is None:
                    parts += [f"_{_FIGURE_TITLES[name]}: no rows with the data it needs._", ""]
                    continue
                image = output.with_name(f"{output.stem}-{name}.png")
                write_bytes(image, png)
                written.append(image)
                parts += [f"## {_FIGURE_TITLES[name]}", "", f"![{name}]({image.name})", ""]
            write_bytes(output, "\n".join(parts).encode())
        else:
            write_bytes(output, _html(rows, columns, figures=figures, title=title).encode())
    except BaseException as exc:
        for image in written:  # a failed report leaves none of its figures behind
            image.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise UserError(f"cannot write {output} ({exc.strerror})", "choose an -o path you can write to") from None
        raise
    return [output, *written]


def _html(rows: list[dict], columns: tuple[str, ...], *, figures: dict, title: str) -> str:
    head = "".join(f"<th>{html.escape(COLUMNS[c][0])}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td class='{'num' if COLUMNS[c][1] else ''}'>{html.escape(cell_text(r, c))}</td>" for c in columns) + "</tr>" for r in rows
    )
    errors = "".join(f"<li>{html.escape(e)}</li>" for e in error_lines(rows))
    images = (f"<ul class='errors'>{errors}</ul>" if errors else "") + "".join(
        f"<h2>{html.escape(_FIGURE_TITLES[name])}</h2>"
        + (f"<img alt='{name}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>" if png else "<p><em>no rows with the data it needs</em></p>")
        for name, png in figures.items()
    )
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;font-size:13px}"
        "th,td{border:1px solid #ccc;padding:4px 8px}th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}"
        "img{max-width:100%;margin:1em 0}ul.errors{color:#a00}"
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style></head>"
        f"<body><h1>{html.escape(title)}</h1><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{images}</body></html>\n"
    )
