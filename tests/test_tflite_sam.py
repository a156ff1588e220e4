"""EfficientViT-SAM on LiteRT: encoder.tflite + decoder.tflite (FP32, built for a fixed number of
points), validated against PyTorch on the parity prompts; the runner pads a prompt to the decoder's
point count and refuses more."""

from __future__ import annotations

import json

import pytest

from helpers import assert_clean_error

pytest.importorskip("litert_torch", reason="the TFLite target is an optional extra (pip install 'evitdeploy[tflite]')")
pytest.importorskip("ai_edge_litert", reason="the TFLite target is an optional extra (pip install 'evitdeploy[tflite]')")

from evitdeploy.backends.tflite.export import DECODER_POINTS

# SAM lowered to LiteRT (encoder and decoder): the slow tier.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sam_tflite(tmp_path_factory):
    from evitdeploy.api import export_model
    from evitdeploy.requests import ExportRequest

    folder = tmp_path_factory.mktemp("sam") / "tiny-tflite"
    return export_model(ExportRequest(model="efficientvit_sam_tiny", target="tflite", output=folder))


def test_an_fp32_export_is_encoder_plus_a_fixed_points_decoder_and_validated(sam_tflite):
    manifest = sam_tflite.manifest
    assert sorted(p.name for p in sam_tflite.folder.iterdir()) == ["decoder.tflite", "encoder.tflite", "manifest.json"]
    assert manifest["models"] == {"encoder": "encoder.tflite", "decoder": "decoder.tflite"}
    assert sam_tflite.model_file.name == "encoder.tflite" and manifest["export"]["decoder_points"] == DECODER_POINTS == 8
    decoder_inputs = {t["name"].removeprefix("serving_default_"): t["shape"] for t in manifest["export"]["decoder_io"]["inputs"]}
    assert decoder_inputs["point_coords"] == [1, 8, 2] and decoder_inputs["point_labels"] == [1, 8] and decoder_inputs["point_count"] == [1]
    check = manifest["validation"]["checks"][0]
    assert check["passed"] and check["metrics"]["prompts"] == 16 and check["metrics"]["mask_iou_min"] >= 0.99
    assert check["metrics"]["iou_prediction_max_error"] <= 1e-3


def test_check_passes_against_sams_own_decoder(cli, sam_tflite):
    """`check` feeds PyTorch each prompt unpadded: the padded decoder must give the same masks."""
    result = cli("check", sam_tflite.folder, "--samples", "1", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["target"] == "tflite" and report["metrics"]["prompts"] == 8 and report["metrics"]["mask_iou_min"] >= 0.99


def test_more_points_than_the_decoder_takes_are_one_line_exit_2(cli, sam_tflite, photo, tmp_path):
    points = [arg for i in range(8) for arg in ("--point", f"{20 + 30 * i},{40 + 20 * i}")]  # 8 clicks + SAM's padding point
    result = cli("predict", sam_tflite.folder, photo, *points, "-o", tmp_path / "out.png")
    assert_clean_error(result, 2, "9 prompt points", "at most 8", "--target onnx")
    assert not (tmp_path / "out.png").exists()


def test_an_fp16_sam_follows_the_plan_in_its_encoder(cli, tmp_path):
    """The plan's module names are the .tflite's (the encoder calls its backbone as a module)."""
    result = cli("export", "--model", "efficientvit_sam_tiny", "--target", "tflite", "--precision", "fp16", "-o", tmp_path / "x", "--json")
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert manifest["precision_plan"]["summary"]["nodes"]["fp32"] > 0 and manifest["export"]["decoder_points"] == DECODER_POINTS
    assert manifest["validation"]["checks"][0]["metrics"]["mask_iou_min"] >= 0.98
