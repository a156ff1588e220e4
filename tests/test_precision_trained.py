"""Precision plans judged on trained weights: held-out accuracy and mIoU, the numbers users care about."""

import shutil

import numpy as np
import onnxruntime as ort
import pytest

from evitdeploy import api
from evitdeploy.backends import open_artifact
from evitdeploy.data import preprocess
from evitdeploy.precision.options import PrecisionOptions
from evitdeploy.requests import ExportRequest
from evitdeploy.models import trained


def onnx_logits(path, inputs):
    """An exported model's logits from ONNX Runtime on the CPU, one image at a time."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"image": inputs[i : i + 1]})[0] for i in range(len(inputs))])


def _cosine_min(a, b):
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


@pytest.fixture(scope="module")
def digits_exports(tmp_path_factory, digits_onnx):
    """FP32, INT8 (plan) and FP16 (plan) exports of the trained digits classifier, calibrated on
    64 training digits (the session's, shared with the INT8 kernel tests), and the held-out digits
    as preprocessed inputs with their labels."""
    folder = tmp_path_factory.mktemp("digits") / "exports"
    shutil.copytree(digits_onnx, folder)  # this module writes beside them
    artifacts = {precision: open_artifact(folder / precision) for precision in ("fp32", "int8", "fp16")}
    test_images, test_labels = trained.digits_images("test")
    inputs = preprocess(list(test_images), trained.digits_spec(), 64, 64)
    return artifacts, inputs, test_labels, folder


def test_int8_plan_keeps_digits_accuracy_within_a_point(digits_exports):
    artifacts, inputs, labels, _ = digits_exports
    fp32 = onnx_logits(artifacts["fp32"].model_file, inputs)
    int8 = onnx_logits(artifacts["int8"].model_file, inputs)
    fp32_accuracy = trained.classification_accuracy(fp32, labels)
    assert fp32_accuracy > 0.93
    assert trained.classification_accuracy(int8, labels) >= fp32_accuracy - 0.01
    assert _cosine_min(fp32, int8) >= 0.99


def test_the_plan_beats_naive_full_quantization_by_a_wide_margin(digits_exports):
    from evitdeploy.precision.qdq import naive_quantize

    artifacts, inputs, labels, folder = digits_exports
    train_images, _ = trained.digits_images("train")
    calibration = preprocess(list(train_images[:64]), trained.digits_spec(), 64, 64)
    naive_quantize(artifacts["fp32"].model_file, folder / "naive.onnx", calibration)
    naive = trained.classification_accuracy(onnx_logits(folder / "naive.onnx", inputs), labels)
    planned = trained.classification_accuracy(onnx_logits(artifacts["int8"].model_file, inputs), labels)
    assert planned - naive >= 0.10, (planned, naive)


def test_fp16_plan_leaves_digits_accuracy_unchanged(digits_exports):
    artifacts, inputs, labels, _ = digits_exports
    fp32 = trained.classification_accuracy(onnx_logits(artifacts["fp32"].model_file, inputs), labels)
    fp16 = trained.classification_accuracy(onnx_logits(artifacts["fp16"].model_file, inputs), labels)
    assert abs(fp16 - fp32) <= 0.002


def test_check_of_the_int8_artifact_passes_on_digits(cli, digits_exports):
    artifacts, _, _, folder = digits_exports
    test_images, _ = trained.digits_images("test")
    np.savez(folder / "test.npz", image=test_images[:32])
    result = cli("check", artifacts["int8"].folder, "--data", folder / "test.npz", "--samples", "32")
    assert result.exit_code == 0, result.output


def test_int8_plan_keeps_the_mosaic_segmenter_accurate(tmp_path, mosaic_checkpoint_path):
    height, width = 256, 512
    photos, _ = trained.digit_mosaics(16, height, width, seed=1, split="train")
    np.savez(tmp_path / "calib.npz", image=photos)
    artifacts = {
        precision: api.export_model(
            ExportRequest(
                model="efficientvit_seg_b0_cityscapes",
                target="onnx",
                precision=precision,
                output=tmp_path / precision,
                checkpoint=mosaic_checkpoint_path,
                height=height,
                width=width,
                reduced=PrecisionOptions(calib=str(tmp_path / "calib.npz"), calib_count=16),
            ),
        )
        for precision in ("fp32", "int8")
    }
    test_photos, test_labels = trained.digit_mosaics(4, height, width, seed=2, split="test")
    inputs = preprocess(list(test_photos), trained.mosaic_spec(height, width), height, width)
    fp32 = onnx_logits(artifacts["fp32"].model_file, inputs)
    int8 = onnx_logits(artifacts["int8"].model_file, inputs)
    assert (fp32.argmax(1) == int8.argmax(1)).mean() >= 0.97
    fp32_miou = trained.segmentation_scores(fp32, test_labels)["miou"]
    assert fp32_miou > 0.7
    assert trained.segmentation_scores(int8, test_labels)["miou"] >= fp32_miou - 0.01


def test_plain_fp16_breaks_the_trained_segmenter_at_cityscapes_resolution_and_the_plan_does_not(tmp_path, mosaic_checkpoint_path):
    """Trained weights at 1024x2048: LiteMLA's token sums pass 65504, so plain FP16 storage gives
    inf/NaN; the plan (measured ranges) keeps them in FP32. Checked by the export itself."""
    photos, _ = trained.digit_mosaics(2, 1024, 2048, seed=3, split="train")
    np.savez(tmp_path / "calib.npz", image=photos)
    artifact = api.export_model(
        ExportRequest(
            model="efficientvit_seg_b0_cityscapes",
            target="onnx",
            precision="fp16",
            output=tmp_path / "fp16",
            checkpoint=mosaic_checkpoint_path,
            reduced=PrecisionOptions(calib=str(tmp_path / "calib.npz"), calib_count=2),
        ),
    )
    import json

    ranges = json.loads((artifact.folder / "ranges.json").read_text())["tensors"]
    assert max(r["absmax"] for r in ranges.values() if r["module"].endswith("context_module.main")) > 65504
    storage = artifact.manifest["precision_plan"]["fp16_storage_check"]
    assert storage["plain"]["nonfinite"] > 0
    assert storage["planned"]["nonfinite"] == 0 and storage["planned"]["cosine_min"] > 0.999
