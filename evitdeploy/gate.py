"""The latency gate: fail CI only on a slowdown that is both large and beyond noise.

asv's discipline, applied to exported artifacts: a regression is flagged only when the median
slowdown exceeds the threshold AND a one-sided Mann-Whitney U test on the raw samples rejects
"no slower" at `alpha`. The threshold alone raises false alarms on shared runners; the test alone
flags 0.5% changes once there are thousands of samples. A bootstrap confidence interval of the
median ratio is reported beside the verdict so a reader can see how sure the figure is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from evitdeploy import schemas
from evitdeploy.bench import BENCH_SCHEMA
from evitdeploy.errors import UserError

GATE_SCHEMA = 1
MIN_SAMPLES = 5  # below this a rank test cannot reach any useful alpha
REGRESSION, IMPROVEMENT, NO_CHANGE = "regression", "improvement", "no change"
_HOST_KEYS = ("cpu", "logical_cpus", "threads", "os", "machine")


@dataclass(frozen=True)
class GateSettings:
    threshold: float = 0.05  # relative median slowdown that matters
    alpha: float = 0.01  # significance of the one-sided rank test
    confidence: float = 0.95  # of the bootstrap interval reported beside the verdict
    resamples: int = 2000
    seed: int = 0


def parse_threshold(text: str) -> float:
    """'5%' or '0.05' -> 0.05."""
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise UserError(f"--threshold {text!r} is not a number", "write it as 5% or 0.05") from None
    if not raw.endswith("%") and value >= 1:
        raise UserError(f"--threshold {text!r} is ambiguous", "write a percentage with a % sign (5%) or a fraction (0.05)")
    if not 0 < value <= 10:
        raise UserError(f"--threshold {text!r} is out of range", "use a slowdown above 0%, e.g. 5%")
    return value


def check_alpha(alpha: float) -> float:
    if not 0 < alpha < 0.5:
        raise UserError(f"--alpha {alpha} is out of range", "use a significance level between 0 and 0.5, e.g. 0.01")
    return alpha


def load_bench(path: Path, role: str) -> dict:
    """A bench result file, or one clear error saying what is wrong with it."""
    path = Path(path)
    hint = "pass a file written by `evitdeploy bench --save` (or `gate --save` of an interleaved run)"

    first = schemas.of_kind(
        "bench", BENCH_SCHEMA, what=f"{role} file {path}", hint=hint, rerun="re-run `evitdeploy bench --save` with this version for both sides"
    )
    data = schemas.load_document(path, schemas.BenchResult, what=f"{role} file", hint=hint, first=first)
    samples = primary_samples(data)
    if samples.size < MIN_SAMPLES or not np.all(np.isfinite(samples)) or np.any(samples <= 0):
        raise UserError(
            f"{role} file {path} has {samples.size} usable latency samples; the gate needs at least {MIN_SAMPLES} positive ones",
            "bench with --count 30 or more",
        )
    return data


def primary_samples(summary: dict) -> np.ndarray:
    """The artifact's own raw samples (results[0]; a PyTorch eager run, if any, comes after)."""
    return np.asarray(summary["results"][0]["latency_samples_ms"], dtype=np.float64)


def identity(summary: dict) -> dict:
    """What must be equal for two latencies to be comparable."""
    first = summary["results"][0]
    host = summary.get("host", {})
    return {
        "host": {k: host.get(k) for k in _HOST_KEYS},
        "backend": first.get("backend"),
        "providers": first.get("providers"),
        "precision": summary.get("precision"),
        "input_shape": first.get("input_shape"),
    }


def mismatches(baseline: dict, new: dict) -> list[str]:
    """Human-readable differences that make a comparison meaningless."""
    a, b = identity(baseline), identity(new)
    found = []
    host_diffs = [f"{k} {a['host'][k]!r} vs {b['host'][k]!r}" for k in _HOST_KEYS if a["host"][k] != b["host"][k]]
    if host_diffs:
        found.append("different hosts (" + "; ".join(host_diffs) + ")")
    if (a["backend"], a["providers"]) != (b["backend"], b["providers"]):
        found.append(f"different backends ({a['backend']} {a['providers']} vs {b['backend']} {b['providers']})")
    if a["precision"] != b["precision"]:
        found.append(f"different precisions ({a['precision']} vs {b['precision']})")
    if a["input_shape"] != b["input_shape"]:
        found.append(f"different input shapes ({a['input_shape']} vs {b['input_shape']})")
    return found


