import json
import shutil

import pytest
import torch

from helpers import assert_clean_error
from evitdeploy import __version__
from evitdeploy.models import create_model, get_spec


@pytest.mark.fast
def test_version(cli):
    result = cli("--version")
    assert result.exit_code == 0 and __version__ in result.stdout


@pytest.mark.fast
def test_models_lists_the_zoo_as_json(cli):
    result = cli("models", "--json")
    names = {m["name"] for m in json.loads(result.stdout)}
    assert result.exit_code == 0 and "efficientvit_l3" in names and "efficientvit_seg_b1_cityscapes" in names


@pytest.mark.fast
def test_doctor_reports_core_backends_and_how_to_install_the_rest(cli):
    result = cli("doctor", "--json")
    assert result.exit_code == 0
    diagnosis = json.loads(result.stdout)
    by_name = {b["name"]: b for b in diagnosis["backends"]}
    assert diagnosis["core_ok"] and by_name["onnxruntime"]["installed"]
    assert "CPUExecutionProvider" in by_name["onnxruntime"]["providers"]
    assert not by_name["tensorrt"]["installed"] and "evitdeploy[tensorrt]" in by_name["tensorrt"]["install"]
    table = cli("doctor")  # the table prints the extra too (Rich would take "[tensorrt]" for markup)
    assert table.exit_code == 0 and "evitdeploy[tensorrt]" in " ".join(table.stdout.split())


def test_check_passes_on_real_photos_with_fp32_parity(cli, b0_artifact):
    result = cli("check", b0_artifact, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["passed"] and report["data"].startswith("scikit-image sample photos")
    assert report["metrics"]["samples"] == 8 and report["metrics"]["top1_agreement"] == 1.0
    assert report["metrics"]["max_abs_error"] <= 1e-4


def test_check_fails_with_exit_1_against_other_weights(cli, b0_artifact, tmp_path):
    torch.save(create_model(get_spec("efficientvit_b0"), seed=123).state_dict(), tmp_path / "other.pt")
    result = cli("check", b0_artifact, "--checkpoint", tmp_path / "other.pt", "--samples", "2", "--json")
    assert result.exit_code == 1
    assert not json.loads(result.stdout)["passed"]


def test_bench_reports_percentiles_raw_samples_and_the_eager_ratio(cli, b0_artifact, tmp_path):
    result = cli("bench", b0_artifact, "--threads", "1", "--warmup", "1", "--iterations", "5", "--against-torch", "--json", "--save", tmp_path / "b.json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    ort_run, eager = summary["results"]
    assert len(ort_run["latency_samples_ms"]) == 5 and ort_run["stats"]["p99_ms"] >= ort_run["stats"]["median_ms"]
    assert summary["host"]["threads"] == 1 and "onnxruntime" in ort_run["versions"]
    assert summary["speedup_vs_torch"] == pytest.approx(eager["stats"]["median_ms"] / ort_run["stats"]["median_ms"])
    assert json.loads((tmp_path / "b.json").read_text())["results"][0]["stats"] == ort_run["stats"]


def test_report_renders_one_table_from_saved_results(cli, b0_artifact, tmp_path):
    assert cli("check", b0_artifact, "--samples", "2", "--save", tmp_path / "c.json").exit_code == 0
    assert cli("bench", b0_artifact, "--iterations", "3", "--warmup", "1", "--save", tmp_path / "b.json").exit_code == 0
    result = cli("report", tmp_path / "c.json", tmp_path / "b.json")
    assert result.exit_code == 0 and "PASS" in result.stdout and "efficientvit_b0" in result.stdout


# ---- bad input: one line naming the problem and the fix, the exit code, no traceback ----


@pytest.mark.fast
@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--model", "efficientvit_b9"], "unknown model"),
        (["--model", "efficientvit_b0", "--target", "onxx"], "unknown target"),
        (["--model", "efficientvit_b0", "--target", "trt", "--precision", "bf16"], "precision 'bf16' is not supported for target 'trt'"),
        (["--model", "efficientvit_b0", "--precision", "fp8"], "precision 'fp8' is not supported"),
        (["--model", "efficientvit_b0", "--height", "100"], "multiples of 32"),
        (["--model", "efficientvit_b0", "--dynamic", "depth"], "unknown dynamic axis"),
        (["--model", "efficientvit_b0", "--checkpoint", "/nonexistent/w.pt"], "checkpoint not found"),
    ],
)
def test_export_bad_input(cli, tmp_path, args, fragment):
    result = cli("export", *args, "--output", tmp_path / "out")
    assert_clean_error(result, 2, fragment)
    assert not (tmp_path / "out").exists()


