"""EfficientViT-SAM on the TensorRT target without TensorRT: the recipe export (encoder.onnx with the
plan, decoder.onnx in FP32, two trtexec builds), both ONNX files against PyTorch, the decoder's
optimization profile, and `evitdeploy build` on a SAM bundle with stand-ins for TensorRT and the
GPU. Tests that need TensorRT and a GPU carry the `tensorrt`/`gpu` markers and skip here."""

from __future__ import annotations

import json
import shlex
import subprocess

import numpy as np
import pytest

from evitdeploy import api
from evitdeploy.backends.tensorrt import export as trt_exporter
from evitdeploy.backends.tensorrt.plan import DECODER_ROWS, decoder_shapes, fp32_nodes, shapes
from evitdeploy.device.prompts import DECODER_INPUTS
from evitdeploy.models import get_spec
from evitdeploy.requests import CheckRequest, ExportRequest


@pytest.fixture(scope="module")
def recipes(tmp_path_factory):
    """efficientvit_sam_tiny for a device, FP32 and INT8: the ONNX + plan + recipe, no TensorRT."""
    folder = tmp_path_factory.mktemp("trt-sam")
    return {
        precision: api.export_model(
            ExportRequest(model="efficientvit_sam_tiny", target="trt", precision=precision, backend_options={"engine": False}, output=folder / precision)
        )
        for precision in ("fp32", "int8")
    }


def trtexec_commands(script: str) -> list[list[str]]:
    """The commands of a build_engine.sh, one per trtexec line (its continuations joined)."""
    body = script.split('cd "$(dirname "$0")"\n', 1)[1]
    return [shlex.split(command) for command in body.replace("\\\n", " ").strip().split("\n")]


def shape_flags(command: list[str]) -> dict[str, dict[str, tuple[int, ...]]]:
    """--minShapes/--optShapes/--maxShapes parsed back: {input: {"min", "opt", "max"}}."""
    parsed: dict = {}
    for which in ("min", "opt", "max"):
        (flag,) = [c for c in command if c.startswith(f"--{which}Shapes=")]
        for item in flag.split("=", 1)[1].split(","):
            name, dims = item.rsplit(":", 1)
            parsed.setdefault(name, {})[which] = tuple(int(d) for d in dims.split("x"))
    return parsed


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_a_sam_recipe_is_an_encoder_with_the_plan_and_an_fp32_decoder(recipes, precision):
    import onnx

    artifact = recipes[precision]
    files = {p.name for p in artifact.folder.iterdir()}
    assert {"encoder.onnx", "decoder.onnx", "build_engine.sh", "manifest.json"} <= files and "model.onnx" not in files
    assert ("precision_plan.json" in files) == (precision == "int8")
    manifest = artifact.manifest
    assert manifest["models"] == {"encoder": "encoder.onnx", "decoder": "decoder.onnx"} and artifact.model_file.name == "encoder.onnx"
    assert manifest["export"]["engine"] == {"file": "encoder.engine", "built": False, "recipe": "build_engine.sh"}
    assert manifest["export"]["decoder"]["engine"]["file"] == "decoder.engine" and manifest["export"]["decoder"]["precision"] == "fp32"
    encoder, decoder = (onnx.load(str(artifact.folder / name)).graph for name in ("encoder.onnx", "decoder.onnx"))
    assert [i.name for i in decoder.input] == list(DECODER_INPUTS) and [o.name for o in decoder.output] == ["low_res_masks", "iou_predictions"]
    assert [o.name for o in encoder.output] == ["image_embeddings"]  # the engine's output name the runners read
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in decoder.node)
    quantized = [n for n in encoder.node if n.op_type == "QuantizeLinear"]
    assert bool(quantized) == (precision == "int8")
    if precision == "int8":
        assert manifest["precision_plan"]["scheme"].startswith("tensorrt")
        from evitdeploy.precision.plan import PrecisionPlan

        plan = PrecisionPlan.from_dict(json.loads((artifact.folder / "precision_plan.json").read_text()))
        encoder_nodes, decoder_nodes = {n.name for n in encoder.node}, {n.name for n in decoder.node}
        pinned = fp32_nodes(plan)
        assert pinned and set(pinned) <= encoder_nodes and not set(pinned) & decoder_nodes  # the plan is the encoder's


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_the_recipe_builds_both_engines_with_shapes_that_parse_back(recipes, precision):
    artifact = recipes[precision]
    script = artifact.folder / "build_engine.sh"
    assert subprocess.run(["sh", "-n", str(script)]).returncode == 0
    encoder, decoder = trtexec_commands(script.read_text())
    assert [encoder, decoder] == [artifact.manifest["export"]["trtexec"], artifact.manifest["export"]["decoder"]["trtexec"]]
    assert encoder[:3] == ["trtexec", "--onnx=encoder.onnx", "--saveEngine=encoder.engine"]
    assert decoder[:3] == ["trtexec", "--onnx=decoder.onnx", "--saveEngine=decoder.engine"]
    assert shape_flags(encoder) == {"image": {k: (1, 3, 256, 256) for k in ("min", "opt", "max")}}
    assert "--stronglyTyped" in encoder and "--stronglyTyped" in decoder  # the graphs' types are the precision (the decoder's FP32)
    assert not any(c.startswith(("--fp16", "--int8", "--precisionConstraints", "--layerPrecisions")) for c in encoder + decoder)
    profile = shape_flags(decoder)
    assert list(profile) == list(DECODER_INPUTS)
    assert profile["point_coords"] == {"min": (1, 1, 2), "opt": (1, 2, 2), "max": (1, 18, 2)}
    assert profile["point_labels"] == {"min": (1, 1), "opt": (1, 2), "max": (1, 18)}
    side = 4 * artifact.spec.embedding[-1]
    static = {"image_embeddings": (1, 64, 32, 32), "mask_input": (1, 1, side, side), "has_mask_input": (1,)}
    assert {name: profile[name] for name in static} == {name: dict.fromkeys(("min", "opt", "max"), shape) for name, shape in static.items()}


