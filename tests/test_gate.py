"""The gate's statistics on seeded simulations, and its refusals on bad or incomparable input."""

import json

import numpy as np
import pytest

from helpers import assert_clean_error
from evitdeploy.gate import GateSettings, compare_samples, parse_threshold, simulated_latencies
from evitdeploy.errors import UserError

TRIALS = 200
SETTINGS = GateSettings(threshold=0.05, alpha=0.01)


def flagged_rate(slowdown: float, noise: float, n: int = 50, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    flagged = 0
    for _ in range(TRIALS):
        baseline, new = simulated_latencies(rng, n, 10.0, noise), simulated_latencies(rng, n, 10.0 * slowdown, noise)
        flagged += compare_samples(baseline, new, SETTINGS, interval=False)["verdict"] == "regression"
    return flagged / TRIALS


@pytest.mark.fast
def test_a_10_percent_slowdown_under_3_percent_noise_is_caught():
    assert flagged_rate(1.10, 0.03) >= 0.95


@pytest.mark.fast
def test_no_change_under_10_percent_noise_passes_in_99_percent_of_trials():
    assert flagged_rate(1.00, 0.10) <= 0.01


@pytest.mark.fast
def test_a_3_percent_slowdown_under_a_5_percent_threshold_passes():
    assert flagged_rate(1.03, 0.03) <= 0.05


@pytest.mark.fast
def test_the_same_slowdown_is_flagged_when_the_threshold_is_lower():
    rng = np.random.default_rng(1)
    baseline, new = simulated_latencies(rng, 200, 10.0, 0.02), simulated_latencies(rng, 200, 10.3, 0.02)
    assert compare_samples(baseline, new, GateSettings(threshold=0.05))["verdict"] == "no change"
    assert compare_samples(baseline, new, GateSettings(threshold=0.02))["verdict"] == "regression"


@pytest.mark.fast
def test_a_large_but_noisy_difference_with_few_samples_is_not_called():
    rng = np.random.default_rng(2)
    baseline, new = simulated_latencies(rng, 5, 10.0, 0.5), simulated_latencies(rng, 5, 11.0, 0.5)
    report = compare_samples(baseline, new, SETTINGS)
    assert report["verdict"] == "no change" and report["p_slower"] >= SETTINGS.alpha


@pytest.mark.fast
def test_faster_beyond_noise_is_reported_as_an_improvement_with_an_interval():
    rng = np.random.default_rng(3)
    report = compare_samples(simulated_latencies(rng, 60, 10.0, 0.03), simulated_latencies(rng, 60, 8.0, 0.03), SETTINGS)
    assert report["verdict"] == "improvement" and "faster" in report["reason"]
    low, high = report["ratio_interval"]
    assert low <= report["ratio"] <= high and high < 1


@pytest.mark.fast
@pytest.mark.parametrize("text,value", [("5%", 0.05), ("0.05", 0.05), ("12.5%", 0.125)])
def test_threshold_parsing(text, value):
    assert parse_threshold(text) == pytest.approx(value)


@pytest.mark.fast
@pytest.mark.parametrize("text", ["5", "abc", "-1%", "0%"])
def test_bad_thresholds_are_refused(text):
    with pytest.raises(UserError):
        parse_threshold(text)


# --- the CLI on real bench files ------------------------------------------------------------


@pytest.fixture(scope="module")
def bench_file(b0_artifact, tmp_path_factory):
    from helpers import Cli

    path = tmp_path_factory.mktemp("gate") / "bench.json"
    result = Cli()("bench", b0_artifact, "--threads", "1", "--warmup", "2", "--count", "20", "--save", path, "--json")
    assert result.exit_code == 0, result.output
    return path


def _variant(bench_file, tmp_path, name, edit):
    data = json.loads(bench_file.read_text())
    edit(data)
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def _slower(data, factor=1.5):
    first = data["results"][0]
    first["latency_samples_ms"] = [s * factor for s in first["latency_samples_ms"]]


def test_bench_json_keeps_raw_samples_fingerprint_and_identity(bench_file):
    data = json.loads(bench_file.read_text())
    assert data["schema"] == 2 and data["kind"] == "bench" and len(data["artifact_sha256"]) == 64
    assert data["precision"] == "fp32" and data["artifact_bytes"] > 0
    assert {"cpu", "logical_cpus", "threads", "os", "machine"} <= set(data["host"])
    first = data["results"][0]
    assert len(first["latency_samples_ms"]) == 20 and first["stats"]["count"] == 20
    assert first["backend"] == "onnxruntime" and "onnxruntime" in first["versions"]


def test_gate_passes_the_same_result_and_writes_markdown(cli, bench_file, tmp_path):
    result = cli("gate", bench_file, "--baseline", bench_file, "--markdown", tmp_path / "gate.md", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["verdict"] == "no change" and report["ratio"] == 1.0
    assert any("same artifact" in w for w in report["warnings"])
    text = (tmp_path / "gate.md").read_text()
    assert "No latency regression" in text and "| baseline |" in text


def test_gate_fails_a_real_slowdown_with_exit_1(cli, bench_file, tmp_path):
    slower = _variant(bench_file, tmp_path, "slow.json", _slower)
    result = cli("gate", slower, "--baseline", bench_file, "--markdown", tmp_path / "gate.md")
    assert result.exit_code == 1, result.output
    assert "REGRESSION" in result.stdout and "Latency regression" in (tmp_path / "gate.md").read_text()
    faster = cli("gate", bench_file, "--baseline", slower, "--json")
    assert faster.exit_code == 0 and json.loads(faster.stdout)["verdict"] == "improvement"


@pytest.mark.parametrize(
    "edit,fragment",
    [
        (lambda d: d["host"].update(cpu="Some Other CPU"), "different hosts"),
        (lambda d: d["host"].update(threads=8), "different hosts"),
        (lambda d: d.update(precision="fp16"), "different precisions"),
        (lambda d: d["results"][0].update(input_shape=[1, 3, 224, 224]), "different input shapes"),
        (lambda d: d["results"][0].update(backend="tensorrt"), "different backends"),
    ],
)
def test_gate_refuses_incomparable_results_unless_allowed(cli, bench_file, tmp_path, edit, fragment):
    other = _variant(bench_file, tmp_path, "other.json", edit)
    assert_clean_error(cli("gate", other, "--baseline", bench_file), 2, fragment, "--allow-mismatch")
    allowed = cli("gate", other, "--baseline", bench_file, "--allow-mismatch", "--json")
    assert allowed.exit_code == 0 and json.loads(allowed.stdout)["mismatches"]


@pytest.mark.parametrize(
    "content,fragment",
    [
        ("{not json", "not valid JSON"),
        ("", "not valid JSON"),
        ('{"kind": "parity"}', "not a bench result"),
        ("[1, 2]", "not a bench result"),
        ('{"kind": "bench", "schema": 1, "results": []}', "schema 1"),
        ('{"kind": "bench", "schema": 99, "results": []}', "schema 99"),
        ('{"kind": "bench", "schema": 2, "results": []}', "field `results`"),
        ('{"kind": "bench", "schema": 2, "results": [{"latency_samples_ms": [1.0, 2.0]}]}', "field `results.0.stats` is missing"),
        (
            '{"kind": "bench", "schema": 2, "results": [{"stats": {"count": 2, "median_ms": 1.5, "p90_ms": 2, "p99_ms": 2, "mean_ms": 1.5, '
            '"std_ms": 0.7, "throughput_per_s": 666}, "latency_samples_ms": [1.0, 2.0]}]}',
            "at least 5",
        ),
        ('{"kind": "bench", "schema": 2, "results": [{"latency_samples_ms": [1, 2, "x", 3, 4]}]}', "field `results.0"),
    ],
)
def test_gate_refuses_a_corrupt_or_foreign_baseline(cli, bench_file, tmp_path, content, fragment):
    bad = tmp_path / "baseline.json"
    bad.write_text(content)
    assert_clean_error(cli("gate", bench_file, "--baseline", bad), 2, "baseline file", fragment)


def test_gate_usage_errors(cli, bench_file, tmp_path):
    assert_clean_error(cli("gate", bench_file, "--baseline", tmp_path / "missing.json"), 2, "not found")
    assert_clean_error(cli("gate", bench_file), 2, "--baseline")
    assert_clean_error(cli("gate", bench_file, "--baseline", bench_file, "--threshold", "5"), 2, "ambiguous")
    assert_clean_error(cli("gate", bench_file, "--baseline", bench_file, "--alpha", "2"), 2, "--alpha")
    assert_clean_error(cli("gate", "--interleave", bench_file), 2, "two artifacts")
    assert_clean_error(cli("gate", "--interleave", tmp_path / "a", tmp_path / "b"), 2, "not found")


@pytest.mark.fast
def test_gate_help_explains_the_rule(cli):
    result = cli("gate", "--help")
    assert result.exit_code == 0 and "Mann-Whitney" in result.stdout and "--interleave" in result.stdout


def test_interleaved_gate_times_both_artifacts_in_one_run(cli, b0_artifact, tmp_path):
    result = cli(
        "gate",
        "--interleave",
        b0_artifact,
        b0_artifact,
        "--threads",
        "1",
        "--warmup",
        "2",
        "--count",
        "20",
        "--json",
        "--save",
        tmp_path / "gate.json",
    )
    report = json.loads(result.stdout)
    assert result.exit_code == (1 if report["verdict"] == "regression" else 0), result.output  # A/A: the verdict is noise's
    assert report["mode"] == "interleaved" and report["baseline"]["artifact_sha256"] == report["new"]["artifact_sha256"]
    for side in ("baseline", "new"):
        run = report["results"][side]
        assert run["mode"] == "interleaved" and len(run["results"][0]["latency_samples_ms"]) >= 20
    assert json.loads((tmp_path / "gate.json").read_text())["verdict"] == report["verdict"]
