"""`deploy --precision auto`: the fastest candidate that passes wins, and every other one says why it lost."""

from __future__ import annotations

import importlib.util
import io
import json

import numpy as np
import pytest
from rich.console import Console

from helpers import LOOSE_PROFILE, X86_TEST_PROFILE, assert_clean_error
from evitdeploy.autoselect import candidate_rows, winner_of
from evitdeploy.gate import simulated_latencies
from evitdeploy.profiles import load_profile
from evitdeploy.report.selection import selection_table


def record(target: str, precision: str, *, median: float = 1.0, status: str = "ok", failures=(), stage=None, error=None, seed: int = 0) -> dict:
    """A sweep-cell record as run_sweep returns it, with 50 latency samples around `median`."""
    made = {
        "cell": {"model": "efficientvit_b0", "target": target, "precision": precision, "height": 64, "width": 64, "profile": "mine"},
        "status": status,
        "nodes": {"bench": {"host": "here"}},
    }
    if status == "failed":
        return {**made, "stage": stage, "error": error}
    samples = simulated_latencies(np.random.default_rng(seed), 50, median, 0.02)
    stats = {"median_ms": float(np.median(samples)), "p90_ms": float(np.percentile(samples, 90)), "p99_ms": float(np.percentile(samples, 99))}
    made["parity"] = {"passed": not failures, "failures": list(failures), "metrics": {"cosine_min": 0.999}}
    made["bench"] = {"results": [{"stats": stats, "latency_samples_ms": samples.tolist()}]}
    return made


def by_candidate(rows: list[dict]) -> dict:
    return {(row["backend"], row["precision"]): row for row in rows}


@pytest.mark.fast
def test_the_fastest_passing_candidate_wins_and_every_loser_says_why():
    rows = candidate_rows(
        [
            record("onnx", "fp32", median=4.1),
            record("openvino", "fp32", median=3.3, seed=1),
            record("openvino", "int8", median=1.5, status="parity-failed", failures=["min cosine 0.43 < 0.98"]),
            record("onnx", "int8", status="failed", stage="export", error="calibration data not found: x"),
        ],
        "median",
    )
    winner = winner_of(rows)
    assert (winner["backend"], winner["precision"]) == ("openvino", "fp32") and rows[0] is winner
    table = by_candidate(rows)
    slower = table[("onnxruntime", "fp32")]
    assert slower["why"].startswith("slower by 2") and "ms vs 3.3" in slower["why"] and "beyond noise" in slower["why"]
    assert slower["within_noise"] is False and 20 < slower["slower_pct"] < 30
    assert table[("openvino", "int8")]["why"] == "missed tolerance: min cosine 0.43 < 0.98"  # faster, but it missed a tolerance
    assert table[("onnxruntime", "int8")]["why"] == "failed at export: calibration data not found: x"
    assert [row["status"] for row in rows] == ["ok", "ok", "parity-failed", "failed"]
    json.dumps(rows)  # JSON-ready


@pytest.mark.fast
def test_a_candidate_slower_only_by_noise_says_so():
    rows = candidate_rows([record("onnx", "fp32", median=2.0), record("openvino", "fp32", median=2.01, seed=1)], "median")
    loser = next(row for row in rows if not row["winner"])
    assert loser["within_noise"] is True and "within noise" in loser["why"]


@pytest.mark.fast
def test_the_profiles_statistic_decides():
    fast_median_slow_tail = record("onnx", "fp32", median=1.0)
    fast_median_slow_tail["bench"]["results"][0]["stats"]["p99_ms"] = 9.0
    rows = candidate_rows([fast_median_slow_tail, record("openvino", "fp32", median=1.2, seed=1)], "p99")
    assert winner_of(rows)["backend"] == "openvino"


@pytest.mark.fast
def test_no_passing_candidate_means_no_winner_and_the_table_says_so():
    rows = candidate_rows([record("onnx", "fp32", status="parity-failed", failures=["max abs error 1e-06 > 1e-12"])], "median")
    assert winner_of(rows) is None and rows[0]["why"].startswith("missed tolerance: max abs error")
    console = Console(file=io.StringIO(), width=200)
    console.print(selection_table({"statistic": "median", "winner": None, "candidates": rows, "results": "x/results.jsonl"}))
    text = console.file.getvalue()
    assert "none passes" in text and "missed tolerance" in text


@pytest.mark.fast
def test_shipped_x86_profiles_list_onnxruntime_and_openvino_as_candidates():
    for name in ("x86-cpu", "intel-cpu"):
        profile = load_profile(name)
        assert profile.candidates == ("onnxruntime", "openvino")
        assert "bf16" in profile.precisions_for("openvino") and "bf16" not in profile.precisions_for("onnxruntime")
    assert load_profile("arm64-cpu").candidates == ("onnxruntime",)  # none listed: its own backend