def test_the_decoder_profile_covers_every_prompt_evitdeploy_sends():
    """Parity prompts, bench's 1/4/16 points (+ SAM's padding row) and 16 points with a box."""
    from evitdeploy.backends.promptable import decoder_bench_feed
    from evitdeploy.device.prompts import decoder_feed, parity_feeds

    spec = get_spec("efficientvit_sam_tiny")
    rows = [feed["point_coords"].shape[1] for _, feed in parity_feeds([(200, 300)], frame=spec.prompt_frame, embedding=spec.embedding)]
    embedding = np.zeros((1, *spec.embedding), np.float32)
    rows += [decoder_bench_feed(spec, embedding, points)["point_coords"].shape[1] for points in (1, 4, 16)]
    dense = {"points": [(float(i), float(i)) for i in range(16)], "labels": [1] * 16, "box": (0, 0, 50, 50)}
    rows.append(decoder_feed(dense, (200, 300), frame=spec.prompt_frame, embedding=spec.embedding)["point_coords"].shape[1])
    assert min(rows) >= DECODER_ROWS["min"] and max(rows) == DECODER_ROWS["max"] == 18
    assert max(set(rows), key=rows.count) == DECODER_ROWS["opt"]  # opt is the commonest prompt
    feed = decoder_bench_feed(spec, embedding, 4)
    ranges = decoder_shapes(spec)
    for name in DECODER_INPUTS:
        shape = feed[name].shape
        assert all(lo <= d <= hi for lo, d, hi in zip(ranges[name]["min"], shape, ranges[name]["max"])), (name, shape)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_both_onnx_files_agree_with_pytorch_on_the_parity_prompts(recipes, precision):
    """`check` opens each model through the TensorRT runner's `for_artifact` (ONNX Runtime for a
    recipe) and compares masks with PyTorch's at the precision's gates."""
    report = api.check_artifact(CheckRequest(path=recipes[precision].folder, samples=2))
    assert report["passed"], report["failures"]
    assert report["metrics"]["prompts"] == 16 and report["target"] == "trt"
    if precision == "fp32":
        assert report["metrics"]["mask_iou_min"] >= 0.99 and report["metrics"]["iou_prediction_max_error"] <= 1e-3