def warnings_for(baseline: dict, new: dict) -> list[str]:
    """Differences worth saying that do not invalidate the comparison."""
    notes = []
    a, b = baseline["results"][0].get("versions", {}), new["results"][0].get("versions", {})
    for name in sorted(set(a) | set(b)):
        if a.get(name) != b.get(name):
            notes.append(f"{name} {a.get(name)} (baseline) vs {b.get(name)} (new)")
    if baseline.get("artifact_sha256") and baseline.get("artifact_sha256") == new.get("artifact_sha256"):
        notes.append("baseline and new are the same artifact (sha256): this measures noise only")
    for role, summary in (("baseline", baseline), ("new", new)):
        host = summary.get("host", {})
        load, cpus = host.get("load_average_1m"), host.get("logical_cpus")
        if load is not None and cpus and load > cpus:
            notes.append(f"{role} ran on a loaded host (1-minute load {load:.1f} on {cpus} CPUs)")
    return notes


def _median_ratio_interval(baseline: np.ndarray, new: np.ndarray, settings: GateSettings) -> list[float]:
    from scipy.stats import bootstrap

    result = bootstrap(
        (new, baseline),
        lambda n, b, axis: np.median(n, axis=axis) / np.median(b, axis=axis),
        n_resamples=settings.resamples,
        vectorized=True,
        paired=False,
        confidence_level=settings.confidence,
        method="percentile",
        rng=np.random.default_rng(settings.seed),
    )
    return [float(result.confidence_interval.low), float(result.confidence_interval.high)]


def compare_samples(baseline: np.ndarray, new: np.ndarray, settings: GateSettings = GateSettings(), interval: bool = True) -> dict:
    """The verdict on two sets of raw latency samples (ms), with every number behind it."""
    from scipy.stats import mannwhitneyu

    baseline, new = np.asarray(baseline, dtype=np.float64), np.asarray(new, dtype=np.float64)
    ratio = float(np.median(new) / np.median(baseline))
    p_slower = float(mannwhitneyu(new, baseline, alternative="greater").pvalue)
    p_faster = float(mannwhitneyu(new, baseline, alternative="less").pvalue)
    limit = 1 + settings.threshold
    if ratio > limit and p_slower < settings.alpha:
        verdict = REGRESSION
        reason = f"median {100 * (ratio - 1):.1f}% slower (> {100 * settings.threshold:g}%) and beyond noise (p={p_slower:.2g} < {settings.alpha:g})"
    elif ratio < 1 / limit and p_faster < settings.alpha:
        verdict = IMPROVEMENT
        reason = f"median {100 * (1 / ratio - 1):.1f}% faster (> {100 * settings.threshold:g}%) and beyond noise (p={p_faster:.2g} < {settings.alpha:g})"
    elif ratio >= 1:
        verdict = NO_CHANGE
        if ratio <= limit:
            reason = f"median {100 * (ratio - 1):.1f}% slower, within the {100 * settings.threshold:g}% threshold"
        else:
            reason = f"median {100 * (ratio - 1):.1f}% slower but not beyond noise (p={p_slower:.2g} >= {settings.alpha:g})"
    else:
        verdict = NO_CHANGE
        reason = f"median {100 * (1 / ratio - 1):.1f}% faster, " + (
            f"within the {100 * settings.threshold:g}% threshold" if ratio >= 1 / limit else f"but not beyond noise (p={p_faster:.2g})"
        )
    return {
        "verdict": verdict,
        "reason": reason,
        "ratio": ratio,
        "change_pct": 100 * (ratio - 1),
        "ratio_interval": _median_ratio_interval(baseline, new, settings) if interval else None,
        "confidence": settings.confidence,
        "p_slower": p_slower,
        "p_faster": p_faster,
        "threshold": settings.threshold,
        "alpha": settings.alpha,
        "test": "Mann-Whitney U, one-sided, on raw samples",
    }


