"""The Core ML target on Linux: real coremltools conversions, packages read back and checked.
Prediction needs macOS: those tests carry the `macos` marker and skip here with the reason."""

from __future__ import annotations

import json
import platform
import sys

import numpy as np
import pytest

pytest.importorskip("coremltools", reason="the coreml extra is not installed: pip install 'evitdeploy[coreml]'")

from helpers import assert_clean_error, on_device
from evitdeploy import api
from evitdeploy.precision.options import PrecisionOptions
from evitdeploy.requests import CheckRequest, ExportRequest
from evitdeploy.backends.coreml.export import MODEL_DIR, check_package, convert

CASES = {  # trained weights: the plan's FP32 islands then come from real ranges, not random ones
    "cls": ("efficientvit_b0", 64, 64),
    "seg": ("efficientvit_seg_b0_cityscapes", 128, 256),
}


@pytest.fixture(scope="module")
def coreml_exports(tmp_path_factory, digits_checkpoint_path, mosaic_checkpoint_path):
    from evitdeploy.models import trained

    folder = tmp_path_factory.mktemp("coreml")
    np.savez(folder / "cls.npz", image=trained.digits_images("train")[0][:16])
    np.savez(folder / "seg.npz", image=trained.digit_mosaics(4, 128, 256, seed=1, split="train")[0])
    checkpoints = {"cls": digits_checkpoint_path, "seg": mosaic_checkpoint_path}
    exports = {}
    for case, (model, height, width) in CASES.items():
        for precision in ("fp32", "fp16", "int8"):
            exports[case, precision] = api.export_model(
                ExportRequest(
                    model=model,
                    target="coreml",
                    precision=precision,
                    output=folder / f"{case}-{precision}",
                    checkpoint=checkpoints[case],
                    height=height,
                    width=width,
                    reduced=PrecisionOptions(calib=str(folder / f"{case}.npz"), calib_count=16 if case == "cls" else 4),
                ),
            )
    return exports


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_each_precision_converts_and_its_package_checks_out(case, precision, coreml_exports):
    artifact = coreml_exports[case, precision]
    assert artifact.model_file.name == MODEL_DIR and artifact.model_file.is_dir()
    package = artifact.manifest["validation"]["package"]
    assert package["passed"], package["failures"]
    counts = package["ops_by_precision"]
    if precision == "fp32":
        assert set(counts) == {"FLOAT32"}
    else:
        assert counts["FLOAT16"] > 0 and package["plan_fp32_ops"] > 0  # the LiteMLA core stays FP32
    assert (package["compressed_weight_ops"] > 0) == (precision == "int8")
    assert artifact.manifest["export"]["minimum_deployment_target"] == "iOS17"
    assert any(name.startswith(MODEL_DIR + "/") for name in artifact.manifest["files"])  # every file in the package hashed


@pytest.mark.parametrize("case", sorted(CASES))
def test_fp16_is_about_half_and_int8_weights_about_a_quarter(case, coreml_exports):
    from evitdeploy.artifact import model_size

    fp32, fp16, int8 = (model_size(coreml_exports[case, p].model_file) for p in ("fp32", "fp16", "int8"))
    assert 0.45 < fp16 / fp32 < 0.6, fp16 / fp32
    assert 0.2 < int8 / fp32 < 0.35, int8 / fp32


def test_the_package_check_catches_a_wrong_precision_and_a_dropped_plan(coreml_exports, tmp_path):
    from evitdeploy.precision.plan import PrecisionPlan
    from evitdeploy.models import build_model, trained

    fp32 = coreml_exports["cls", "fp32"]
    wrong = check_package(fp32.model_file, fp32.spec, "fp16", [])
    assert not wrong["passed"] and "asked for fp16 but no op computes in FP16" in wrong["failures"]

    fp16 = coreml_exports["cls", "fp16"]
    plan = PrecisionPlan.from_dict(json.loads((fp16.folder / "precision_plan.json").read_text()))
    model, spec = build_model(trained.digits_spec(), fp16.manifest["source"]["checkpoint"], 0, None)
    _, kept = convert(model, spec, "fp16", plan)
    planless, _ = convert(model, spec, "fp16", None)  # FP16 everywhere: the plan dropped
    planless.save(str(tmp_path / "planless.mlpackage"))
    dropped = check_package(tmp_path / "planless.mlpackage", spec, "fp16", kept)
    assert not dropped["passed"] and "ops the plan keeps FP32 are not FP32 in the package" in dropped["failures"][0]


def test_missing_extra_exits_3_naming_it(cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "coremltools", None)
    result = cli("export", "-m", "efficientvit_b0", "-t", "coreml", "--height", "64", "--width", "64", "-o", tmp_path / "out")
    assert_clean_error(result, 3, "coremltools", "pip install 'evitdeploy[coreml]'")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args, fragment",
    [(("--nhwc",), "--nhwc is for --target tflite"), (("--dynamic", "batch"), "the Core ML target exports static shapes")],
)
def test_unsupported_option_is_one_line_exit_2(args, fragment, cli, tmp_path):
    result = cli("export", "-m", "efficientvit_b0", "-t", "coreml", "--height", "64", "--width", "64", *args, "-o", tmp_path / "out")
    assert_clean_error(result, 2, fragment)
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(platform.system() == "Darwin", reason="on macOS Core ML predicts")
def test_check_here_says_prediction_needs_macos(coreml_exports, cli):
    assert_clean_error(cli("check", coreml_exports["cls", "fp16"].folder), 3, "Core ML predicts only on macOS")


def test_iphone_bundle_is_complete_and_refuses_a_tampered_package(tmp_path, cli):
    folder = tmp_path / "iphone"
    result = cli("deploy", "--profile", "iphone-15", "-m", "efficientvit_b0", "--height", "64", "--width", "64", "--calib-count", "8", "-o", folder, "--json")
    assert result.exit_code == 0, result.stdout
    summary = json.loads(result.stdout)
    assert summary["target"] == "coreml" and summary["precision"] == "fp16"
    with np.load(folder / "reference.npz") as reference:
        assert reference["expected"].shape == (4, 1000)  # PyTorch's outputs, for verify.py on a Mac
    if platform.system() != "Darwin":
        assert summary["check"]["skipped"] and summary["latency"] is None and summary["budget"]["judged"] is False
        device = on_device(folder / "verify.py")
        assert device.returncode == 3 and "Core ML predicts only on macOS" in device.stderr
    weights = next(p for p in (folder / MODEL_DIR).rglob("*") if p.is_file() and p.stat().st_size > 1_000_000)
    weights.write_bytes(weights.read_bytes()[:-4] + b"XXXX")
    assert_clean_error(cli("verify", folder), 2, "does not match the sha256")


@pytest.mark.macos
def test_parity_on_macos(coreml_exports):
    for precision in ("fp32", "fp16", "int8"):
        report = api.check_artifact(CheckRequest(path=coreml_exports["cls", precision].folder, samples=4))
        assert report["passed"], (precision, report["failures"])
