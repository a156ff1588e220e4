import base64
import json
import os
import re
import socket
import stat

import pytest

from helpers import assert_clean_error
from evitdeploy.plots import loglog_slope, pareto_front
from evitdeploy.sweep import read_records

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_report_merges_sweep_cells_into_rows(cli, sweep_results):
    results, _ = sweep_results
    run = cli("report", results, "--json")
    assert run.exit_code == 0, run.output
    rows = {(r["precision"], r["resolution"]): r for r in json.loads(run.stdout)["rows"]}
    assert len(rows) == 4
    ok = rows[("fp32", "64x96")]
    assert ok["parity"] == "PASS" and ok["median_ms"] > 0 and ok["p99_ms"] >= ok["median_ms"] and ok["size_mb"] > 1
    assert ok["megapixels"] == pytest.approx(64 * 96 / 1e6) and ok["agreement"] == 1.0
    assert rows[("bf16", "64x64")]["status"] == "failed" and "at export" in rows[("bf16", "64x64")]["error"] and "bf16" in rows[("bf16", "64x64")]["error"]


def test_markdown_report_with_plots_beside_it(cli, sweep_results, tmp_path):
    results, _ = sweep_results
    run = cli("report", results, "-o", tmp_path / "report.md")
    assert run.exit_code == 0, run.output
    text = (tmp_path / "report.md").read_text()
    assert "| model | target | precision | resolution |" in text and "efficientvit_b0" in text
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert sorted(images) == ["report-drift-vs-latency.png", "report-latency-vs-megapixels.png"]
    for name in images:
        assert (tmp_path / name).read_bytes().startswith(PNG_MAGIC)
    assert "bf16" in text and "not supported" in text  # the failed cells' reasons are listed


def test_html_report_is_one_self_contained_file(cli, sweep_results, tmp_path):
    results, _ = sweep_results
    run = cli("report", results, "-o", tmp_path / "report.html", "--title", "B0 sweep")
    assert run.exit_code == 0, run.output
    page = (tmp_path / "report.html").read_text()
    assert "<table>" in page and "B0 sweep" in page
    sources = re.findall(r"src='([^']+)'", page)
    assert len(sources) == 2 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert base64.b64decode(sources[0].split(",", 1)[1]).startswith(PNG_MAGIC)
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "report.html").stat().st_mode) == 0o666 & ~umask  # not mkstemp's private 0600


def test_report_columns_can_be_chosen(cli, sweep_results):
    results, _ = sweep_results
    run = cli("report", results, "--columns", "model,resolution,median_ms")
    assert run.exit_code == 0 and "median ms" in run.stdout and "parity" not in run.stdout


def test_report_merges_check_and_bench_files_of_one_artifact(cli, b0_artifact, tmp_path):
    assert cli("check", b0_artifact, "--samples", "1", "--save", tmp_path / "c.json").exit_code == 0
    assert cli("bench", b0_artifact, "--count", "3", "--warmup", "1", "--against-torch", "--save", tmp_path / "b.json").exit_code == 0
    run = cli("report", tmp_path / "c.json", tmp_path / "b.json", "--json", "--columns", "model,parity,median_ms,speedup_vs_torch")
    (row,) = json.loads(run.stdout)["rows"]
    assert row["parity"] == "PASS" and row["median_ms"] > 0 and row["speedup_vs_torch"] > 0 and row["resolution"] == "128x128"


@pytest.mark.fast
@pytest.mark.parametrize(
    "content,suffix,fragment",
    [
        ("", ".jsonl", "0 results; report needs at least 1"),
        ("[]", ".json", "0 results; report needs at least 1"),
        ("{oops", ".json", "not valid JSON"),
        ('{"kind": "gate"}', ".json", "kind 'gate'"),
        ('{"kind": "other"}\n{broken\n{"kind": "other"}\n', ".jsonl", "line 2 is not valid JSON"),
        ('{"kind": "sweep-cell", "status": "ok"}\n', ".jsonl", "line 1 is not valid: field `cell` is missing"),
        ('{"kind": "bench", "results": []}', ".json", "field `schema` is missing"),
        ('{"kind": "bench", "schema": 2, "results": "fast"}', ".json", "field `results`: input should be a valid array"),
    ],
)
def test_report_bad_result_files(cli, tmp_path, content, suffix, fragment):
    path = tmp_path / f"results{suffix}"
    path.write_text(content)
    assert_clean_error(cli("report", path), 2, fragment)


def test_report_bad_options(cli, sweep_results, tmp_path):
    results, _ = sweep_results
    assert_clean_error(cli("report", tmp_path / "none.json"), 2, "not found")
    assert_clean_error(cli("report", results, "--columns", "model,latency"), 2, "unknown column 'latency'", "median_ms")
    assert_clean_error(cli("report", results, "-o", tmp_path / "report.pdf"), 2, "report.md or report.html")
    assert_clean_error(cli("report", results, "-o", tmp_path / "missing" / "report.md"), 2, "does not exist")
    assert not (tmp_path / "report.pdf").exists()


