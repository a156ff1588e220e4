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
from evitdeploy.backends.tensorrt import runtime as trt_runtime
from evitdeploy.backends.tensorrt.plan import DECODER_ROWS, decoder_shapes, fp32_nodes, shapes
from evitdeploy.device.prompts import DECODER_INPUTS
from evitdeploy.models import get_spec
from evitdeploy.requests import CheckRequest, ExportRequest
from helpers import RecordingTensorRT


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
    assert ("--int8" in encoder) == (precision == "int8") and ("--fp16" in encoder) == (precision == "int8")
    assert not any(c.startswith(("--fp16", "--int8", "--precisionConstraints", "--layerPrecisions")) for c in decoder)  # FP32
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


class RecordingProfiles(RecordingTensorRT):
    """test_tensorrt's recording stand-in, keeping every input's profile shape (not only the last)."""

    def __init__(self):
        super().__init__()
        self.record["profile"] = {}
        outer, builder = self, self.Builder

        class Profile:
            def set_shape(self, name, low, opt, high):
                outer.record["profile"][name] = {"min": low, "opt": opt, "max": high}

        class Builder(builder):
            def create_optimization_profile(self):
                return Profile()

        self.Builder = Builder


def test_build_engine_gives_every_decoder_input_its_profile_shape(recipes):
    """build_engine on decoder.onnx, as the export and `evitdeploy build` call it: one profile with
    all five named inputs, no precision flag, nothing pinned."""
    artifact = recipes["int8"]
    _, decoder = trt_exporter.engine_builds(artifact.spec, "int8", None, shapes(artifact.spec))
    trt = RecordingProfiles()
    engine, info = trt_exporter.build_engine(
        trt, artifact.folder / decoder.onnx, artifact.spec, precision=decoder.precision, plan=decoder.plan, shape_range=decoder.shapes
    )
    assert engine == b"engine" and info["pinned_fp32_layers"] == 0
    assert trt.record["profile"] == decoder_shapes(artifact.spec) and trt.record["flags"] == set()


@pytest.fixture
def stand_in_tensorrt(monkeypatch):
    """TensorRT and the GPU stood in for: an engine "built" is a copy of its ONNX (the calls are
    recorded), and the engine runner is ONNX Runtime on that copy."""
    from evitdeploy.backends.onnxruntime.runner import OnnxRuntimeRunner
    from evitdeploy.backends.tensorrt import runner as trt_runner
    from evitdeploy.device.metrics import time_model

    built = []

    def build_engine(trt, onnx_path, spec, precision, plan, shape_range, workspace_mib=0, timing_cache=None):
        built.append((onnx_path.name, precision, plan, shape_range))
        return onnx_path.read_bytes(), {"pinned_fp32_layers": 0, "build_s": 0.0, "timing_cache": b"cache"}

    class OnnxAsEngine(OnnxRuntimeRunner):
        def __init__(self, engine_path, spec, manifest=None):
            super().__init__(engine_path, threads=2)

        def gpu_times_ms(self, batch, warmup=20, count=100):
            feed = batch if isinstance(batch, dict) else {self.session.get_inputs()[0].name: batch}
            return time_model(lambda _: self.infer(feed), None, 1, count)

    class TensorRT:
        __version__ = "10.99"

    identity = {"gpu": "Stand-in GPU", "compute_capability": "9.0"}
    for module in (trt_runtime, trt_exporter):  # the exporter imported both by name
        monkeypatch.setattr(module, "import_tensorrt", lambda: TensorRT)
        monkeypatch.setattr(module, "gpu_identity", lambda: identity)
    monkeypatch.setattr(trt_exporter, "build_engine", build_engine)
    monkeypatch.setattr(trt_runner, "TensorRTRunner", OnnxAsEngine)
    return built


def test_an_engine_export_of_sam_names_both_engines_and_checks_through_them(tmp_path, stand_in_tensorrt):
    """With TensorRT (stood in for): encoder.engine and decoder.engine built, the manifest's models
    are the engines, and `check` runs each through the TensorRT runner."""
    artifact = api.export_model(ExportRequest(model="efficientvit_sam_tiny", target="trt", precision="fp32", output=tmp_path / "engines"))
    assert artifact.manifest["models"] == {"encoder": "encoder.engine", "decoder": "decoder.engine"} and artifact.model_file.name == "encoder.engine"
    assert [(name, precision) for name, precision, _, _ in stand_in_tensorrt] == [("encoder.onnx", "fp32"), ("decoder.onnx", "fp32")]
    export = artifact.manifest["export"]
    assert export["engine"]["built"] and export["decoder"]["engine"]["built"] and export["decoder"]["engine"]["gpu"] == "Stand-in GPU"
    assert artifact.manifest["toolchain"]["tensorrt"] == "10.99"
    report = api.check_artifact(CheckRequest(path=artifact.folder, samples=1))
    assert report["passed"] and report["metrics"]["prompts"] == 8


def test_build_in_a_sam_bundle_builds_both_engines_and_checks_them(cli, tmp_path, stand_in_tensorrt):
    """`evitdeploy build` on a SAM bundle (TensorRT stood in for): both engines built, run,
    checked against reference.npz's prompts and masks; the manifest records both engines."""
    from evitdeploy.backends.tensorrt import build as trt_build

    folder = tmp_path / "a100"
    result = cli("deploy", "--profile", "a100", "-m", "efficientvit_sam_tiny", "-p", "fp32", "--samples", "2", "-o", folder, "--json")
    assert result.exit_code == 0, result.output
    built = stand_in_tensorrt
    report = trt_build.build_in_bundle(folder, count=3)
    assert report["passed"], report["failures"]
    assert report["parity"]["metrics"]["prompts"] == 16 and report["parity"]["metrics"]["mask_iou_min"] >= 0.99
    assert report["gpu_compute"]["count"] == 3 and report["decoder_gpu_compute"]["count"] == 3
    spec = get_spec("efficientvit_sam_tiny")
    assert [(name, precision, plan) for name, precision, plan, _ in built] == [("encoder.onnx", "fp32", None), ("decoder.onnx", "fp32", None)]
    assert built[0][3] == {"image": {"min": (1, 3, 256, 256), "opt": (1, 3, 256, 256), "max": (64, 3, 256, 256)}}  # the profile's batch range
    assert built[1][3] == decoder_shapes(spec)
    assert (folder / "encoder.engine").read_bytes() == (folder / "encoder.onnx").read_bytes() and (folder / "decoder.engine").is_file()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["export"]["engine"]["built"] and manifest["export"]["decoder"]["engine"]["built"]
    assert manifest["export"]["decoder"]["engine"]["gpu"] == "Stand-in GPU" and manifest["toolchain"]["tensorrt"] == "10.99"
    assert {"encoder.engine", "decoder.engine", "timing.cache"} <= set(manifest["files"])


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
