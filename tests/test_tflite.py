"""The TFLite/LiteRT target: real litert-torch conversions, ai-edge-quantizer, LiteRT on XNNPACK."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("litert_torch", reason="the tflite extra is not installed: pip install 'evitdeploy[tflite]'")

from helpers import assert_clean_error, on_device
from evitdeploy import api
from evitdeploy.errors import UserError
from evitdeploy.precision.options import PrecisionOptions
from evitdeploy.requests import BenchRequest, CheckRequest, ExportRequest
from evitdeploy.backends.tflite.plan import decide, module_path_of, read_ops

CASES = {  # trained weights (random ones are for plumbing, not numerics), at small sizes
    "cls": ("efficientvit_b0", 64, 64),  # the digits classifier
    "seg": ("efficientvit_seg_b0_cityscapes", 128, 256),  # the digit-mosaic segmenter
}


def _case_data(case: str, folder: Path) -> tuple[Path, Path]:
    """(calibration .npz, check .npz) of the case's own kind of images."""
    from evitdeploy.models import trained

    if case == "cls":
        calib, check = trained.digits_images("train")[0][:32], trained.digits_images("test")[0][:8]
    else:
        calib = trained.digit_mosaics(8, 128, 256, seed=1, split="train")[0]
        check = trained.digit_mosaics(4, 128, 256, seed=2, split="test")[0]
    np.savez(folder / f"{case}-calib.npz", image=calib)
    np.savez(folder / f"{case}-check.npz", image=check)
    return folder / f"{case}-calib.npz", folder / f"{case}-check.npz"


@pytest.fixture(scope="module")
def tflite_exports(tmp_path_factory, digits_checkpoint_path, mosaic_checkpoint_path):
    """The trained B0 classifier at 64x64 and Seg-B0 at 128x256, each in FP32, FP16 and INT8."""
    folder = tmp_path_factory.mktemp("tflite")
    checkpoints = {"cls": digits_checkpoint_path, "seg": mosaic_checkpoint_path}
    exports = {}
    for case, (model, height, width) in CASES.items():
        calib, check = _case_data(case, folder)
        for precision in ("fp32", "fp16", "int8"):
            artifact = api.export_model(
                ExportRequest(
                    model=model,
                    target="tflite",
                    precision=precision,
                    output=folder / f"{case}-{precision}",
                    checkpoint=checkpoints[case],
                    height=height,
                    width=width,
                    reduced=PrecisionOptions(calib=str(calib), calib_count=len(np.load(calib)["image"]), search_budget=2),
                ),
            )
            exports[case, precision] = (artifact, check)
    return exports


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_each_precision_converts_loads_in_litert_and_passes_parity(case, precision, tflite_exports):
    artifact, check = tflite_exports[case, precision]
    assert artifact.model_file.suffix == ".tflite" and artifact.manifest["target"] == "tflite"
    report = api.check_artifact(CheckRequest(path=artifact.folder, data=check, samples=8))
    assert report["passed"], report["failures"]
    if precision == "fp32":
        assert report["metrics"]["max_abs_error"] <= 1e-4
    io = artifact.manifest["export"]["io"]
    assert io["inputs"][0]["dtype"] == ("int8" if precision == "int8" else "float32")
    assert io["inputs"][0]["shape"] == list(artifact.spec.input_shape)  # NCHW, as the ModelSpec says


def test_fp16_halves_the_file(tflite_exports):
    fp32, fp16 = (tflite_exports["cls", p][0].model_file.stat().st_size for p in ("fp32", "fp16"))
    assert 0.45 < fp16 / fp32 < 0.6


