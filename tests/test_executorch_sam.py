"""EfficientViT-SAM on ExecuTorch: encoder.pte + decoder.pte (FP32 on XNNPACK, the decoder built
for a fixed number of points), validated against PyTorch on the parity prompts."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("executorch", reason="the executorch extra is not installed: pip install 'evitdeploy[executorch]'")
pytest.importorskip("executorch.runtime", reason="the executorch extra is not installed: pip install 'evitdeploy[executorch]'")

from helpers import Cli
from evitdeploy.backends.executorch.export import DECODER_POINTS


# ~45 s of SAM lowering: the slow tier (in `make test`, alone with `make test-slow`); `make bench-executorch`
# (section sam) runs the same export and check.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sam_pte(tmp_path_factory, sam_checkpoint_path):
    folder = tmp_path_factory.mktemp("sam") / "tiny-executorch"
    result = Cli()("export", "--model", "efficientvit_sam_tiny", "--target", "executorch", "-c", sam_checkpoint_path, "-o", folder, "--json")
    assert result.exit_code == 0, result.output
    return folder, json.loads(result.stdout)


def test_an_fp32_export_is_an_encoder_and_a_fixed_points_decoder_and_validated(sam_pte):
    folder, manifest = sam_pte
    assert sorted(p.name for p in folder.iterdir()) == ["decoder.pte", "encoder.pte", "manifest.json"]
    assert manifest["target"] == "executorch" and manifest["model_file"] == "encoder.pte"
    assert manifest["models"] == {"encoder": "encoder.pte", "decoder": "decoder.pte"}
    export = manifest["export"]
    assert export["decoder_points"] == DECODER_POINTS == 8 and export["decoder_outputs"] == ["low_res_masks", "iou_predictions"]
    assert export["decoder_inputs"][:3] == ["image_embeddings", "point_coords", "point_labels"] and export["decoder_inputs"][-1] == "point_count"
    assert "pytorch/executorch#22851" in export["rewrites"]["SpelledOutTanhGELU"]["why"]  # SAM-tiny's tanh GELU, spelled out for XNNPACK
    for program in ("model", "decoder"):
        partition = export["partition"][program]
        assert partition["delegate"] == "XnnpackBackend" and partition["delegated_subgraphs"] > 0
    check = manifest["validation"]["checks"][0]
    assert check["passed"] and check["metrics"]["prompts"] == 16 and check["metrics"]["mask_iou_min"] >= 0.99
    assert check["metrics"]["iou_prediction_max_error"] <= 1e-3


def test_check_passes_against_sams_own_decoder(cli, sam_pte):
    """`check` feeds PyTorch each prompt unpadded: the padded .pte decoder must give the same masks."""
    result = cli("check", sam_pte[0], "--samples", "1", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["passed"] and report["target"] == "executorch"
    assert report["metrics"]["prompts"] == 8 and report["metrics"]["mask_iou_min"] >= 0.99