def _side(summary: dict) -> dict:
    first = summary["results"][0]
    return {
        "artifact": summary.get("artifact"),
        "artifact_sha256": summary.get("artifact_sha256"),
        "model": summary.get("model"),
        "label": first.get("label"),
        "input_shape": first.get("input_shape"),
        "stats": first["stats"],
        "versions": first.get("versions", {}),
    }


def evaluate(baseline: dict, new: dict, settings: GateSettings = GateSettings(), *, allow_mismatch: bool = False, mode: str = "files") -> dict:
    """Gate report for two bench results; refuses incomparable ones unless allowed."""
    found = mismatches(baseline, new)
    if found and not allow_mismatch:
        raise UserError(
            f"cannot compare: {found[0]}",
            "measure both on the same kind of host and setup (best: `gate --interleave`), or pass --allow-mismatch",
        )
    comparison = compare_samples(primary_samples(baseline), primary_samples(new), settings)
    return {
        "kind": "gate",
        "schema": GATE_SCHEMA,
        "mode": mode,
        **comparison,
        "baseline": _side(baseline),
        "new": _side(new),
        "host": new.get("host", {}),
        "mismatches": found,
        "warnings": warnings_for(baseline, new),
    }


_HEADLINES = {
    REGRESSION: "❌ Latency regression",
    IMPROVEMENT: "🚀 Faster beyond noise",
    NO_CHANGE: "✅ No latency regression",
}


def markdown(report: dict) -> str:
    """A summary a CI job can post as a pull-request comment."""
    base, new = report["baseline"], report["new"]
    low, high = report["ratio_interval"] or (float("nan"), float("nan"))
    host = report.get("host", {})
    lines = [
        f"### {_HEADLINES[report['verdict']]}: {new.get('model') or ''} {new.get('label') or ''}".rstrip(),
        "",
        f"{report['reason']}.",
        "",
        "| | median ms | p90 ms | p99 ms | samples |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, side in (("baseline", base), ("new", new)):
        s = side["stats"]
        lines.append(f"| {name} | {s['median_ms']:.3f} | {s['p90_ms']:.3f} | {s['p99_ms']:.3f} | {s['count']} |")
    lines += [
        "",
        f"- median ratio new/baseline: **{report['ratio']:.3f}** ({report['change_pct']:+.1f}%), "
        f"{100 * report['confidence']:g}% bootstrap interval [{low:.3f}, {high:.3f}]",
        f"- Mann-Whitney U (one-sided): p(slower) = {report['p_slower']:.3g}, p(faster) = {report['p_faster']:.3g}; "
        f"gate: slowdown > {100 * report['threshold']:g}% and p < {report['alpha']:g}",
        f"- mode: {'interleaved in one job (A B B A …)' if report['mode'] == 'interleaved' else 'two result files'}; "
        f"host: {host.get('cpu')}, {host.get('threads')} threads, input {'x'.join(map(str, new.get('input_shape') or []))}",
    ]
    lines += [f"- mismatch allowed: {m}" for m in report.get("mismatches", [])]
    lines += [f"- note: {w}" for w in report.get("warnings", [])]
    return "\n".join(lines) + "\n"


def exit_code(report: dict) -> int:
    return 1 if report["verdict"] == REGRESSION else 0


def simulated_latencies(rng: np.random.Generator, n: int, median_ms: float, noise: float) -> np.ndarray:
    """The noise model the gate is validated against (tests, benchmarks/gate_noise.py): log-normal
    jitter of relative size `noise`, plus 5% stragglers 30-100% slower, as real runs have."""
    samples = median_ms * np.exp(rng.normal(0.0, noise, n))
    stragglers = rng.random(n) < 0.05
    samples[stragglers] *= 1 + rng.uniform(0.3, 1.0, stragglers.sum())
    return samples


def check_samples_count(count: Optional[int]) -> None:
    if count is not None and count < MIN_SAMPLES:
        raise UserError(f"--count {count} is too few for the gate", f"use --count {MIN_SAMPLES} or more (30+ recommended)")
