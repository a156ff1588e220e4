import json

import pytest

from conftest import assert_clean_error
from evitdeploy.sweep import parse_resolution, read_records
from evitdeploy.errors import UserError

SWEEP_ARGS = ("--model", "efficientvit_b0", "--precision", "fp32,bf16", "--resolution", "64,64x96",
              "--samples", "1", "--warmup", "1", "--count", "5", "--threads", "1")


def test_sweep_runs_every_cell_and_records_failures_in_their_cell(sweep_results):
    results, run = sweep_results
    records = read_records(results)
    assert len(records) == 4
    by_cell = {(r["cell"]["precision"], r["cell"]["resolution"]): r for r in records}
    for resolution in ("64x64", "64x96"):
        ok = by_cell[("fp32", resolution)]
        assert ok["status"] == "ok" and ok["parity"]["passed"] and ok["artifact_bytes"] > 0
        assert ok["bench"]["input_shape"] == [1, 3, *map(int, resolution.split("x"))]
        assert len(ok["bench"]["results"][0]["latency_samples_ms"]) == 5
        failed = by_cell[("bf16", resolution)]
        assert failed["status"] == "failed" and failed["stage"] == "export" and "bf16" in failed["error"]
    assert sorted(json.loads(run.stdout)["ran"]) == sorted(r["cell"]["model"] + "-onnx-" + p + "-" + s for (p, s), r in by_cell.items())


def test_a_rerun_skips_cells_already_present(cli, sweep_results, tmp_path):
    results, _ = sweep_results
    copy = tmp_path / "results.jsonl"
    copy.write_bytes(results.read_bytes())
    run = cli("sweep", *SWEEP_ARGS, "--output", copy, "--artifacts", tmp_path / "art", "--json")
    summary = json.loads(run.stdout)
    assert run.exit_code == 1 and summary["ran"] == [] and len(summary["skipped"]) == 4
    assert len(read_records(copy)) == 4


def test_a_killed_sweep_resumes_and_drops_its_half_written_line(cli, sweep_results, tmp_path):
    results, _ = sweep_results
    lines = results.read_text().splitlines()
    copy = tmp_path / "results.jsonl"
    fp32_64 = next(i for i, l in enumerate(lines) if '"precision": "fp32"' in l and '"resolution": "64x64"' in l)
    kept = [l for i, l in enumerate(lines) if i != fp32_64]
    copy.write_text("\n".join(kept) + "\n" + lines[fp32_64][: len(lines[fp32_64]) // 2])  # the kill
    run = cli("sweep", *SWEEP_ARGS, "--output", copy, "--artifacts", tmp_path / "art", "--json")
    assert json.loads(run.stdout)["ran"] == ["efficientvit_b0-onnx-fp32-64x64"]
    records = read_records(copy)
    assert len(records) == 4 and all(json.loads(l) for l in copy.read_text().splitlines())


def test_retry_failed_runs_failed_cells_again(cli, sweep_results, tmp_path):
    results, _ = sweep_results
    copy = tmp_path / "results.jsonl"
    copy.write_bytes(results.read_bytes())
    run = cli("sweep", *SWEEP_ARGS, "--output", copy, "--artifacts", tmp_path / "art", "--retry-failed", "--json")
    assert sorted(json.loads(run.stdout)["ran"]) == ["efficientvit_b0-onnx-bf16-64x64", "efficientvit_b0-onnx-bf16-64x96"]
    assert len(read_records(copy)) == 6  # appended; the report reads the latest line per cell


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--model", "efficientvit_b9"], "unknown model"),
        (["--model", "efficientvit_b0", "--target", "onxx"], "unknown target"),
        (["--model", "efficientvit_b0", "--resolution", "abc"], "not SIZE or HEIGHTxWIDTH"),
        (["--model", "efficientvit_b0", "--resolution", "100"], "multiples of 32"),
        (["--model", "efficientvit_b0", "--resolution", ","], "no resolutions"),
        (["--model", "efficientvit_b0", "--samples", "0"], "--samples"),
    ],
)
def test_sweep_bad_input(cli, tmp_path, args, fragment):
    assert_clean_error(cli("sweep", *args, "--output", tmp_path / "r.jsonl"), 2, fragment)
    assert not (tmp_path / "r.jsonl").exists()


def test_sweep_refuses_a_results_file_with_a_corrupt_line(cli, tmp_path):
    results = tmp_path / "r.jsonl"
    results.write_text('{"kind": "sweep-cell"}\nnot json\n{"kind": "sweep-cell"}\n')
    assert_clean_error(cli("sweep", *SWEEP_ARGS, "--output", results), 2, "line 2 is not valid JSON")
    assert_clean_error(cli("sweep", *SWEEP_ARGS, "--output", tmp_path), 2, "is not a file")


def test_resolution_parsing():
    assert parse_resolution("224") == (224, 224) and parse_resolution("1024x2048") == (1024, 2048)
    with pytest.raises(UserError):
        parse_resolution("1x2x3")


def test_sweep_help_explains_the_matrix(cli):
    result = cli("sweep", "--help")
    assert result.exit_code == 0 and "CI matrix" in result.stdout
