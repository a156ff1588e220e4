"""OpenVINO, the backend added as one folder: FP32 / BF16 / INT8 IR, explicit compile settings,
the plan's INT8 keeping the trained digits' accuracy, and a bundle a device verifies with numpy +
openvino only."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("openvino", reason="the openvino extra is not installed (pip install 'evitdeploy[openvino]')")

from helpers import BLOCKED, assert_clean_error, on_device
from evitdeploy import api
from evitdeploy.backends import get_backend
from evitdeploy.backends.openvino.device import has_bf16
from evitdeploy.precision.options import PrecisionOptions
from evitdeploy.requests import BenchRequest, ExportRequest


def cpu_has_bf16() -> bool:
    import openvino as ov

    return has_bf16(ov.Core())


@pytest.fixture(scope="module")
def fp32_ir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ov") / "b0-fp32"
    return api.export_model(ExportRequest(model="efficientvit_b0", target="openvino", output=folder, height=64, width=64))


def test_fp32_ir_records_explicit_settings_and_matches_pytorch(fp32_ir):
    manifest = fp32_ir.manifest
    assert manifest["target"] == "openvino" and fp32_ir.model_file.name == "model.openvino"
    assert {p.name for p in fp32_ir.model_file.iterdir()} == {"model.xml", "model.bin"}
    # f32, never OpenVINO's silent default (bf16 on a BF16 CPU)
    assert manifest["export"]["openvino"] == {"inference_precision": "f32", "performance_hint": "LATENCY", "fake_quantize_ops": 0}
    check = manifest["validation"]["checks"][0]
    assert check["passed"] and check["metrics"]["max_abs_error"] < 1e-4


def test_bench_states_the_compile_settings(fp32_ir):
    summary = api.bench_artifact(BenchRequest(path=fp32_ir.folder, threads=2, warmup=2, count=5))
    result = summary["results"][0]
    assert result["label"] == "openvino/fp32" and result["providers"] == ["OpenVINO CPU (f32, LATENCY, 2 threads)"]
    assert result["stats"]["median_ms"] > 0


def test_check_passes_on_the_sample_photos(cli, fp32_ir):
    result = cli("check", fp32_ir.folder, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["passed"]


def test_bf16_is_refused_in_one_line_on_a_cpu_without_it(cli, tmp_path, monkeypatch):
    monkeypatch.setattr("evitdeploy.backends.openvino.export.has_bf16", lambda core: False)
    result = cli("export", "-m", "efficientvit_b0", "-t", "openvino", "-p", "bf16", "--height", "64", "--width", "64", "-o", tmp_path / "bf16")
    assert_clean_error(result, 2, "this CPU has no BF16", "export --precision fp32 or int8")
    assert not (tmp_path / "bf16").exists()


def test_a_damaged_bare_ir_is_one_line(cli, fp32_ir, tmp_path):
    """A bare model.openvino folder (no manifest) whose IR is damaged: one line, exit 2."""
    import shutil

    bare = tmp_path / "model.openvino"
    shutil.copytree(fp32_ir.model_file, bare)
    (bare / "model.xml").write_text("<net><layers>")
    result = cli("check", bare, "--model", "efficientvit_b0", "--height", "64", "--width", "64")
    assert_clean_error(result, 2, "OpenVINO cannot load", "re-run the export")


def test_a_precision_openvino_does_not_build_is_refused(cli, tmp_path):
    result = cli("export", "-m", "efficientvit_b0", "-t", "openvino", "-p", "fp16", "-o", tmp_path / "x")
    assert_clean_error(result, 2, "precision 'fp16' is not supported for target 'openvino'", "fp32, bf16, int8")


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no BF16 (needs AVX512-BF16 or AMX)")
def test_bf16_ir_runs_at_bf16_and_keeps_the_bf16_bar(tmp_path):
    artifact = api.export_model(ExportRequest(model="efficientvit_b0", target="openvino", precision="bf16", output=tmp_path / "bf16", height=64, width=64))
    assert artifact.manifest["export"]["openvino"]["inference_precision"] == "bf16"
    assert artifact.manifest["precision_plan"]["summary"]["nodes"]["fp32"] > 0  # the attention core, recorded
    assert artifact.manifest["validation"]["checks"][0]["metrics"]["cosine_min"] >= 0.99


def _digits_logits(runner, inputs):
    return np.concatenate([runner.infer({"image": inputs[i : i + 1]})["logits"] for i in range(len(inputs))])


def test_trained_digits_int8_follows_the_plan_and_keeps_accuracy(tmp_path, digits_checkpoint_path):
    """Real weights: INT8 IR (the plan's QDQ) vs PyTorch FP32 on the held-out digits: per-image min
    cosine >= 0.99 and top-1 within 0.5 point (NNCF's default INT8 keeps 0.53-0.61 here)."""
    import torch

    from evitdeploy.backends.openvino.runner import OpenVINORunner
    from evitdeploy.data import preprocess
    from evitdeploy.device.metrics import cosine_per_sample
    from evitdeploy.models import build_model, trained

    train, _ = trained.digits_images("train")
    np.savez(tmp_path / "calib.npz", image=train[:64])
    artifact = api.export_model(
        ExportRequest(
            model="efficientvit_b0",
            target="openvino",
            precision="int8",
            output=tmp_path / "int8",
            checkpoint=digits_checkpoint_path,
            height=64,
            width=64,
            reduced=PrecisionOptions(calib=str(tmp_path / "calib.npz"), calib_count=64),
        )
    )
    settings = artifact.manifest["export"]["openvino"]
    # made for any x86 (the default): 7-bit weights (NNCF's overflow fix) and an f32 float part every x86 compiles
    assert settings["fake_quantize_ops"] > 0 and settings["inference_precision"] == "f32"
    assert artifact.manifest["int8_kernels"]["target"] == "any"
    assert artifact.manifest["precision_plan"]["summary"]["nodes"]["fp32"] > 0
    test_images, labels = trained.digits_images("test")
    inputs = preprocess(list(test_images), trained.digits_spec(), 64, 64)
    with OpenVINORunner(artifact.model_file, artifact.spec, artifact.manifest, threads=2) as runner:
        logits = _digits_logits(runner, inputs)
    reference, _ = build_model(trained.digits_spec(), digits_checkpoint_path, 0, None)
    with torch.no_grad():
        fp32 = reference.eval()(torch.from_numpy(inputs)).numpy()
    assert cosine_per_sample(fp32, logits).min() >= 0.99
    accuracy, reference_accuracy = trained.classification_accuracy(logits, labels), trained.classification_accuracy(fp32, labels)
    assert accuracy >= reference_accuracy - 0.005, (accuracy, reference_accuracy)


def test_intel_cpu_bundle_verifies_with_only_numpy_and_openvino(tmp_path, cli):
    folder = tmp_path / "bundle"
    result = cli("deploy", "--profile", "intel-cpu", "-m", "efficientvit_b0", "--height", "64", "--width", "64", "--precision", "fp32", "-o", folder, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["target"] == "openvino" and summary["check"]["passed"]
    assert "pip install numpy pillow openvino==" in (folder / "README.txt").read_text()
    device = on_device(folder / "verify.py", "--json", "--count", "3", blocked=BLOCKED + ("onnxruntime", "nncf"))
    assert device.returncode == 0, device.stderr
    report = json.loads(device.stdout)
    assert report["passed"] and report["runtime"]["openvino"]


def test_doctor_and_the_registry_know_it(cli):
    backend = get_backend("ov")
    assert backend.name == "openvino" and backend.extra == "openvino" and backend.consumes == ("onnxruntime",)
    result = cli("doctor", "--json")
    entry = {b["name"]: b for b in json.loads(result.stdout)["backends"]}["openvino"]
    assert entry["installed"] and "evitdeploy[openvino]" in entry["install"]
