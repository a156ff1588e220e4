"""Files from outside (artifact and bundle manifests, reference data, result files, paths)
are validated at the door: one `error:` line naming the file and field, exit 2, no traceback,
nothing left behind. Every mutation keeps the manifest's sha256 values consistent, so it reaches
the parser instead of the integrity check."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import assert_clean_error
from fuzz.mutators import rehash


@pytest.fixture(scope="module")
def small_artifact(b0_64_artifact) -> Path:
    return b0_64_artifact


@pytest.fixture(scope="module")
def small_bundle(b0_64_bundle) -> Path:
    return b0_64_bundle


def _edited(source: Path, destination: Path, edit) -> Path:
    """A copy of `source` with its manifest edited by `edit(manifest, folder)`, sha256 values redone."""
    shutil.copytree(source, destination)
    manifest = json.loads((destination / "manifest.json").read_text())
    edit(manifest, destination)
    (destination / "manifest.json").write_text(json.dumps(manifest))
    rehash(destination)
    return destination


def _set(path: str, value):
    def edit(manifest, _folder):
        *keys, last = path.split(".")
        for key in keys:
            manifest = manifest[key]
        if value is KeyError:
            del manifest[last]
        else:
            manifest[last] = value

    return edit


ARTIFACT_MUTATIONS = {
    "files is a list": ("files", []),
    "spec is a string": ("spec", "efficientvit_b0"),
    "target missing": ("target", KeyError),
    "input_shape of 3 dims": ("spec.input_shape", [1, 3, 64]),
    "num_classes a string": ("spec.num_classes", "1000"),
    "attention eps a string": ("spec.attention_eps", "1e-5"),
    "mean too short": ("spec.mean", [0.5]),
}


@pytest.mark.parametrize("what", ARTIFACT_MUTATIONS)
def test_a_malformed_artifact_manifest_is_one_line_naming_the_field(cli, small_artifact, tmp_path, what):
    field, value = ARTIFACT_MUTATIONS[what]
    folder = _edited(small_artifact, tmp_path / "art", _set(field, value))
    for verb in (["check", folder, "--samples", "1"], ["bench", folder, "--count", "1", "--warmup", "0"]):
        assert_clean_error(cli(*verb), 2, "manifest.json", f"`{field.split('.')[0]}")
    assert_clean_error(cli("gate", "--interleave", small_artifact, folder, "--count", "5"), 2, f"`{field.split('.')[0]}")


@pytest.mark.parametrize("target", ["tpu", "onnxruntime"])  # unknown, and an alias (manifests spell the name)
def test_a_manifest_naming_a_target_the_registry_does_not_know_is_one_line(cli, small_artifact, tmp_path, target):
    folder = _edited(small_artifact, tmp_path / "art", _set("target", target))
    assert_clean_error(cli("check", folder, "--samples", "1"), 2, f"names target {target!r}", "known targets: onnx")


def test_a_manifest_whose_spec_disagrees_with_the_model_file_is_refused(cli, small_artifact, tmp_path):
    folder = _edited(small_artifact, tmp_path / "art", _set("spec.input_shape", [1, 3, 96, 96]))
    assert_clean_error(cli("bench", folder, "--count", "1"), 2, "does not match its manifest", "[1, 3, 64, 64]")


BUNDLE_MUTATIONS = {
    "target missing": ("target", KeyError),
    "spec missing": ("spec", KeyError),
    "precision missing": ("precision", KeyError),
    "model_file missing": ("model_file", KeyError),
    "tolerance a string": ("bundle.tolerances.min_cosine", "0.9"),
    "host machines a string": ("bundle.profile.host_machines", "x86_64"),
}


def _verify_py(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-I", "verify.py", *args], cwd=folder, capture_output=True, text=True, timeout=300)


def _assert_verify_py_error(run: subprocess.CompletedProcess, code: int, *fragments: str) -> None:
    assert run.returncode == code, run.stderr + run.stdout
    assert "Traceback" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, run.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


@pytest.mark.parametrize("what", BUNDLE_MUTATIONS)
def test_a_malformed_bundle_manifest_is_refused_by_verify_and_verify_py(cli, small_bundle, tmp_path, what):
    field, value = BUNDLE_MUTATIONS[what]
    folder = _edited(small_bundle, tmp_path / "bundle", _set(field, value))
    assert_clean_error(cli("verify", folder, "--count", "1"), 2, f"`{field}`")
    _assert_verify_py_error(_verify_py(folder, "--count", "1"), 2, f"`{field}`")


def _reference(payload):
    def edit(_manifest, folder):
        if callable(payload):
            payload(folder / "reference.npz")
        else:
            (folder / "reference.npz").write_bytes(payload)

    return edit


REFERENCE_MUTATIONS = {
    "random bytes": (_reference(os.urandom(4096)), "reference.npz"),
    "a pickled object array": (_reference(lambda p: np.save(open(p, "wb"), np.array([{"x": 1}], dtype=object), allow_pickle=True)), "reference.npz"),
    "wrong keys": (_reference(lambda p: np.savez(p, images=np.zeros((1, 3, 64, 64), np.float32))), "'inputs'"),
    "wrong input shape": (
        _reference(lambda p: np.savez(p, inputs=np.zeros((1, 3, 32, 32), np.float32), expected=np.zeros((1, 1000), np.float32))),
        "'inputs' has shape",
    ),
    "a truncated model": (lambda _m, folder: (folder / "model.onnx").write_bytes((folder / "model.onnx").read_bytes()[:2000]), "model.onnx cannot be loaded"),
}


@pytest.mark.parametrize("what", REFERENCE_MUTATIONS)
def test_broken_reference_data_or_model_in_a_rehashed_bundle_is_refused(cli, small_bundle, tmp_path, what):
    edit, fragment = REFERENCE_MUTATIONS[what]
    folder = _edited(small_bundle, tmp_path / "bundle", edit)
    assert_clean_error(cli("verify", folder, "--count", "1"), 2, fragment)
    _assert_verify_py_error(_verify_py(folder, "--count", "1"), 2, fragment)


def test_verify_py_reports_drift_when_the_device_anticorrelates_with_the_making_host(small_bundle, tmp_path):
    def negate_host_outputs(_manifest, folder):
        arrays = dict(np.load(folder / "reference.npz"))
        arrays["host_outputs"] = -arrays["expected"]
        np.savez(folder / "reference.npz", **arrays)

    folder = _edited(small_bundle, tmp_path / "bundle", negate_host_outputs)
    run = _verify_py(folder, "--count", "1", "--json")
    assert run.returncode in (0, 1) and "Traceback" not in run.stderr, run.stderr
    assert json.loads(run.stdout)["drift_from_making_host"]["cosine_min"] < 0


def test_a_symlink_inside_a_bundle_is_refused_even_to_an_identical_file(cli, small_bundle, tmp_path):
    def link_readme(_manifest, folder):
        (folder / "README.txt").rename(tmp_path / "README-elsewhere.txt")
        (folder / "README.txt").symlink_to(tmp_path / "README-elsewhere.txt")

    folder = _edited(small_bundle, tmp_path / "bundle", link_readme)
    assert_clean_error(cli("verify", folder, "--count", "1"), 2, "symbolic link")
    _assert_verify_py_error(_verify_py(folder, "--count", "1"), 2, "symbolic link")


def _bench_result() -> dict:
    return {
        "kind": "bench",
        "schema": 2,
        "model": "efficientvit_b0",
        "target": "onnx",
        "precision": "fp32",
        "input_shape": [1, 3, 64, 64],
        "host": {"cpu": "x", "logical_cpus": 2, "threads": 2, "os": "Linux", "machine": "x86_64"},
        "results": [
            {
                "label": "onnx/fp32",
                "input_shape": [1, 3, 64, 64],
                "backend": "onnxruntime",
                "providers": ["CPUExecutionProvider"],
                "stats": {"count": 6, "median_ms": 1.0, "p90_ms": 1.1, "p99_ms": 1.2, "mean_ms": 1.03, "std_ms": 0.1, "throughput_per_s": 1000.0},
                "latency_samples_ms": [1.0, 1.1, 0.9, 1.0, 1.2, 1.0],
            }
        ],
    }


@pytest.mark.fast
@pytest.mark.parametrize(
    "field,value,fragment",
    [
        ("results", "fast", "`results`"),
        ("model", 5, "`model`"),
        ("results", "deep", "not valid JSON"),
    ],
)
def test_report_refuses_malformed_results_in_one_line(cli, tmp_path, field, value, fragment):
    result = _bench_result()
    path = tmp_path / "bench.json"
    if value == "deep":
        path.write_text(json.dumps(result)[:-1] + ', "extra": ' + "[" * 100_000 + "]" * 100_000 + "}")
    else:
        path.write_text(json.dumps({**result, field: value}))
    assert_clean_error(cli("report", path), 2, fragment)


@pytest.mark.fast
def test_gate_refuses_a_baseline_whose_host_is_a_string(cli, tmp_path):
    (tmp_path / "new.json").write_text(json.dumps(_bench_result()))
    (tmp_path / "old.json").write_text(json.dumps({**_bench_result(), "host": "my laptop"}))
    assert_clean_error(cli("gate", tmp_path / "new.json", "--baseline", tmp_path / "old.json"), 2, "old.json", "`host`")


@pytest.mark.fast
def test_rich_markup_in_result_data_prints_as_written(cli, tmp_path):
    (tmp_path / "bench.json").write_text(json.dumps({**_bench_result(), "model": "[/]"}))
    result = cli("report", tmp_path / "bench.json")
    assert result.exit_code == 0, result.output
    assert "[/]" in result.stdout


def test_markup_in_a_deploy_output_path_prints_as_written(cli, tmp_path):
    result = cli("deploy", "--profile", "x86-cpu", "--model", "efficientvit_b0", "--height", "64", "--width", "64", "--samples", "1", "-o", tmp_path / "[/]")
    assert result.exit_code in (0, 1), result.output
    assert "[/]" in result.stdout and (tmp_path / "[/]" / "manifest.json").is_file()


@pytest.mark.fast
@pytest.mark.parametrize("verb", ["check", "report", "bench", "verify"])
def test_a_file_name_too_long_for_the_filesystem_is_one_error_line(cli, tmp_path, verb):
    assert_clean_error(cli(verb, tmp_path / ("x" * 300 + ".json")), 2)


@pytest.mark.fast
def test_a_refused_deploy_leaves_no_new_parent_folders(cli, tmp_path):
    result = cli("deploy", "--profile", "x86-cpu", "--model", "efficientvit_b0", "--height", "65", "-o", tmp_path / "sub" / "dir" / "b")
    assert_clean_error(result, 2)
    assert list(tmp_path.iterdir()) == []


def test_an_output_that_fails_midway_removes_the_parent_folders_it_created(tmp_path):
    from evitdeploy.files import staged_folder

    (tmp_path / "kept").mkdir()
    with pytest.raises(RuntimeError):
        with staged_folder(tmp_path / "kept" / "sub" / "dir" / "artifact") as staging:
            (staging / "model.onnx").write_bytes(b"half")
            raise RuntimeError("the exporter failed after writing")
    assert [p.name for p in tmp_path.rglob("*")] == ["kept"]


@pytest.mark.fast
def test_sweep_with_a_corrupt_results_file_creates_nothing(cli, tmp_path):
    results = tmp_path / "results.jsonl"
    results.write_text("{not json}\n" + json.dumps({"kind": "sweep-cell"}) + "\n")
    before = sorted(tmp_path.iterdir())
    assert_clean_error(cli("sweep", "--model", "efficientvit_b0", "--resolution", "64", "-o", results), 2, "line 1")
    assert sorted(tmp_path.iterdir()) == before


@pytest.mark.fast
def test_a_sweep_line_of_the_wrong_shape_is_refused_naming_its_line(cli, tmp_path):
    results = tmp_path / "results.jsonl"
    results.write_text(json.dumps({"kind": "sweep-cell", "cell": "b0", "status": "ok"}) + "\n")
    assert_clean_error(cli("report", results), 2, "line 1", "`cell`")


@pytest.mark.fast
def test_photos_for_a_far_other_aspect_ratio_are_cropped_before_resizing():
    from evitdeploy.data import load_inputs
    from evitdeploy.models import get_spec

    # resizing a whole photo to cover 99968 rows first asked for a 120 GB intermediate
    inputs, _ = load_inputs(get_spec("efficientvit_b0"), 99968, 64, count=1)
    assert inputs.shape == (1, 3, 99968, 64) and np.isfinite(inputs).all()


def test_an_unwritable_save_path_is_refused_before_the_work(cli, tmp_path):
    result = cli(
        "deploy",
        "--profile",
        "x86-cpu",
        "--model",
        "efficientvit_b0",
        "--height",
        "64",
        "--width",
        "64",
        "--samples",
        "1",
        "-o",
        tmp_path / "bundle",
        "--save",
        tmp_path / ("n" * 300),
    )
    assert_clean_error(result, 2, "--save file", "this filesystem allows")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.fast
def test_sweep_with_an_unusable_artifacts_folder_creates_nothing(cli, tmp_path):
    result = cli("sweep", "--model", "efficientvit_b0", "--resolution", "64", "-o", tmp_path / "results.jsonl", "--artifacts", tmp_path / ("n" * 300))
    assert_clean_error(result, 2, "--artifacts folder")
    assert list(tmp_path.iterdir()) == []


def test_json_stays_json_when_onnx_runtime_prints_its_fallback_notice(cli, small_artifact, tmp_path):
    def bad_utf8_in_the_graph(_manifest, folder):
        model = bytearray((folder / "model.onnx").read_bytes())
        model[model.find(b"image") + 1] = 0x9E  # onnxruntime prints "EP Error ... Falling back" on stdout
        (folder / "model.onnx").write_bytes(bytes(model))

    folder = _edited(small_artifact, tmp_path / "art", bad_utf8_in_the_graph)
    result = cli("check", folder, "--samples", "1", "--json")
    assert_clean_error(result, 2, "ONNX Runtime cannot load")
    assert json.loads(result.stdout)["exit_code"] == 2


def test_save_into_a_new_folder_makes_it(cli, small_artifact, tmp_path):
    result = cli("bench", small_artifact, "--count", "2", "--warmup", "0", "--save", tmp_path / "sub" / "dir" / "bench.json")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "sub" / "dir" / "bench.json").read_text())["kind"] == "bench"


@pytest.mark.fast
def test_sweep_refuses_an_artifacts_path_that_is_a_file(cli, tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"x")
    result = cli("sweep", "--model", "efficientvit_b0", "--resolution", "64", "-o", tmp_path / "results.jsonl", "--artifacts", tmp_path / "junk.npz")
    assert_clean_error(result, 2, "is a regular file, not a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.npz"]