def test_the_int8_recipes_decoder_is_the_fp32_decoder(recipes):
    """Whatever the encoder's precision, decoder.onnx gives PyTorch's decoder outputs (FP32 gates)."""
    import onnxruntime as ort
    import torch

    from evitdeploy.backends.promptable import decoder_bench_feed
    from evitdeploy.models import build_model

    artifact = recipes["int8"]
    model, spec = build_model(artifact.spec, None, 0, None)
    decoder = model.decoder(spec.decoder_masks)
    session = ort.InferenceSession(str(artifact.folder / "decoder.onnx"), providers=["CPUExecutionProvider"])
    embedding = np.random.default_rng(5).standard_normal((1, *spec.embedding)).astype(np.float32)
    for points in (1, 4, 16):
        feed = decoder_bench_feed(spec, embedding, points)
        masks, ious = session.run(None, feed)
        with torch.no_grad():
            expected = decoder(*(torch.from_numpy(feed[n]) for n in decoder.input_names))
        assert np.abs(masks - expected[0].numpy()).max() < 1e-3 and np.abs(ious - expected[1].numpy()).max() < 1e-5


def test_engine_builds_keep_the_decoder_fp32_at_every_precision():
    spec = get_spec("efficientvit_sam_tiny")
    for precision in ("fp32", "fp16", "int8"):
        encoder, decoder = trt_exporter.engine_builds(spec, precision, None, shapes(spec))
        assert (encoder.role, encoder.onnx, encoder.engine, encoder.precision) == ("encoder", "encoder.onnx", "encoder.engine", precision)
        assert (decoder.role, decoder.onnx, decoder.engine, decoder.precision, decoder.plan) == ("decoder", "decoder.onnx", "decoder.engine", "fp32", None)
    (model,) = trt_exporter.engine_builds(get_spec("efficientvit_b0"), "fp16", None, shapes(get_spec("efficientvit_b0")))
    assert (model.onnx, model.engine, list(model.shapes)) == ("model.onnx", "model.engine", ["image"])


def test_build_engine_gives_every_decoder_input_its_profile_shape(recipes, standin_tensorrt):
    """build_engine on decoder.onnx, as the export and a bundle's device code call it: one profile
    with all five named inputs, no precision flag, nothing pinned."""
    from evitdeploy.backends.tensorrt.device import STRONG, build_engine

    artifact = recipes["int8"]
    _, decoder = trt_exporter.engine_builds(artifact.spec, "int8", None, shapes(artifact.spec))
    _, info = build_engine(standin_tensorrt, artifact.folder / decoder.onnx, decoder.shapes, STRONG, precision=decoder.precision)
    build = standin_tensorrt.RECORD["builds"][-1]
    assert info["pinned_fp32_layers"] == 0 and build["flags"] == [] and build["pinned"] == []
    assert build["profiles"] == [{name: {k: list(v) for k, v in bounds.items()} for name, bounds in decoder_shapes(artifact.spec).items()}]


@pytest.fixture
def stand_in_tensorrt(monkeypatch, standin_tensorrt):
    """The recording stand-in TensorRT and the fake libcudart, seen by the exporter too."""
    identity = {"gpu": "Stand-in GPU", "compute_capability": "8.7"}
    monkeypatch.setattr(trt_exporter, "import_tensorrt", lambda: standin_tensorrt)
    monkeypatch.setattr(trt_exporter, "gpu_identity", lambda: identity)
    return standin_tensorrt


def test_an_engine_export_of_sam_names_both_engines_and_checks_through_them(tmp_path, stand_in_tensorrt):
    """With TensorRT (stood in for): encoder.engine and decoder.engine built, the manifest's models
    are the engines, and `check` runs each through the TensorRT runner."""
    artifact = api.export_model(ExportRequest(model="efficientvit_sam_tiny", target="trt", precision="fp32", output=tmp_path / "engines"))
    assert artifact.manifest["models"] == {"encoder": "encoder.engine", "decoder": "decoder.engine"} and artifact.model_file.name == "encoder.engine"
    assert [build["strongly_typed"] for build in stand_in_tensorrt.RECORD["builds"]] == [True, True]
    export = artifact.manifest["export"]
    assert export["engine"]["built"] and export["decoder"]["engine"]["built"] and export["decoder"]["engine"]["gpu"] == "Stand-in GPU"
    assert artifact.manifest["toolchain"]["tensorrt"] == "10.99.0"
    report = api.check_artifact(CheckRequest(path=artifact.folder, samples=1))
    assert report["passed"] and report["metrics"]["prompts"] == 8