def write_profile(tmp_path, precisions='["fp32", "int8"]', candidates='["onnxruntime", "openvino"]', max_abs="1e-4", precision="fp32"):
    path = tmp_path / "mine.toml"
    path.write_text(X86_TEST_PROFILE.format(precision=precision, precisions=precisions, candidates=candidates, max_abs=max_abs))
    return path


@pytest.mark.fast
@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"candidates": '["onnxruntime", "tpu"]'}, "candidate 'tpu' is not a known backend; use one of: onnxruntime"),
        ({"candidates": '["onnxruntime"]'}, "backend 'openvino' is not among its candidates"),
        ({"precision": "bf16", "precisions": '["bf16"]'}, "candidate 'onnxruntime' builds none of its precisions ['bf16']"),
        ({"precisions": '["fp32", "fp8"]'}, "precision 'fp8' is not one any of its candidates (onnxruntime, openvino) builds"),
    ],
)
def test_bad_candidates_are_one_clear_line(change, fragment, cli, tmp_path):
    result = cli("deploy", "--profile", write_profile(tmp_path, **change), "--model", "efficientvit_b0", "-p", "auto", "-o", tmp_path / "out")
    assert_clean_error(result, 2, fragment)
    assert [p.name for p in tmp_path.iterdir()] == ["mine.toml"]


@pytest.mark.fast
@pytest.mark.parametrize(
    "args, fragment",
    [
        (("--profile", "x86-cpu", "-p", "bf16"), "profile x86-cpu offers precision 'bf16' on openvino, not on its backend onnxruntime"),
        (("--profile", "x86-cpu", "--executor", "ray"), "--executor is for --precision auto"),
        (("--profile", "x86-cpu", "-p", "auto", "--backend", "openvino"), "--precision auto measures every candidate"),
        (("--profile", "x86-cpu", "-p", "auto", "--calib-count", "8"), "--precision auto measures every candidate with the default precision plan"),
        (("--profile", "x86-cpu", "-p", "auto", "--executor", "slurm"), "unknown executor 'slurm'"),
        (("--profile", "arm64-cpu", "--backend", "openvino"), "profile arm64-cpu has no candidate backend 'openvino'"),
    ],
)
def test_auto_and_backend_misuse_is_refused_before_anything_is_written(args, fragment, cli, tmp_path):
    result = cli("deploy", *args, "--model", "efficientvit_b0", "-o", tmp_path / "out")
    assert_clean_error(result, 2, fragment)
    assert list(tmp_path.iterdir()) == []


needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="OpenVINO is not installed (evitdeploy[openvino])")


@needs_openvino
def test_auto_deploys_the_fastest_passing_candidate_and_says_why_the_others_lost(cli, tmp_path):
    result = cli("deploy", "--profile", write_profile(tmp_path), "--model", "efficientvit_b0", "-p", "auto", "--samples", "2", "-o", tmp_path / "out", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    selection = summary["selection"]
    rows = by_candidate(selection["candidates"])
    assert set(rows) == {("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"), ("openvino", "int8")}
    winner = selection["winner"]
    assert [row["winner"] for row in selection["candidates"]].count(True) == 1 and winner["parity"] is True
    assert all(row["why"] for row in selection["candidates"])  # the winner's too: why it won
    for row in selection["candidates"]:
        if row["status"] == "ok" and not row["winner"]:
            assert row["latency_ms"] >= winner["latency_ms"] and row["why"].startswith("slower by")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())  # the bundle is the winner's
    assert (manifest["target"], manifest["precision"]) == (winner["target"], winner["precision"])
    assert summary["passed"] and summary["precision"] == winner["precision"]
    assert ("--backend onnxruntime" in summary["commands"]["deploy"]) == (winner["backend"] == "onnxruntime")
    results = tmp_path / "out-candidates" / "results.jsonl"
    assert selection["results"] == str(results) and len(results.read_text().splitlines()) == 4


@needs_openvino
def test_auto_with_no_passing_candidate_exits_1_and_writes_no_bundle(cli, tmp_path):
    profile = write_profile(tmp_path, precisions='["fp32"]', max_abs="1e-12")
    result = cli("deploy", "--profile", profile, "--model", "efficientvit_b0", "-p", "auto", "--samples", "1", "-o", tmp_path / "out")
    assert result.exit_code == 1, result.output
    assert "none passes" in result.stdout and "missed tolerance: max abs error" in result.stdout
    assert not (tmp_path / "out").exists() and (tmp_path / "out-candidates" / "results.jsonl").is_file()


@pytest.mark.fast
def test_an_existing_candidates_folder_needs_force(cli, tmp_path):
    (tmp_path / "out-candidates").mkdir()
    result = cli("deploy", "--profile", "x86-cpu", "--model", "efficientvit_b0", "-p", "auto", "--height", "64", "--width", "64", "-o", tmp_path / "out")
    assert_clean_error(result, 2, "out-candidates already exists", "--force")
    assert [p.name for p in tmp_path.iterdir()] == ["out-candidates"]