@pytest.mark.parametrize("case", sorted(CASES))
def test_int8_follows_the_plan_op_by_op(case, tflite_exports):
    """Every op the plan keeps float writes a float tensor in the .tflite; the quantized ones int8."""
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as flatbuffers

    artifact = tflite_exports[case, "int8"][0]
    summary = artifact.manifest["precision_plan"]["tflite"]
    assert any(m.endswith("context_module.main") for m in summary["float_modules"])  # the LiteMLA core
    model = flatbuffers.read_model(artifact.model_file.read_bytes())
    tensors = model.subgraphs[0].tensors
    by_scope = {}
    for op in model.subgraphs[0].operators:
        by_scope.setdefault(flatbuffers.get_op_scope(op, tensors), []).append(tensors[op.outputs[0]].type)
    decisions = json.loads((artifact.folder / "tflite_plan.json").read_text())["ops"]
    float_core = [d for d in decisions if d["precision"] == "fp32" and d["op"] in ("BATCH_MATMUL", "DIV", "SUM")]
    assert float_core and all(0 in by_scope[d["scope"]] for d in float_core)  # 0: FLOAT32
    convs = [d for d in decisions if d["precision"] == "int8" and d["op"] == "CONV_2D"]
    assert convs and all(9 in by_scope[d["scope"]] for d in convs)  # 9: INT8
    assert all(d["precision"] == "fp32" for d in decisions if d["op"] == "HARD_SWISH")  # no XNNPACK int8 kernel


def test_module_paths_come_from_tflite_tensor_names():
    name = (
        "evitdeploy.models.efficientvit.EfficientViTClassifier/torch.nn.modules.container.Sequential_stages/"
        "evitdeploy.models.efficientvit.Stage_2/torch.nn.modules.container.Sequential_blocks/"
        "evitdeploy.models.efficientvit.EfficientViTBlock_1/evitdeploy.models.layers.ResidualBlock_context_module/"
        "evitdeploy.models.attention.LiteMLA_main;9"
    )
    assert module_path_of(name) == "stages.2.blocks.1.context_module.main"
    assert module_path_of("serving_default_output_0_output") == ""


def test_a_plan_module_missing_from_the_tflite_stops_the_export(tflite_exports):
    from evitdeploy.precision.plan import PrecisionPlan

    artifact = tflite_exports["cls", "int8"][0]
    plan = PrecisionPlan.from_dict(json.loads((artifact.folder / "precision_plan.json").read_text()))
    plan.decisions[0] = plan.decisions[0].__class__(**{**plan.decisions[0].__dict__, "module": "stages.9.nowhere", "precision": "fp32", "reason": "rule: test"})
    with pytest.raises(UserError, match="keeps stages.9.nowhere in FP32 but no TFLite op"):
        decide(plan, read_ops((artifact.folder / "model.tflite").read_bytes()))


def test_unsupported_op_is_one_clear_error(tmp_path):
    import torch

    from evitdeploy.backends.tflite.export import convert
    from evitdeploy.models import get_spec

    class WithSvd(torch.nn.Module):
        def set_formulation(self, name):
            pass

        def forward(self, x):
            return torch.linalg.svd(x[:, 0, :3, :3])[1]

    with pytest.raises(UserError) as caught:
        convert(WithSvd(), get_spec("efficientvit_b0").with_input(1, 64, 64), tmp_path / "m.tflite")
    assert "Lowering not found: aten._linalg_svd" in caught.value.message and "--target onnx" in caught.value.hint
    assert not (tmp_path / "m.tflite").exists()


def test_missing_extra_exits_3_naming_it(cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "litert_torch", None)  # as if not installed
    result = cli("export", "-m", "efficientvit_b0", "-t", "tflite", "-o", tmp_path / "out")
    assert_clean_error(result, 3, "litert-torch", "pip install 'evitdeploy[tflite]'")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args, fragment",
    [
        (("-p", "int8", "--calib", "/no/such/photos"), "calibration data not found: /no/such/photos"),
        (("--dynamic", "batch"), "the TFLite target exports static shapes"),
        (("-p", "bf16"), "precision 'bf16' is not supported for target 'tflite'"),
    ],
)
def test_bad_tflite_input_is_one_line_exit_2(args, fragment, cli, tmp_path):
    result = cli("export", "-m", "efficientvit_b0", "-t", "litert", "--height", "64", "--width", "64", *args, "-o", tmp_path / "out")
    assert_clean_error(result, 2, fragment)
    assert not (tmp_path / "out").exists()


def test_bench_reports_litert(tflite_exports):
    summary = api.bench_artifact(BenchRequest(path=tflite_exports["cls", "int8"][0].folder, threads=2, warmup=2, count=5))
    result = summary["results"][0]
    assert result["label"] == "tflite/int8" and result["providers"] == ["LiteRT XNNPACK"] and result["stats"]["median_ms"] > 0


