"""Sensitivity search that stops: rank blocks by the error they cause alone, then move the worst
to higher precision one at a time until the parity target is met or the budget is spent.

Backend-neutral: `evaluate(plan) -> scores` builds and runs a candidate however the backend does
(ONNX Runtime here); scores hold at least `cosine_min` against the FP32 model on held-out images.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

from evitdeploy.precision.plan import PrecisionPlan, find_plan_groups

Evaluate = Callable[[PrecisionPlan], dict]


def rank_groups(plan: PrecisionPlan, evaluate: Evaluate, progress: Optional[Callable[[str], None]] = None) -> list[dict]:
    """Each block reduced alone (everything else FP32): its error, most harmful first."""
    groups = find_plan_groups(plan)
    ranking = []
    for index, group in enumerate(groups):
        if progress:
            progress(f"sensitivity: block {index + 1}/{len(groups)} ({group})")
        scores = evaluate(plan.only_groups([group]))
        ranking.append({"group": group, "error": 1.0 - scores["cosine_mean"], **scores})
    return sorted(ranking, key=lambda entry: -entry["error"])


def meets(scores: dict, min_cosine: float) -> bool:
    return scores["nonfinite"] == 0 and scores["cosine_min"] >= min_cosine


class Target:
    """What a candidate plan must reach: by default the per-image cosine to FP32 on held-out images;
    a task target (precision.task_target) judges the task metric on labelled photos instead."""

    def __init__(self, min_cosine: float):
        self.min_cosine = min_cosine
        self.text = f"min cosine {min_cosine}"

    def met(self, scores: dict) -> bool:
        return meets(scores, self.min_cosine)

    def goodness(self, scores: dict) -> float:
        """Higher is better: which of two candidates that both miss comes closer."""
        return scores["cosine_min"]


def search(
    plan: PrecisionPlan,
    evaluate: Evaluate,
    min_cosine: float,
    budget: int,
    rank_all: bool = False,
    progress: Optional[Callable[[str], None]] = None,
    target: Optional[Target] = None,
    rank_with: Optional[Evaluate] = None,
) -> PrecisionPlan:
    """The plan with the fewest sensitive blocks moved to FP32 that meets the target (`min_cosine`,
    or `target`), or the best reached within `budget` moves; the steps and the reason it stopped go
    into plan.search. Blocks are ranked (by `rank_with`, default `evaluate`: each block's cosine
    error alone) only when a move is needed, or always with `rank_all` (`plan --explain`)."""
    started = time.perf_counter()
    target = target or Target(min_cosine)
    rank_with = rank_with or evaluate
    ranking = rank_groups(plan, rank_with, progress) if rank_all else None
    scores = evaluate(plan)
    steps = [{"float_groups": [], **scores}]
    best, best_scores = plan, scores
    if not target.met(scores) and budget > 0:
        ranking = ranking if ranking is not None else rank_groups(plan, rank_with, progress)
        plan.sensitivity = ranking
        moved: list[str] = []
        for entry in ranking[:budget]:
            moved.append(entry["group"])
            if progress:
                progress(f"search: {len(moved)} block(s) in FP32, latest {entry['group']}")
            candidate = plan.with_float_groups(moved, f"sensitivity: alone it cost {entry['error']:.2e} cosine on held-out images")
            scores = evaluate(candidate)
            steps.append({"float_groups": list(moved), **scores})
            if target.goodness(scores) > target.goodness(best_scores) or target.met(scores):
                best, best_scores = candidate, scores
            if target.met(scores):
                break
    elif ranking is not None:
        plan.sensitivity = ranking
    best.sensitivity = plan.sensitivity
    met = target.met(best_scores)
    best.search = {
        "target": target.text,
        "target_min_cosine": min_cosine,
        "budget_blocks": budget,
        "met": met,
        "stopped": "target met" if met else ("budget spent" if budget else "no budget"),
        "final": best_scores,
        "steps": steps,
        "seconds": round(time.perf_counter() - started, 2),
    }
    return best