@needs_openvino
def test_backend_deploys_another_candidate_and_the_bundle_says_how_to_redo_it(cli, tmp_path):
    result = cli(
        "deploy",
        "--profile",
        "x86-cpu",
        "--backend",
        "ov",
        "--model",
        "efficientvit_b0",
        "--height",
        "64",
        "--width",
        "64",
        "--samples",
        "1",
        "-o",
        tmp_path / "out",
        "--json",
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["target"], summary["precision"]) == ("openvino", "fp32") and "selection" not in summary
    assert summary["commands"]["deploy"].startswith("evitdeploy deploy --profile x86-cpu --model efficientvit_b0 --backend openvino --precision fp32")


def with_eval(made: dict, top1: float, fp32: float = 0.98) -> dict:
    """A cell record with the eval a `--dataset` sweep adds (top-1 against PyTorch FP32's)."""
    value = lambda v: {"value": v, "low": v - 0.01, "high": v + 0.01}  # noqa: E731 (an interval around a value)
    return {**made, "eval": {"metrics": {"top1": value(top1)}, "fp32": {"top1": value(fp32)}, "delta": {"top1": value(top1 - fp32)}}}


@pytest.mark.fast
def test_a_faster_candidate_that_drops_too_much_on_the_users_data_loses_and_says_so():
    records = [
        with_eval(record("onnx", "fp32", median=4.0), 0.98),
        with_eval(record("onnx", "int8", median=2.0, seed=1), 0.70),  # faster, 28 points worse
        with_eval(record("openvino", "int8", median=3.0, seed=2), 0.976),  # within the drop
    ]
    rows = candidate_rows(records, "median", max_drop=0.5)
    table = by_candidate(rows)
    assert (winner_of(rows)["backend"], winner_of(rows)["precision"]) == ("openvino", "int8")
    lost = table[("onnxruntime", "int8")]
    assert lost["status"] == "too-inaccurate" and lost["accuracy"]["drop_pt"] == pytest.approx(28.0)
    assert lost["why"].startswith("faster by 3") and "drops 28.00 pt of top1" in lost["why"] and "beyond 0.5" in lost["why"]
    assert table[("onnxruntime", "fp32")]["why"].startswith("slower by")
    unjudged = by_candidate(candidate_rows(records, "median"))  # no --max-drop: reported, not judged
    assert winner_of(list(unjudged.values()))["precision"] == "int8" and unjudged[("onnxruntime", "int8")]["accuracy"]["drop_pt"] == pytest.approx(28.0)
    console = Console(file=io.StringIO(), width=200)
    console.print(selection_table({"statistic": "median", "winner": winner_of(rows), "candidates": rows, "results": "r.jsonl", "max_drop_pt": 0.5}))
    assert "within a 0.5-pt drop" in console.file.getvalue() and "-28.00" in console.file.getvalue()


def test_auto_with_a_dataset_rejects_the_naive_int8_for_its_drop(cli, tmp_path, digits_checkpoint_path):
    """The trained digits, onnxruntime's quantize_static with its defaults as the INT8 candidate:
    it loses tens of points of top-1 on the held-out digits, so FP32 is deployed, and the table says why."""
    from evitdeploy.models.references import write_datasets
    from evitdeploy.models.trained import digits_images

    data = write_datasets(tmp_path / "datasets", digits=100, mosaics=0, promptable=0)
    np.savez(tmp_path / "train.npz", image=digits_images("train")[0][:64])
    (tmp_path / "loose.toml").write_text(LOOSE_PROFILE)
    common = ("--model", "efficientvit_b0", "-c", digits_checkpoint_path, "--height", "64", "--width", "64", "--data", tmp_path / "train.npz")
    result = cli(
        "deploy", "--profile", tmp_path / "loose.toml", *common, "-p", "auto", "--int8-plan", "naive", "--calib", tmp_path / "train.npz",
        "--dataset", data["digits"], "--max-drop", "0.5", "--samples", "2", "-o", tmp_path / "out", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    rows = by_candidate(summary["selection"]["candidates"])
    naive, fp32 = rows[("onnxruntime", "int8")], rows[("onnxruntime", "fp32")]
    assert fp32["winner"] and fp32["accuracy"]["drop_pt"] == 0.0 and summary["precision"] == "fp32"
    assert (
        naive["status"] in ("too-inaccurate", "parity-failed") and naive["accuracy"]["drop_pt"] > 5
    )  # parity-failed where its 8-bit weights saturate (no VNNI)
    assert "beyond 0.5" in naive["why"] and summary["selection"]["max_drop_pt"] == 0.5
    line = json.loads((tmp_path / "out-candidates" / "results.jsonl").read_text().splitlines()[-1])
    assert line["eval"]["dataset"]["images"] == 100 and "per_image" not in line["eval"]
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["precision"] == "fp32"  # the winner's deploy, evaluated again:
    assert summary["accuracy"]["drop_pt"] == 0.0 and not summary["accuracy"]["beyond"]  # FP32 equals PyTorch on every image