def test_build_in_a_sam_bundle_builds_both_engines_and_checks_them(cli, tmp_path, stand_in_tensorrt):
    """`evitdeploy build` on a SAM bundle (TensorRT stood in for): the bundle's device code builds
    both engines (cached beside it), runs them on reference.npz's prompts against PyTorch's masks,
    and times GPU compute of each; the bundle itself is not changed."""
    folder = tmp_path / "a100"
    result = cli("deploy", "--profile", "a100", "-m", "efficientvit_sam_tiny", "-p", "fp32", "--samples", "2", "-o", folder, "--json")
    assert result.exit_code == 0, result.output
    before = (folder / "manifest.json").read_bytes()
    built = cli("build", folder, "--count", "3", "--json")
    assert built.exit_code == 0, built.output
    report = json.loads(built.stdout)
    assert report["passed"], report["failures"]
    assert report["parity"]["metrics"]["prompts"] == 16 and report["parity"]["metrics"]["mask_iou_min"] >= 0.99
    assert report["gpu_compute"]["count"] == 3 and report["decoder_gpu_compute"]["count"] == 3
    encoder, decoder = stand_in_tensorrt.RECORD["builds"]
    spec = get_spec("efficientvit_sam_tiny")
    assert encoder["profiles"] == [{"image": {"min": [1, 3, 256, 256], "opt": [1, 3, 256, 256], "max": [64, 3, 256, 256]}}]  # the profile's batch range
    assert decoder["profiles"] == [{name: {k: list(v) for k, v in bounds.items()} for name, bounds in decoder_shapes(spec).items()}]
    assert set(report["engines"]) == {"encoder.engine", "decoder.engine"} and report["engines"]["decoder.engine"]["gpu"] == "Stand-in GPU"
    assert (folder / "manifest.json").read_bytes() == before and not (folder / "encoder.engine").exists()


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_sam_engines_build_and_run_every_prompt_size(tmp_path):
    """On a GPU with TensorRT: both engines built, the decoder engine fed 1 to 16 points (its input
    shapes set per call) against decoder.onnx, and `check` passing on the engine pair."""
    from evitdeploy.backends.onnxruntime.runner import OnnxRuntimeRunner
    from evitdeploy.backends.promptable import decoder_bench_feed
    from evitdeploy.backends.tensorrt.runner import TensorRTRunner

    artifact = api.export_model(ExportRequest(model="efficientvit_sam_tiny", target="trt", precision="fp32", output=tmp_path / "engines"))
    assert artifact.manifest["models"] == {"encoder": "encoder.engine", "decoder": "decoder.engine"}
    assert artifact.manifest["export"]["engine"]["built"] and artifact.manifest["export"]["decoder"]["engine"]["built"]
    spec = artifact.spec
    embedding = np.random.default_rng(1).standard_normal((1, *spec.embedding)).astype(np.float32)
    with TensorRTRunner(artifact.folder / "decoder.engine", spec, artifact.manifest) as engine, OnnxRuntimeRunner(artifact.folder / "decoder.onnx") as onnx:
        assert engine.inputs == list(DECODER_INPUTS)  # the engine takes the decoder inputs by name, in order
        for points in (1, 4, 16):
            feed = decoder_bench_feed(spec, embedding, points)
            got, expected = engine.infer(feed), onnx.infer(feed)
            assert set(got) == {"low_res_masks", "iou_predictions"}
            assert np.abs(got["low_res_masks"] - expected["low_res_masks"]).max() < 1e-2
        assert len(engine.gpu_times_ms(feed, warmup=2, count=5)) == 5
    report = api.check_artifact(CheckRequest(path=artifact.folder, samples=2))
    assert report["passed"], report["failures"]


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_build_on_the_device_builds_and_checks_a_sam_bundle(cli, tmp_path):
    """On a GPU with TensorRT: `evitdeploy build` on an INT8 SAM bundle builds both engines and
    passes parity against reference.npz."""
    folder = tmp_path / "bundle"
    result = cli("deploy", "--profile", "jetson-orin-nano", "-m", "efficientvit_sam_tiny", "-p", "int8", "-o", folder)
    assert result.exit_code == 0, result.output
    result = cli("build", folder, "--count", "5", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["passed"] and report["engine"]["built"] and report["decoder_engine"]["built"]
    assert (folder / "encoder.engine").is_file() and (folder / "decoder.engine").is_file()
