"""The report's figures (matplotlib, headless), drawn from report rows and returned as PNG bytes.

- latency vs megapixels on log-log axes, one line per model and target/precision: linear
  attention promises slope ~1 (cost proportional to pixels); softmax attention would bend to 2.
- accuracy drift vs latency: each artifact's max abs error against PyTorch over its median
  latency, with the Pareto front per model and resolution (nothing both faster and closer).

Rows timed on more than one device (a farm sweep, or several merged) get a line per device too,
named in the legend (and dashed differently on the latency plot): latency is per device.
"""

from __future__ import annotations

import io
from collections import defaultdict

import numpy as np

_MARKERS = {"fp32": "o", "fp16": "s", "int8": "^"}
_DEVICE_LINES = ("-", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)))  # "--" is the slope-1 guide


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on CI machines; must precede pyplot's import
    import matplotlib.pyplot as plt

    return plt


def _plain_numbers(*axis_list) -> None:
    """Log axes ticked at 1, 2, 5 x 10^k and labelled 0.5, 2, 20 (a range may span less than a decade)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    for axis in axis_list:
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axis.set_minor_formatter(NullFormatter())


def _log_log_axes(plt):
    """A figure with log-log axes (set first: setting a scale later resets tick formatting)."""
    figure, axes = plt.subplots(figsize=(7.5, 5))
    axes.set_xscale("log")
    axes.set_yscale("log")
    return figure, axes


def _finish(figure, axes, xlabel: str, ylabel: str, title: str) -> bytes:
    """Labels, grid and legend, then the PNG."""
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    return _png(figure)


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(figure)
    return buffer.getvalue()


def loglog_slope(megapixels: list[float], latency_ms: list[float]) -> float:
    """Least-squares slope of log latency on log megapixels (1 = linear in pixels)."""
    return float(np.polyfit(np.log(megapixels), np.log(latency_ms), 1)[0])


def _device(row: dict) -> str:
    return row.get("device") or "unknown device"


def _told_apart(rows: list[dict]) -> list[str]:
    """The rows' devices when there is more than one (each then gets its own lines), else none."""
    devices = sorted({_device(row) for row in rows})
    return devices if len(devices) > 1 else []


def latency_vs_megapixels(rows: list[dict]) -> bytes | None:
    """None when no row has both a latency and a resolution."""
    usable = [r for r in rows if r.get("median_ms") is not None and r.get("megapixels")]
    if not usable:
        return None
    devices = _told_apart(usable)
    series: dict[tuple[str, str, str, str], list[tuple[float, float]]] = defaultdict(list)
    for row in usable:
        series[(row["model"], row["target"], row["precision"], _device(row))].append((row["megapixels"], row["median_ms"]))
    plt = _pyplot()
    figure, axes = _log_log_axes(plt)
    for (model, target, precision, device), points in sorted(series.items()):
        points.sort()
        mp, ms = zip(*points)
        label = f"{model} {target}/{precision}" + (f" on {device}" if devices else "")
        if len(set(mp)) > 1:
            label += f" (slope {loglog_slope(list(mp), list(ms)):.2f})"
        line = _DEVICE_LINES[devices.index(device) % len(_DEVICE_LINES)] if devices else "-"
        axes.plot(mp, ms, marker=_MARKERS.get(precision, "D"), linestyle=line, label=label)
    all_mp = [p for points in series.values() for p, _ in points]
    anchor = min((points[0] for points in series.values()), key=lambda p: p[0])
    span = np.array([min(all_mp), max(all_mp)])
    if span[1] > span[0]:
        axes.plot(span, anchor[1] * span / anchor[0], "k--", linewidth=0.8, alpha=0.5, label="slope 1 (linear in pixels)")
    _plain_numbers(axes.xaxis, axes.yaxis)
    return _finish(figure, axes, "input megapixels (batch x height x width / 1e6)", ylabel="median latency (ms)", title="Latency vs input size (log-log)")


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not beaten on both latency and error, sorted by latency (lower is better on both)."""
    front, best_error = [], float("inf")
    for latency, error in sorted(points):
        if error < best_error:
            front.append((latency, error))
            best_error = error
    return front


def _scatter_with_fronts(plt, axes, usable: list[dict], *, y, lower_is_better: bool) -> bool:
    """Each row at (median latency, y(row)), one colour per model, resolution (and device), and its
    Pareto front as a step line; returns whether devices were told apart."""
    devices = _told_apart(usable)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in usable:
        groups[(row["model"], row["resolution"], _device(row) if devices else "")].append(row)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    sign = 1 if lower_is_better else -1
    for index, ((model, resolution, device), members) in enumerate(sorted(groups.items())):
        color = colors[index % len(colors)]
        for row in members:
            axes.scatter(row["median_ms"], y(row), color=color, marker=_MARKERS.get(row["precision"], "D"), s=40)
            axes.annotate(f"{row['target']}/{row['precision']}", (row["median_ms"], y(row)), fontsize=7, xytext=(4, 3), textcoords="offset points")
        front = pareto_front([(r["median_ms"], sign * y(r)) for r in members])
        label = f"{model} {resolution}" + (f" on {device}" if device else "")
        axes.plot([t for t, _ in front], [sign * v for _, v in front], color=color, linewidth=1, drawstyle="steps-post", label=label)
    return devices


def drift_vs_latency(rows: list[dict]) -> bytes | None:
    """None when no row has both a parity error and a latency."""
    usable = [r for r in rows if r.get("median_ms") is not None and r.get("max_abs_error") is not None]
    if not usable:
        return None
    plt = _pyplot()
    figure, axes = _log_log_axes(plt)
    devices = _scatter_with_fronts(
        plt, axes, usable, y=lambda row: max(row["max_abs_error"], 1e-9), lower_is_better=True
    )  # log axis: an exact match sits at the floor
    errors = [max(r["max_abs_error"], 1e-9) for r in usable]
    axes.set_ylim(min(errors) / 3, max(errors) * 3)  # at least a decade, so the log axis has labels
    _plain_numbers(axes.xaxis)
    return _finish(
        figure,
        axes,
        "median latency (ms)",
        ylabel="max abs error vs PyTorch (logits)",
        title=f"Accuracy drift vs latency (lines: Pareto front per model{', resolution and device' if devices else ' and resolution'})",
    )


def accuracy_vs_latency(rows: list[dict]) -> bytes | None:
    """The task metric on the user's data against latency, one colour per model, resolution (and
    device), with its Pareto front (no other artifact both faster and more accurate). None when no
    row has both an eval and a latency."""
    usable = [r for r in rows if r.get("median_ms") is not None and r.get("accuracy") is not None]
    if not usable:
        return None
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 4.5))
    _scatter_with_fronts(plt, axes, usable, y=lambda row: row["accuracy"], lower_is_better=False)
    metrics = sorted({r["metric"] for r in usable})
    return _finish(
        figure,
        axes,
        "median latency (ms)",
        ylabel=f"{' / '.join(metrics)} on your data (%)",
        title="Accuracy vs latency (lines: Pareto front; up and left is better)",
    )
