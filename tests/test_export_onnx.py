import json

import numpy as np
import onnx
import pytest
import torch

from evitdeploy.api import export_model
from evitdeploy.artifact import sha256_of
from evitdeploy.backends import open_artifact
from evitdeploy.errors import UserError
from evitdeploy.models import build_model, get_spec
from evitdeploy.requests import ExportRequest
from evitdeploy.backends.onnxruntime.runner import OnnxRuntimeRunner


def test_artifact_has_model_and_a_manifest_that_describes_it(b0_artifact):
    manifest = json.loads((b0_artifact / "manifest.json").read_text())
    model_file = b0_artifact / "model.onnx"
    onnx.checker.check_model(str(model_file))
    assert manifest["files"]["model.onnx"]["sha256"] == sha256_of(model_file)
    assert manifest["spec"]["name"] == "efficientvit_b0" and manifest["spec"]["input_shape"] == [1, 3, 128, 128]
    assert manifest["precision"] == "fp32" and manifest["export"]["opset"] == 17
    assert {"torch", "onnx", "onnxruntime", "onnxslim"} <= set(manifest["toolchain"])
    assert manifest["validation"]["data"].startswith("scikit-image sample photos")
    assert manifest["validation"]["checks"][0]["metrics"]["max_abs_error"] <= 1e-4
    assert onnx.load(str(model_file)).opset_import[0].version == 17


def test_exported_graph_has_no_pad_and_no_token_sized_transpose(b0_artifact):
    graph = onnx.load(str(b0_artifact / "model.onnx")).graph
    ops = [n.op_type for n in graph.node]
    assert "Pad" not in ops
    assert ops.count("Transpose") <= 2 * ops.count("Div")  # only the tiny d x d / sum(k) ones


def test_dynamic_export_runs_at_other_sizes_and_matches_pytorch(tmp_path):
    artifact = export_model(
        ExportRequest(
            model="efficientvit_seg_b0_cityscapes",
            output=tmp_path / "seg",
            height=128,
            width=256,
            dynamic=("batch", "height", "width"),
        ),
    )
    assert [c["input_shape"] for c in artifact.manifest["validation"]["checks"]] == [[1, 3, 128, 256], [2, 3, 192, 288]]
    model, spec = build_model(get_spec("efficientvit_seg_b0_cityscapes"))
    x = np.random.default_rng(0).standard_normal((3, 3, 96, 160)).astype(np.float32)
    with OnnxRuntimeRunner(artifact.model_file) as runner:
        got = runner.infer({"image": x})["logits"]
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    assert got.shape == (3, 19, 12, 20)
    assert np.abs(got - expected).max() < 1e-4


def test_failed_validation_leaves_nothing_behind(tmp_path, monkeypatch):
    from evitdeploy import parity
    from evitdeploy.parity import Tolerances

    monkeypatch.setattr(parity, "tolerances_for", lambda precision: Tolerances(min_cosine=1.5))
    with pytest.raises(UserError) as info:
        export_model(ExportRequest(model="efficientvit_b0", output=tmp_path / "out", height=64, width=64))
    assert info.value.exit_code == 1 and "does not match PyTorch" in info.value.message
    assert list(tmp_path.iterdir()) == []


def test_force_replaces_an_existing_artifact_atomically(tmp_path):
    first = export_model(ExportRequest(model="efficientvit_b0", output=tmp_path / "a", height=64, width=64, seed=1))
    second = export_model(ExportRequest(model="efficientvit_b0", output=tmp_path / "a", height=64, width=64, seed=2, force=True))
    assert first.manifest["files"]["model.onnx"]["sha256"] != second.manifest["files"]["model.onnx"]["sha256"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    assert open_artifact(tmp_path / "a").manifest["source"]["seed"] == 2


def test_l_models_export_at_opset_20_with_gelu_as_one_op(tmp_path):
    artifact = export_model(ExportRequest(model="efficientvit_l1", output=tmp_path / "l1", height=64, width=64))
    graph = onnx.load(str(artifact.model_file))
    ops = {n.op_type for n in graph.graph.node}
    assert artifact.manifest["export"]["opset"] == 20 and "Gelu" in ops and "Tanh" not in ops
    assert artifact.manifest["validation"]["checks"][0]["metrics"]["max_abs_error"] <= 1e-4


def test_opset_can_be_chosen_within_the_supported_range(tmp_path):
    artifact = export_model(ExportRequest(model="efficientvit_b0", output=tmp_path / "b0", height=64, width=64, opset=18))
    assert onnx.load(str(artifact.model_file)).opset_import[0].version == 18
    with pytest.raises(UserError, match="opset 16 is not supported"):
        export_model(ExportRequest(model="efficientvit_b0", output=tmp_path / "x", opset=16))


@pytest.mark.fast
@pytest.mark.parametrize("dynamic", [("hieght",), ("batchx",), ("batch", "Height"), "hieght", "batchx"])
def test_the_api_refuses_unknown_dynamic_axes_before_exporting(tmp_path, dynamic):
    with pytest.raises(UserError) as info:
        export_model(ExportRequest(model="efficientvit_b0", output=tmp_path / "a", height=64, width=64, dynamic=dynamic))
    assert "unknown dynamic axis" in info.value.message and "batch, height, width" in info.value.hint
    assert list(tmp_path.iterdir()) == []


def test_the_api_takes_dynamic_axes_exactly_as_named(tmp_path):
    from evitdeploy.graph import with_dynamic_axes

    spec = get_spec("efficientvit_b0")
    assert with_dynamic_axes(spec, "batch,width").dynamic_axes == ("batch", "width")
    assert with_dynamic_axes(spec, ("width", "batch")).dynamic_axes == ("batch", "width")
    with pytest.raises(UserError):
        with_dynamic_axes(spec, "batchx")  # no substring match: "batch" is not in it
    artifact = export_model(ExportRequest(model="efficientvit_b0", output=tmp_path / "a", height=64, width=64, dynamic="batch"))
    assert artifact.spec.dynamic_axes == ("batch",)


def test_an_existing_output_hint_speaks_to_python_callers_too(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(UserError) as info:
        export_model(ExportRequest(model="efficientvit_b0", output=tmp_path / "a", height=64, width=64))
    assert "force=True" in info.value.hint