@pytest.mark.fast
@pytest.mark.parametrize("damage,fragment", [("truncated", "corrupt or truncated"), ("empty", "is empty")])
def test_export_with_a_damaged_checkpoint(cli, tmp_path, damage, fragment):
    path = tmp_path / "w.pt"
    torch.save(create_model(get_spec("efficientvit_b0")).state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3] if damage == "truncated" else b"")
    result = cli("export", "--model", "efficientvit_b0", "--checkpoint", path, "--output", tmp_path / "out")
    assert_clean_error(result, 2, fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pt"]


def test_export_with_a_checkpoint_of_another_model(cli, tmp_path):
    torch.save(create_model(get_spec("efficientvit_b1")).state_dict(), tmp_path / "b1.pt")
    result = cli("export", "--model", "efficientvit_b0", "--checkpoint", tmp_path / "b1.pt", "--output", tmp_path / "out")
    assert_clean_error(result, 2, "does not fit efficientvit_b0", "efficientvit_b1")


def test_export_refuses_an_existing_output_without_force(cli, b0_artifact):
    before = (b0_artifact / "manifest.json").read_text()
    result = cli("export", "--model", "efficientvit_b0", "--output", b0_artifact)
    assert_clean_error(result, 2, "already exists", "--force")
    assert (b0_artifact / "manifest.json").read_text() == before


@pytest.mark.fast
def test_export_into_an_unwritable_place(cli, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = cli("export", "--model", "efficientvit_b0", "--output", blocker / "out")
    assert_clean_error(result, 2, "is not a folder")


@pytest.mark.parametrize("verb", ["check", "bench"])
def test_tampered_artifact_fails_its_sha256(cli, b0_artifact, tmp_path, verb):
    copy = tmp_path / "copy"
    shutil.copytree(b0_artifact, copy)
    (copy / "model.onnx").write_bytes((copy / "model.onnx").read_bytes()[:1000])
    assert_clean_error(cli(verb, copy), 2, "does not match the sha256")


@pytest.mark.fast
@pytest.mark.parametrize("verb", ["check", "bench"])
@pytest.mark.parametrize("content", [b"", b"\x08\x07garbage-not-onnx" * 10])
def test_empty_or_corrupt_onnx_file(cli, tmp_path, verb, content):
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    assert_clean_error(cli(verb, path, "--model", "efficientvit_b0"), 2, "ONNX Runtime cannot load")


@pytest.mark.fast
@pytest.mark.parametrize("verb", ["check", "bench"])
def test_missing_artifact_and_bare_onnx_without_a_model_name(cli, tmp_path, verb):
    assert_clean_error(cli(verb, tmp_path / "nope"), 2, "artifact not found")
    (tmp_path / "m.onnx").write_bytes(b"x")
    assert_clean_error(cli(verb, tmp_path / "m.onnx"), 2, "--model")


def test_static_artifact_refuses_another_input_size(cli, b0_artifact):
    assert_clean_error(cli("check", b0_artifact, "--height", "256"), 2, "static height", "--dynamic")


def test_check_with_a_corrupt_data_file(cli, b0_artifact, tmp_path):
    (tmp_path / "d.npz").write_bytes(b"not a zip")
    assert_clean_error(cli("check", b0_artifact, "--data", tmp_path / "d.npz"), 2, "cannot read")


@pytest.mark.fast
def test_report_of_a_missing_file(cli, tmp_path):
    assert_clean_error(cli("report", tmp_path / "none.json"), 2, "not found")


def test_b1_cityscapes_segmentation_at_full_resolution_keeps_fp32_parity(cli, tmp_path):
    folder = tmp_path / "seg"
    assert cli("export", "--model", "efficientvit_seg_b1_cityscapes", "--output", folder).exit_code == 0
    result = cli("check", folder, "--samples", "2", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["input_shape"] == [1, 3, 1024, 2048]
    assert report["metrics"]["pixel_agreement"] >= 0.999 and report["metrics"]["max_abs_error"] <= 1e-4


# ---- usage errors and --json refusals: the same one-line contract as every other error ----


@pytest.mark.fast
@pytest.mark.parametrize(
    "args,fragment",
    [
        (["export", "--bogus"], "error: no such option: --bogus — see evitdeploy export --help"),
        (["bench", "x", "--count", "abc"], "invalid value for '--count'"),
        (["export", "--model"], "option '--model' requires an argument — see evitdeploy export --help"),
        (["check"], "missing argument"),
        (["nosuch"], "no such command 'nosuch' — see evitdeploy --help"),
        (["gate", "a.json", "--alpha", "x"], "invalid value for '--alpha'"),
        ([], "missing command"),
    ],
)
def test_usage_errors_are_one_error_line(cli, args, fragment):
    result = cli(*args)
    assert_clean_error(result, 2, fragment)
    assert "╭" not in result.stderr and "Usage:" not in result.stderr


@pytest.mark.fast
def test_a_newline_in_a_path_does_not_split_the_error_line(cli, tmp_path):
    result = cli("check", tmp_path / "a\nb")
    assert_clean_error(result, 2, "artifact not found", "a\\nb")
    result = cli("export", "--model", "efficientvit_b0", "--height", "6\n4")
    assert_clean_error(result, 2, "invalid value for '--height'")


@pytest.mark.fast
@pytest.mark.parametrize(
    "args,code",
    [
        (["check", "/nonexistent/art", "--json"], 2),
        (["report", "/nonexistent/r.json", "--json"], 2),
        (["export", "--model", "efficientvit_b9", "--json"], 2),
        (["models", "--json", "--bogus"], 2),  # a usage error with --json on the line
        (["bench", "x", "--json", "--count", "abc"], 2),
    ],
)
def test_json_refusals_print_the_error_as_json_on_stdout(cli, args, code):
    result = cli(*args)
    assert_clean_error(result, code)
    document = json.loads(result.stdout)
    assert set(document) == {"error", "hint", "exit_code"} and document["exit_code"] == code
    assert document["error"] and document["error"] in result.stderr.replace("\\n", "\n")


@pytest.mark.fast
def test_help_and_version_still_exit_0(cli):
    assert cli("--help").exit_code == 0 and cli("export", "--help").exit_code == 0
    assert cli("--version").exit_code == 0
