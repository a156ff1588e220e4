"""EfficientViT-SAM on Core ML: encoder.mlpackage + decoder.mlpackage (FP32, built for a fixed
number of points), checked as packages here; prediction needs macOS: those tests carry the `macos`
marker and skip here with the reason."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import pytest

from helpers import assert_clean_error

pytest.importorskip("coremltools", reason="the Core ML target is an optional extra (pip install 'evitdeploy[coreml]')")

from evitdeploy.backends.coreml.export import DECODER_POINTS
from evitdeploy.backends.coreml.runner import decoder_points, import_coremltools

# SAM converted to Core ML (encoder and decoder): the slow tier.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sam_coreml(tmp_path_factory):
    from evitdeploy.api import export_model
    from evitdeploy.requests import ExportRequest

    folder = tmp_path_factory.mktemp("sam") / "tiny-coreml"
    return export_model(ExportRequest(model="efficientvit_sam_tiny", target="coreml", output=folder))


def _io(package: Path) -> tuple[dict, list]:
    description = import_coremltools().models.MLModel(str(package), skip_model_load=True).get_spec().description
    return {i.name: list(i.type.multiArrayType.shape) for i in description.input}, [o.name for o in description.output]


def test_the_conversion_writes_an_encoder_and_a_fixed_points_decoder_package(sam_coreml):
    manifest = sam_coreml.manifest
    assert sorted(p.name for p in sam_coreml.folder.iterdir()) == ["decoder.mlpackage", "encoder.mlpackage", "manifest.json"]
    assert manifest["models"] == {"encoder": "encoder.mlpackage", "decoder": "decoder.mlpackage"}
    assert sam_coreml.model_file.name == "encoder.mlpackage" and manifest["export"]["decoder_points"] == DECODER_POINTS == 8
    assert _io(sam_coreml.folder / "encoder.mlpackage") == ({"image": [1, 3, 256, 256]}, ["image_embeddings"])
    inputs, outputs = _io(sam_coreml.folder / "decoder.mlpackage")
    assert inputs == {
        "image_embeddings": [1, 64, 32, 32],
        "point_coords": [1, 8, 2],
        "point_labels": [1, 8],
        "mask_input": [1, 1, 128, 128],
        "has_mask_input": [1],
        "point_count": [1],
    }
    assert outputs == ["low_res_masks", "iou_predictions"]
    package = manifest["validation"]["package"]
    assert package["passed"] and package["decoder"]["ops_by_precision"]["FLOAT32"] > 0 and "FLOAT16" not in package["decoder"]["ops_by_precision"]


def test_the_runner_reads_the_point_count_from_the_package(sam_coreml):
    spec = import_coremltools().models.MLModel(str(sam_coreml.folder / "decoder.mlpackage"), skip_model_load=True).get_spec()
    assert decoder_points(spec) == 8
    encoder = import_coremltools().models.MLModel(str(sam_coreml.model_file), skip_model_load=True).get_spec()
    assert decoder_points(encoder) is None


@pytest.mark.skipif(platform.system() == "Darwin", reason="on macOS Core ML predicts")
def test_check_here_says_prediction_needs_macos(cli, sam_coreml):
    assert_clean_error(cli("check", sam_coreml.folder), 3, "macOS")


@pytest.mark.macos
def test_parity_on_macos(cli, sam_coreml):
    check = sam_coreml.manifest["validation"]["checks"][0]
    assert check["passed"] and check["metrics"]["mask_iou_min"] >= 0.99
    result = cli("check", sam_coreml.folder, "--samples", "1", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["metrics"]["mask_iou_min"] >= 0.99


@pytest.mark.macos
def test_more_points_than_the_decoder_takes_are_refused_on_macos(sam_coreml):
    from evitdeploy.backends.coreml.runner import CoreMLRunner
    from evitdeploy.errors import UserError

    spec = sam_coreml.spec
    feed = {
        "image_embeddings": np.zeros((1, *spec.embedding), np.float32),
        "point_coords": np.zeros((1, 9, 2), np.float32),
        "point_labels": np.ones((1, 9), np.float32),
        "mask_input": np.zeros((1, 1, spec.low_res_size, spec.low_res_size), np.float32),
        "has_mask_input": np.zeros((1,), np.float32),
    }
    with CoreMLRunner(sam_coreml.folder / "decoder.mlpackage", spec) as decoder:
        with pytest.raises(UserError, match="at most 8"):
            decoder.infer(feed)
        feed = {**feed, "point_coords": feed["point_coords"][:, :3], "point_labels": feed["point_labels"][:, :3]}
        assert decoder.infer(feed)["low_res_masks"].shape == (1, 4, spec.low_res_size, spec.low_res_size)


def test_an_fp16_sam_package_keeps_the_plans_fp32_ops(cli, tmp_path):
    result = cli("export", "--model", "efficientvit_sam_tiny", "--target", "coreml", "--precision", "fp16", "-o", tmp_path / "x", "--json")
    assert result.exit_code == 0, result.output
    package = json.loads(result.stdout)["validation"]["package"]
    assert package["passed"] and package["encoder"]["plan_fp32_ops"] > 0 and package["encoder"]["ops_by_precision"]["FLOAT16"] > 0
