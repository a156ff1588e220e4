"""Accuracy against a baseline, paired on the same images: the accuracy side of `gate`, and the
"drops X pt" of `deploy --precision auto --max-drop`.

A regression is a drop in the task's headline metric (top-1, mIoU, box-prompt mask mIoU) larger
than `max_drop` points that is also beyond noise: the paired 95% bootstrap interval of the
difference (the same images resampled for both sides) lies below zero. Two numbers alone would
flag a one-image wobble on a small set; the interval alone would flag a 0.01-pt change on a large
one. The images are matched by their path in the dataset, so both evals must cover the same ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from evitdeploy import schemas
from evitdeploy.device import eval_subset
from evitdeploy.device.tasks import CLASSIFICATION, PROMPTABLE, SEGMENTATION
from evitdeploy.errors import UserError
from evitdeploy.evaluation import scores

EVAL_SCHEMA = 1
REGRESSION, IMPROVEMENT, NO_CHANGE = "regression", "improvement", "no change"
HEADLINE = eval_subset.HEADLINE  # per task, what --max-drop is in points of (the device's subset check judges the same)


def headline(report: dict) -> str:
    """The metric an eval report is judged by."""
    return HEADLINE[report["task"]]


def drop_points(report: dict) -> float:
    """How many points the artifact loses against PyTorch FP32 on the headline metric (negative: gains)."""
    return -100.0 * report["delta"][headline(report)]["value"]


def kind_of(path: Path, role: str) -> object:
    """The `kind` a result file says it is (None when it says nothing): which gate reads it."""
    from evitdeploy.files import read_input_text

    try:
        data = schemas.parse_json(read_input_text(Path(path), f"{role} file", "pass a result file written with --save"))
    except ValueError as exc:
        raise UserError(f"{role} file {path} is not valid JSON ({exc})", "pass a result file written with --save") from None
    return data.get("kind") if isinstance(data, dict) else None


def accuracy_of(report: dict, max_drop: Optional[float]) -> dict:
    """An eval's headline metric against PyTorch FP32 in points, judged by the point estimate
    against `max_drop` (the paired interval beside it): what deploy records and --max-drop decides."""
    metric = next(name for name in HEADLINE.values() if name in report["delta"])
    delta = report["delta"][metric]
    drop = -100 * delta["value"] + 0.0  # + 0.0: no "-0.00"
    beyond = max_drop is not None and drop > max_drop
    return {
        "metric": metric,
        "value": report["metrics"][metric]["value"],
        "fp32": report["fp32"][metric]["value"],
        "drop_pt": drop,
        "drop_interval_pt": [-100 * delta["high"] + 0.0, -100 * delta["low"] + 0.0],
        "max_drop_pt": max_drop,
        "beyond": beyond,
        "said": f"drops {drop:.2f} pt of {metric} against PyTorch FP32 (paired 95% [{-100 * delta['high'] + 0.0:.2f}, {-100 * delta['low'] + 0.0:.2f}])"
        + (f", beyond {max_drop:g}" if beyond else ""),
    }


def load_eval(path: Path, role: str) -> dict:
    """An eval result (`evitdeploy eval --save`), or one clear error saying what is wrong with it."""
    hint = "pass a file written by `evitdeploy eval ARTIFACT --dataset PATH --save FILE.json`"

    first = schemas.of_kind(
        "evaluation", EVAL_SCHEMA, what=f"{role} file {path}", hint=hint, rerun="re-run `evitdeploy eval --save` with this version for both sides"
    )
    return schemas.load_document(Path(path), schemas.EvalResult, what=f"{role} file", hint=hint, first=first)


def compare(baseline: dict, new: dict, *, max_drop: float, seed: int = 0) -> dict:
    """The paired verdict of `new` against `baseline` on the images both scored (which must be the same)."""
    if baseline["task"] != new["task"]:
        raise UserError(f"the baseline eval is {baseline['task']}, the new one {new['task']}", "gate evals of the same model on the same data")
    if baseline["task"] == SEGMENTATION and len(baseline["per_image"][0]["inter"]) != len(new["per_image"][0]["inter"]):
        raise UserError("the two segmentation evals count different classes", "gate evals of the same model on the same data")
    base = {row["id"]: row for row in baseline["per_image"]}
    mine = {row["id"]: row for row in new["per_image"]}
    if base.keys() != mine.keys():
        only_new, only_base = len(mine.keys() - base.keys()), len(base.keys() - mine.keys())
        raise UserError(
            f"the two evals scored different images ({len(mine.keys() & base.keys())} in both, {only_new} only in the new one, {only_base} only in the baseline)",
            "eval both on the same --dataset with the same --limit and --seed",
        )
    ids = sorted(base)
    metric = headline(new)
    statistic, arrays, (value_new, value_base) = _paired(new["task"], [mine[i] for i in ids], [base[i] for i in ids])
    delta = scores.interval(statistic, arrays, seed)
    drop = -100 * delta["value"]
    beyond_noise = delta["high"] < 0
    improved = delta["low"] > 0
    if drop > max_drop and beyond_noise:
        verdict, reason = (
            REGRESSION,
            f"drops {drop:.2f} pt (beyond {max_drop:g}), paired 95% interval [{100 * delta['low']:+.2f}, {100 * delta['high']:+.2f}] pt below zero",
        )
    elif improved:
        verdict, reason = IMPROVEMENT, f"gains {-drop:.2f} pt, paired 95% interval above zero"
    elif drop > max_drop:
        verdict, reason = (
            NO_CHANGE,
            f"drops {drop:.2f} pt, beyond {max_drop:g} but within noise (interval [{100 * delta['low']:+.2f}, {100 * delta['high']:+.2f}] pt)",
        )
    else:
        verdict, reason = NO_CHANGE, f"{-drop:+.2f} pt, within the allowed {max_drop:g}-pt drop"
    return {
        "kind": "accuracy-gate",
        "metric": metric,
        "max_drop_pt": max_drop,
        "matched": len(ids),
        "baseline": {"value": value_base, "artifact": _who(baseline)},
        "new": {"value": value_new, "artifact": _who(new)},
        "delta": delta,
        "verdict": verdict,
        "reason": reason,
        "interval": f"{int(scores.CONFIDENCE * 100)}% percentile bootstrap, paired over {'instances' if new['task'] == PROMPTABLE else 'images'}",
    }


def markdown(report: dict) -> str:
    """A summary a CI job can post as a pull-request comment."""
    title = {REGRESSION: "Accuracy regression", IMPROVEMENT: "Accuracy improved", NO_CHANGE: "Accuracy gate passed"}[report["verdict"]]
    delta = report["delta"]
    return (
        "\n".join(
            [
                f"### {title}: {report['metric']}",
                "",
                f"{report['reason']}.",
                "",
                f"| | {report['metric']} |",
                "|---|---:|",
                f"| baseline {report['baseline']['artifact']} | {100 * report['baseline']['value']:.2f} |",
                f"| new {report['new']['artifact']} | {100 * report['new']['value']:.2f} |",
                "",
                f"- new minus baseline: **{100 * delta['value']:+.2f} pt**, {report['interval']}: [{100 * delta['low']:+.2f}, {100 * delta['high']:+.2f}] pt "
                f"over {report['matched']} matched {'instances' if report['metric'] == 'miou_box' else 'images'}",
                f"- gate: a drop beyond {report['max_drop_pt']:g} pt whose interval lies below zero",
            ]
        )
        + "\n"
    )


def _who(report: dict) -> str:
    return f"{report['artifact']} ({report['target']}/{report['precision']})"


def _paired(task: str, new: list, base: list) -> tuple:
    """(statistic(new arrays..., base arrays...) -> new minus base, the arrays, (new value, base value))
    for the headline metric."""
    if task in (CLASSIFICATION, PROMPTABLE):
        value = (lambda row: float(row["top1"] == row["label"])) if task == CLASSIFICATION else (lambda row: row["iou_box"])
        arrays = tuple(np.array([value(row) for row in rows], np.float64) for rows in (new, base))
        return (lambda a, b: np.mean(a, axis=-1) - np.mean(b, axis=-1)), arrays, tuple(float(a.mean()) for a in arrays)
    inter_new, union_new, inter_base, union_base = (np.array([row[key] for row in rows], np.int64) for rows in (new, base) for key in ("inter", "union"))
    present = (union_new.sum(axis=0) + union_base.sum(axis=0)) > 0
    values = (float(scores.miou(inter_new, union_new, present)), float(scores.miou(inter_base, union_base, present)))
    return (lambda a, b, c, d: scores.miou(a, b, present) - scores.miou(c, d, present)), (inter_new, union_new, inter_base, union_base), values
