import json

import pytest

from helpers import SWEEP_ARGS, assert_clean_error
from evitdeploy.sweep import parse_resolution, read_records
from evitdeploy.errors import UserError


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
    fp32_64 = next(i for i, line in enumerate(lines) if '"precision": "fp32"' in line and '"resolution": "64x64"' in line)
    kept = [line for i, line in enumerate(lines) if i != fp32_64]
    copy.write_text("\n".join(kept) + "\n" + lines[fp32_64][: len(lines[fp32_64]) // 2])  # the kill
    run = cli("sweep", *SWEEP_ARGS, "--output", copy, "--artifacts", tmp_path / "art", "--json")
    assert json.loads(run.stdout)["ran"] == ["efficientvit_b0-onnx-fp32-64x64"]
    records = read_records(copy)
    assert len(records) == 4 and all(json.loads(line) for line in copy.read_text().splitlines())


def test_retry_failed_runs_failed_cells_again(cli, sweep_results, tmp_path):
    results, _ = sweep_results
    copy = tmp_path / "results.jsonl"
    copy.write_bytes(results.read_bytes())
    run = cli("sweep", *SWEEP_ARGS, "--output", copy, "--artifacts", tmp_path / "art", "--retry-failed", "--json")
    assert sorted(json.loads(run.stdout)["ran"]) == ["efficientvit_b0-onnx-bf16-64x64", "efficientvit_b0-onnx-bf16-64x96"]
    assert len(read_records(copy)) == 6  # appended; the report reads the latest line per cell


@pytest.mark.fast
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


@pytest.mark.fast
def test_sweep_refuses_a_results_file_with_a_corrupt_line(cli, tmp_path):
    results = tmp_path / "r.jsonl"
    cell = '{"kind": "sweep-cell", "cell": {"model": "efficientvit_b0", "target": "onnx", "precision": "fp32", "height": 64, "width": 64}, "status": "failed"}'
    results.write_text(f"{cell}\nnot json\n{cell}\n")
    assert_clean_error(cli("sweep", *SWEEP_ARGS, "--output", results), 2, "line 2 is not valid JSON")
    assert_clean_error(cli("sweep", *SWEEP_ARGS, "--output", tmp_path), 2, "is a folder")


@pytest.mark.fast
def test_resolution_parsing():
    assert parse_resolution("224") == (224, 224) and parse_resolution("1024x2048") == (1024, 2048)
    with pytest.raises(UserError):
        parse_resolution("1x2x3")


@pytest.mark.fast
def test_sweep_help_explains_the_matrix(cli):
    result = cli("sweep", "--help")
    assert result.exit_code == 0 and "CI matrix" in result.stdout


@pytest.mark.fast
def test_a_sweep_cell_records_a_package_folders_whole_size(tmp_path, monkeypatch):
    """A Core ML artifact's model is a folder (.mlpackage): its size is its files', not the entry's."""
    from evitdeploy import api
    from evitdeploy.artifact import Artifact
    from evitdeploy.models import get_spec
    from evitdeploy.sweep import Cell, CellSettings, run_cell

    package = tmp_path / "cell" / "model.mlpackage"
    (package / "Data").mkdir(parents=True)
    (package / "Data" / "weight.bin").write_bytes(b"w" * 123_457)
    (package / "Manifest.json").write_text("{}")
    spec = get_spec("efficientvit_b0").with_input(1, 64, 64)
    artifact = Artifact(package.parent, package, "coreml", "fp32", spec, {})
    monkeypatch.setattr(api, "export_model", lambda *a, **k: artifact)
    monkeypatch.setattr(api, "check_artifact", lambda *a, **k: {"passed": True, "failures": []})
    monkeypatch.setattr(api, "bench_artifact", lambda *a, **k: {})
    record = run_cell(Cell("efficientvit_b0", "coreml", "fp32", 64, 64), tmp_path, CellSettings())
    assert record["status"] == "ok", record
    assert record["artifact_bytes"] == 123_457 + 2


@pytest.mark.fast
def test_sweep_takes_the_target_aliases_export_takes_under_their_canonical_name():
    from evitdeploy.sweep import plan_cells

    cells = plan_cells(["efficientvit_b0"], ["litert", "tensorrt", "tflite"], ["fp32"], ["64"])
    assert [c.target for c in cells] == ["tflite", "trt"]  # one cell per target: resume keys match
    assert cells[0].key == plan_cells(["efficientvit_b0"], ["tflite"], ["fp32"], ["64"])[0].key


@pytest.mark.fast
def test_a_sweep_size_error_suggests_the_resolution_flag_sweep_has(cli, tmp_path):
    result = cli("sweep", "--model", "efficientvit_b0", "--resolution", "100x200", "--output", tmp_path / "r.jsonl")
    assert_clean_error(result, 2, "multiples of 32", "--resolution 96x192")
    assert "--height" not in result.output and "--width" not in result.output


STUCK_AFTER_CTRL_C = """
import time
import evitdeploy.sweep.interrupt as interrupt
interrupt.GRACE_S = 1.0
with interrupt.sigint_interrupts():
    try:
        print("ready", flush=True)
        time.sleep(60)
    except KeyboardInterrupt:
        print("heard it; now stuck, as in a call to a busy Ray head", flush=True)
        with interrupt.sigint_deferred():
            time.sleep(1.5)  # a record being written: finished before the process ends
            print("record written", flush=True)
        time.sleep(60)
"""


@pytest.mark.parametrize("ignored", [False, True], ids=["from-a-terminal", "sigint-ignored-as-a-background-job"])
def test_a_sweep_stuck_after_ctrl_c_still_ends_130_within_its_grace(ignored):
    """Python takes SIGINT only between bytecodes: if a call hangs after Ctrl-C, the watcher ends
    the process GRACE_S later, after the record in progress, saying "interrupted"."""
    import signal
    import subprocess
    import sys
    import time

    process = subprocess.Popen(
        [sys.executable, "-c", STUCK_AFTER_CTRL_C],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignored else None,
    )
    assert process.stdout.readline() == "ready\n"
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130 and err == "interrupted\n", (process.returncode, out, err)
    assert out.endswith("record written\n") and time.monotonic() - sent < 10
