import base64
import json
import os
import re
import stat

import pytest

from conftest import assert_clean_error
from evitdeploy.plots import loglog_slope, pareto_front

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


@pytest.mark.parametrize(
    "content,suffix,fragment",
    [
        ("", ".jsonl", "hold no results"),
        ("[]", ".json", "hold no results"),
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


def test_loglog_slope_and_pareto_front():
    assert loglog_slope([0.05, 0.5, 5.0], [2.0, 20.0, 200.0]) == pytest.approx(1.0)
    assert loglog_slope([1.0, 4.0], [1.0, 16.0]) == pytest.approx(2.0)
    points = [(10.0, 1e-6), (5.0, 1e-3), (7.0, 1e-2), (3.0, 1e-1)]
    assert pareto_front(points) == [(3.0, 1e-1), (5.0, 1e-3), (10.0, 1e-6)]


def test_report_help_names_the_outputs(cli):
    result = cli("report", "--help")
    assert result.exit_code == 0 and "report.html" in result.stdout and "log-log" in result.stdout