def _ok_cell(sweep_results) -> dict:
    """The fixture sweep's fp32 64x64 line: benched here, so it names this host as its bench node."""
    return next(r for r in read_records(sweep_results[0]) if r["status"] == "ok" and r["cell"]["resolution"] == "64x64")


def _on_farm(record: dict, host: str, profile=None) -> dict:
    """The same cell as a Ray farm records it: exported on the head node, benched on `host`."""
    return {
        **record,
        "cell": {**record["cell"], "profile": profile},
        "executor": "ray",
        "nodes": {"export": {"host": "head", "node_id": "n0"}, "bench": {"host": host, "node_id": f"n-{host}", "profiles": [profile] if profile else []}},
        "timeline": {"export": [1700000000.0, 1700000060.0], "bench": [1700000061.0, 1700000070.0]},
    }


def _failed_at_export(record: dict) -> dict:
    """The same cell stopped before its bench: no bench node, no parity, no latency."""
    kept = {k: v for k, v in record.items() if k not in ("bench", "parity", "artifact_bytes")}
    return {**kept, "status": "failed", "stage": "export", "error": "out of memory", "nodes": {"export": record["nodes"]["export"]}}


def _results(tmp_path, *records: dict):
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _json_rows(cli, path) -> list[dict]:
    run = cli("report", path, "--json")
    assert run.exit_code == 0, run.output
    return json.loads(run.stdout)["rows"]


def test_one_cell_benched_on_two_farm_devices_and_here_is_three_rows(cli, sweep_results, tmp_path):
    local = _ok_cell(sweep_results)
    path = _results(tmp_path, local, _on_farm(local, "rack-1", "x86-cpu"), _on_farm(local, "rack-2"))
    rows = {r["device"]: r for r in _json_rows(cli, path)}
    assert sorted(rows) == sorted([socket.gethostname(), "x86-cpu@rack-1", "rack-2"])
    assert all(r["median_ms"] > 0 and r["parity"] == "PASS" and r["resolution"] == "64x64" for r in rows.values())
    farm = rows["x86-cpu@rack-1"]
    assert farm["profile"] == "x86-cpu" and farm["bench_node"] == {"host": "rack-1", "node_id": "n-rack-1", "profiles": ["x86-cpu"]}
    assert "profile" not in rows["rack-2"] and "profile" not in rows[socket.gethostname()]


def test_terminal_markdown_and_html_reports_show_the_device(cli, sweep_results, tmp_path):
    local = _ok_cell(sweep_results)
    path = _results(tmp_path, local, _on_farm(local, "rack-1", "x86-cpu"))
    run = cli("report", path)
    assert run.exit_code == 0 and "device" in run.stdout and "x86-cpu@rack-1" in run.stdout
    assert max(map(len, run.stdout.splitlines())) <= 160
    assert cli("report", path, "-o", tmp_path / "report.md").exit_code == 0
    text = (tmp_path / "report.md").read_text()
    assert "| model | target | precision | resolution | device |" in text and "| x86-cpu@rack-1 |" in text
    assert (tmp_path / "report-latency-vs-megapixels.png").read_bytes().startswith(PNG_MAGIC)
    assert cli("report", path, "-o", tmp_path / "report.html").exit_code == 0
    page = (tmp_path / "report.html").read_text()
    assert "<th>device</th>" in page and "x86-cpu@rack-1" in page


def test_a_sweep_line_older_than_nodes_still_reports(cli, sweep_results, tmp_path):
    old = {k: v for k, v in _ok_cell(sweep_results).items() if k not in ("nodes", "timeline", "executor")}
    path = _results(tmp_path, old)
    (row,) = _json_rows(cli, path)
    assert row["device"] is None and row["median_ms"] > 0 and row["status"] == "ok" and "bench_node" not in row
    run = cli("report", path)
    assert run.exit_code == 0 and "median ms" in run.stdout and "device" not in run.stdout  # no device known: no column


def test_a_retried_cell_replaces_its_failure_on_the_device_it_reached(cli, sweep_results, tmp_path):
    farm = _on_farm(_ok_cell(sweep_results), "rack-1", "x86-cpu")
    (row,) = _json_rows(cli, _results(tmp_path, _failed_at_export(farm), farm))
    assert row["device"] == "x86-cpu@rack-1" and row["status"] == "ok" and "error" not in row
    (row,) = _json_rows(cli, _results(tmp_path, _failed_at_export(farm)))
    assert row["device"] == "x86-cpu" and row["status"] == "failed"  # never benched: the profile it was meant for


@pytest.mark.fast
def test_loglog_slope_and_pareto_front():
    assert loglog_slope([0.05, 0.5, 5.0], [2.0, 20.0, 200.0]) == pytest.approx(1.0)
    assert loglog_slope([1.0, 4.0], [1.0, 16.0]) == pytest.approx(2.0)
    points = [(10.0, 1e-6), (5.0, 1e-3), (7.0, 1e-2), (3.0, 1e-1)]
    assert pareto_front(points) == [(3.0, 1e-1), (5.0, 1e-3), (10.0, 1e-6)]


@pytest.mark.fast
def test_report_help_names_the_outputs(cli):
    result = cli("report", "--help")
    assert result.exit_code == 0 and "report.html" in result.stdout and "log-log" in result.stdout