def test_raspberry_pi_bundle_verifies_with_only_numpy_and_litert(tmp_path, cli, digits_checkpoint_path):
    calib, check = _case_data("cls", tmp_path)
    folder = tmp_path / "pi"
    result = cli(
        "deploy",
        "--profile",
        "raspberry-pi-5",
        "-m",
        "efficientvit_b0",
        "-c",
        digits_checkpoint_path,
        "--height",
        "64",
        "--width",
        "64",
        "--calib",
        calib,
        "--data",
        check,
        "--search-budget",
        "1",
        "-o",
        folder,
        "--json",
    )
    assert result.exit_code == 0, result.stdout
    summary = json.loads(result.stdout)
    assert summary["target"] == "tflite" and summary["precision"] == "int8" and summary["check"]["passed"]
    assert {"model.tflite", "tflite_plan.json", "verify.py", "reference.npz"} <= {p.name for p in folder.iterdir()}
    assert "pip install numpy pillow ai-edge-litert==" in (folder / "README.txt").read_text()
    device = on_device(folder / "verify.py", "--json", "--count", "3")
    assert device.returncode == 0, device.stderr
    report = json.loads(device.stdout)
    assert report["passed"] and report["runtime"]["ai-edge-litert"] and report["parity"]["metrics"]["top1_agreement"] == 1.0


def test_trained_digits_int8_keeps_accuracy_within_a_point(tmp_path, digits_checkpoint_path):
    """Real weights: held-out digits accuracy of the INT8 .tflite vs PyTorch FP32."""
    from evitdeploy.data import preprocess
    from evitdeploy.models import trained
    from evitdeploy.backends.tflite.runner import TFLiteRunner

    train, _ = trained.digits_images("train")
    np.savez(tmp_path / "calib.npz", image=train[:64])
    artifact = api.export_model(
        ExportRequest(
            model="efficientvit_b0",
            target="tflite",
            precision="int8",
            output=tmp_path / "int8",
            checkpoint=digits_checkpoint_path,
            height=64,
            width=64,
            reduced=PrecisionOptions(calib=str(tmp_path / "calib.npz"), calib_count=64),
        ),
    )
    test_images, labels = trained.digits_images("test")
    inputs = preprocess(list(test_images), trained.digits_spec(), 64, 64)
    with TFLiteRunner(artifact.model_file, artifact.spec) as runner:
        logits = np.concatenate([runner.infer({"image": inputs[i : i + 1]})["logits"] for i in range(len(inputs))])
    import torch

    from evitdeploy.models import build_model

    reference, _ = build_model(trained.digits_spec(), digits_checkpoint_path, 0, None)
    with torch.no_grad():
        fp32 = trained.classification_accuracy(reference.eval()(torch.from_numpy(inputs)).numpy(), labels)
    int8 = trained.classification_accuracy(logits, labels)
    assert int8 >= fp32 - 0.01, (int8, fp32)


def test_nhwc_input_takes_camera_order_and_still_passes_parity(tmp_path, cli):
    artifact = api.export_model(
        ExportRequest(
            model="efficientvit_b0",
            target="tflite",
            precision="fp32",
            output=tmp_path / "nhwc",
            height=64,
            width=64,
            backend_options={"nhwc": True},
        ),
    )
    assert artifact.manifest["export"]["io"]["inputs"][0]["shape"] == [1, 64, 64, 3] and artifact.spec.layout == "NHWC"
    ops = artifact.manifest["export"]["ops"]
    plain = api.export_model(
        ExportRequest(
            model="efficientvit_b0",
            target="tflite",
            precision="fp32",
            output=tmp_path / "nchw",
            height=64,
            width=64,
        ),
    )
    assert ops.get("TRANSPOSE", 0) == plain.manifest["export"]["ops"]["TRANSPOSE"] - 1  # the one in front is gone
    report = api.check_artifact(CheckRequest(path=artifact.folder, samples=4))  # NCHW photos, transposed by the runner
    assert report["passed"] and report["metrics"]["max_abs_error"] <= 1e-4
    assert_clean_error(cli("export", "-m", "efficientvit_b0", "--nhwc", "-o", tmp_path / "onnx"), 2, "--nhwc is for --target tflite")
