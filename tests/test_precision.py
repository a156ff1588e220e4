"""Calibration, ranges, precision plans and the FP16/INT8 ONNX writers (no trained weights needed)."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from helpers import assert_clean_error
from evitdeploy.precision.calibset import build_calibration_set, varied_images
from evitdeploy.precision.plan import (
    PrecisionPlan,
    fp16_plan,
    group_of,
    int8_plan,
    is_attention_core,
    module_path,
)
from evitdeploy.precision.ranges import AbsHistogram, Ranges, collect_ranges
from evitdeploy.precision.sensitivity import search
from evitdeploy.errors import UserError
from evitdeploy.precision.qdq import integer_hardswish
from evitdeploy.models import get_spec

SPEC = get_spec("efficientvit_b0").with_input(1, 64, 64)


@pytest.mark.fast
def test_calibration_set_is_deterministic_and_reports_its_sources():
    first = build_calibration_set(SPEC, None, 12, seed=3)
    again = build_calibration_set(SPEC, None, 12, seed=3)
    other = build_calibration_set(SPEC, None, 12, seed=4)
    assert first.inputs.shape == (12, 3, 64, 64) and first.inputs.dtype == np.float32
    assert first.report["sha256"] == again.report["sha256"] != other.report["sha256"]
    assert first.report["sources"] == {"scikit-image sample photos": 8} and first.report["crops_and_flips"] == 4
    assert first.report["count"] == 12


@pytest.mark.fast
def test_crops_and_flips_keep_the_originals_first():
    images = [np.full((40, 60, 3), i, np.uint8) for i in range(3)]
    varied, count = varied_images(images, 7, seed=0)
    assert count == 4 and all(v is images[i] or (v == images[i]).all() for i, v in enumerate(varied[:3]))
    assert all(v.shape[0] < 40 and v.shape[1] < 60 for v in varied[3:])


@pytest.mark.fast
def test_calibration_from_an_npz_of_photos(tmp_path):
    photos = np.random.default_rng(0).integers(0, 255, (5, 80, 80, 3), dtype=np.uint8)
    np.savez(tmp_path / "calib.npz", image=photos)
    calibration = build_calibration_set(SPEC, tmp_path / "calib.npz", 5)
    assert calibration.inputs.shape == (5, 3, 64, 64) and calibration.report["crops_and_flips"] == 0


@pytest.mark.fast
def test_bad_calibration_sources_are_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="neither an image folder nor an .npz"):
        build_calibration_set(SPEC, tmp_path / "notes.txt", 4)
    with pytest.raises(UserError, match="calib-count"):
        build_calibration_set(SPEC, None, 0)


@pytest.mark.fast
def test_histogram_grows_without_rereading_and_gives_percentiles():
    rng = np.random.default_rng(0)
    values = [rng.standard_normal(50_000).astype(np.float32) * scale for scale in (1.0, 3.0, 10.0)]
    histogram = AbsHistogram()
    for v in values:
        histogram.add(np.abs(v))
    everything = np.abs(np.concatenate(values))
    assert histogram.counts.sum() == everything.size
    assert histogram.bound >= everything.max()
    for percent in (50.0, 99.0, 99.9):
        assert histogram.percentile(percent) == pytest.approx(np.percentile(everything, percent), rel=0.03, abs=0.05)


@pytest.mark.fast
def test_entropy_threshold_clips_a_long_tail():
    rng = np.random.default_rng(0)
    histogram = AbsHistogram()
    histogram.add(np.abs(np.concatenate([rng.standard_normal(200_000), [80.0]])).astype(np.float32))
    threshold = histogram.entropy_threshold()
    assert 2.0 < threshold < 40.0  # well inside the lone outlier, well outside the bulk


def _tiny_graph(path):
    """x -> Conv -> HardSwish -> Conv: small enough to check ranges by hand."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((2, 4, 1, 1)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("Conv", ["image", "w1"], ["a"], name="/stem/in_conv/conv/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("HardSwish", ["a"], ["b"], name="/stem/in_conv/act/HardSwish"),
        helper.make_node("Conv", ["b", "w2"], ["logits"], name="/head/classifier/conv/Conv"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2, 8, 8])],
        [w1, w2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return model


@pytest.mark.fast
def test_ranges_match_the_tensors_onnxruntime_computes(tmp_path):
    model = _tiny_graph(tmp_path / "tiny.onnx")
    inputs = np.random.default_rng(1).standard_normal((4, 1, 3, 8, 8)).astype(np.float32)
    ranges = collect_ranges(tmp_path / "tiny.onnx", inputs[:, 0], "image", {"count": 4}, with_entropy=True)
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    exposed.graph.output.append(helper.make_tensor_value_info("a", TensorProto.FLOAT, None))
    session = ort.InferenceSession(exposed.SerializeToString(), providers=["CPUExecutionProvider"])
    a = np.concatenate([session.run(["a"], {"image": x})[0] for x in inputs])
    assert ranges.tensors["a"]["min"] == pytest.approx(a.min()) and ranges.tensors["a"]["max"] == pytest.approx(a.max())
    assert ranges.tensors["a"]["module"] == "stem.in_conv.conv" and ranges.tensors["a"]["op"] == "Conv"
    low, high = ranges.interval("a", "percentile", 99.9)
    assert a.min() <= low <= 0 <= high <= a.max()
    assert Ranges.from_dict(json.loads(json.dumps(ranges.to_dict()))).tensors == ranges.tensors


@pytest.mark.fast
def test_module_paths_and_blocks_come_from_node_names():
    name = "/stages/stages.2/blocks/blocks.1/context_module/main/qkv/conv/Conv"
    assert module_path(name) == "stages.2.blocks.1.context_module.main.qkv.conv"
    assert group_of(module_path(name)) == "stages.2.blocks.1.context_module"
    assert group_of(module_path("/stages/stages.0/blocks/blocks.1/Add")) == "stages.0.blocks.1"
    assert group_of(module_path("/head/input_ops/input_ops.0/conv/Conv")) == "head.input_ops.0"
    assert is_attention_core(module_path("/stages/stages.2/blocks/blocks.1/context_module/main/Div"))
    assert not is_attention_core(module_path(name))


@pytest.fixture(scope="module")
def b0_graph(tmp_path_factory):
    """The FP32 ONNX graph of B0 at 64x64 and its ranges on real photos."""
    from evitdeploy.graph import write_graph
    from evitdeploy.models import build_model

    folder = tmp_path_factory.mktemp("b0graph")
    model, spec = build_model(SPEC)
    write_graph(model, spec, folder / "fp32.onnx", 17, True)
    calibration = build_calibration_set(spec, None, 8)
    ranges = collect_ranges(folder / "fp32.onnx", calibration.inputs, spec.input_name, calibration.report)
    return folder / "fp32.onnx", spec, ranges


def test_fp16_plan_keeps_the_attention_core_and_overflowing_tensors_in_fp32(b0_graph):
    path, spec, ranges = b0_graph
    model = onnx.load(str(path))
    plan = fp16_plan(model, ranges, spec)
    divisions = [d for d in plan.decisions if d.op == "Div" and is_attention_core(d.module)]
    assert divisions and all(d.precision == "fp32" and "LiteMLA" in d.reason for d in divisions)
    convs = [d for d in plan.decisions if d.op == "Conv"]
    assert all(d.precision == "fp16" for d in convs)
    # A tensor measured past 65504/margin: its producer and every consumer move to FP32.
    wide = next(d for d in plan.decisions if d.node == "/stages/stages.0/blocks/blocks.0/main/inverted_conv/conv/Conv")
    tensor = next(n.output[0] for n in model.graph.node if n.name == wide.node)
    tensors = {**ranges.tensors, tensor: {**ranges.tensors[tensor], "absmax": 30000.0}}
    replanned = fp16_plan(model, Ranges(tensors, ranges.calibration), spec)
    consumers = {n.name for n in model.graph.node if tensor in n.input}
    moved = {d.node for d in replanned.decisions if d.precision == "fp32" and d.reason.startswith("range")}
    assert moved == {wide.node} | consumers


def test_int8_plan_quantizes_convolutions_and_leaves_the_attention_core_float(b0_graph):
    path, spec, _ = b0_graph
    plan = int8_plan(onnx.load(str(path)), spec)
    assert {d.op for d in plan.decisions if d.precision == "int8"} == {"Conv", "Add", "HardSwish"}
    assert all(d.precision == "fp32" for d in plan.decisions if is_attention_core(d.module))
    restored = PrecisionPlan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert restored.decisions == plan.decisions


def test_integer_hardswish_matches_the_float_round_trip_and_runs_as_qlinearmul(b0_graph, tmp_path):
    from evitdeploy.precision.qdq import quantize

    path, spec, ranges = b0_graph
    plan = int8_plan(onnx.load(str(path)), spec)
    info = quantize(path, plan, ranges, tmp_path / "int8.onnx")
    assert info["integer_hardswish"] > 0
    quantized = onnx.load(str(tmp_path / "int8.onnx"))
    onnx.checker.check_model(quantized, full_check=True)
    assert not [n for n in quantized.graph.node if n.op_type == "HardSwish" and "head" not in n.name]
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(str(tmp_path / "int8.onnx"), options, providers=["CPUExecutionProvider"])
    fused = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    float_hardswish = [n for n in quantized.graph.node if n.op_type == "HardSwish"]  # the classifier's, planned float
    assert fused.count("QLinearMul") == info["integer_hardswish"] and "QLinearConv" in fused
    assert fused.count("HardSigmoid") == len(float_hardswish) == 1


def _hardswish_qdq(scale_in: float, zero_in: int, scale_out: float, zero_out: int, rewrite: bool):
    initializers = [
        numpy_helper.from_array(np.array(scale_in, np.float32), "s"),
        numpy_helper.from_array(np.array(zero_in, np.uint8), "z"),
        numpy_helper.from_array(np.array(scale_out, np.float32), "s2"),
        numpy_helper.from_array(np.array(zero_out, np.uint8), "z2"),
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["x"], name="dq"),
        helper.make_node("HardSwish", ["x"], ["y"], name="hs"),
        helper.make_node("QuantizeLinear", ["y", "s2", "z2"], ["out"], name="q"),
    ]
    graph = helper.make_graph(
        nodes,
        "hs",
        [helper.make_tensor_value_info("q", TensorProto.UINT8, [256])],
        [helper.make_tensor_value_info("out", TensorProto.UINT8, [256])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if rewrite:
        assert integer_hardswish(model) == 1
        from onnxruntime.quantization.onnx_model import ONNXModel

        ONNXModel(model).topological_sort()
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"q": np.arange(256, dtype=np.uint8)})[0].astype(int)


@pytest.mark.fast
def test_integer_hardswish_is_within_one_level_of_the_float_hardswish_for_every_input():
    # x in [-6, 8.3] (scale 14.3/255; x=-3 sits at an integer level), output in [-0.4, 8.3]
    scale, zero = 14.28 / 255, 107
    for scale_out, zero_out in ((8.7 / 255, 12), (0.05, 8)):
        reference = _hardswish_qdq(scale, zero, scale_out, zero_out, rewrite=False)
        rewritten = _hardswish_qdq(scale, zero, scale_out, zero_out, rewrite=True)
        assert np.abs(reference - rewritten).max() <= 1


def test_sensitivity_search_stops_when_the_target_is_met_or_the_budget_is_spent(b0_graph):
    path, spec, _ = b0_graph
    plan = int8_plan(onnx.load(str(path)), spec)
    harmful = {"stages.3.blocks.0": 0.02, "head.in_conv": 0.01}

    def evaluate(candidate):
        # cosine drops by each harmful block still in INT8 (a stand-in for ONNX Runtime runs)
        int8_groups = {d.group for d in candidate.decisions if d.precision == "int8"}
        cosine = 1.0 - sum(cost for group, cost in harmful.items() if group in int8_groups) - 0.001 * len(int8_groups) / 20
        return {"cosine_min": cosine, "cosine_mean": cosine, "nonfinite": 0, "top1_agreement": 1.0}

    met = search(plan, evaluate, min_cosine=0.99, budget=5)
    assert met.search["met"] and met.search["stopped"] == "target met"
    assert met.summary()["float_groups"] == ["head.in_conv", "stages.3.blocks.0"]
    assert [s["float_groups"] for s in met.search["steps"]] == [[], ["stages.3.blocks.0"], ["stages.3.blocks.0", "head.in_conv"]]
    assert met.sensitivity[0]["group"] == "stages.3.blocks.0"
    spent = search(plan, evaluate, min_cosine=0.9999, budget=2)
    assert not spent.search["met"] and spent.search["stopped"] == "budget spent" and len(spent.search["steps"]) == 3


def test_export_int8_and_fp16_write_the_plan_and_ranges_beside_the_model(cli, tmp_path):
    for precision in ("int8", "fp16"):
        folder = tmp_path / precision
        result = cli(
            "export",
            "--model",
            "efficientvit_b0",
            "--height",
            "64",
            "--width",
            "64",
            "--precision",
            precision,
            "--calib-count",
            "8",
            "--search-budget",
            "0",
            "--output",
            folder,
            "--json",
        )
        assert result.exit_code == 0, result.output
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["precision"] == precision and manifest["calibration"]["count"] == 8
        assert {"model.onnx", "precision_plan.json", "ranges.json"} <= set(manifest["files"])
        plan = json.loads((folder / "precision_plan.json").read_text())
        assert plan["precision"] == precision and plan["summary"]["nodes"]["fp32"] > 0
        check = cli("check", folder, "--samples", "2", "--min-top1", "0", "--json")
        report = json.loads(check.stdout)
        assert report["tolerances"]["min_cosine"] == (0.98 if precision == "int8" else 0.999)
        assert report["metrics"]["nonfinite_outputs"] == 0


def test_plan_verb_explains_every_block(cli, tmp_path):
    result = cli("plan", "efficientvit_b0", "--height", "64", "--width", "64", "--calib-count", "8", "--explain", "--save", tmp_path / "plan.json", "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    # every block the rules quantized is ranked: those still INT8, and those the search moved to FP32 (host kernels decide which)
    ranked = [entry["group"] for entry in plan["sensitivity"]]
    still_int8 = {g["group"] for g in plan["groups"] if g["counts"].get("int8")}
    moved = set(plan["summary"]["float_groups"])
    assert len(ranked) == len(set(ranked)) and set(ranked) == still_int8 | moved and not still_int8 & moved
    assert all(0.0 <= entry["error"] <= 2.0 and "cosine_min" in entry for entry in plan["sensitivity"])
    assert "ranges" in json.loads((tmp_path / "plan.json").read_text())
    table = cli("plan", "efficientvit_b0", "--precision", "fp16", "--height", "64", "--width", "64", "--calib-count", "4")
    assert table.exit_code == 0 and "LiteMLA" in table.stdout


@pytest.mark.parametrize(
    "args, fragment",
    [
        (("--calib", "missing-folder"), "calibration data not found"),
        (("--calib-method", "magic"), "unknown calibration method"),
        (("--calib-count", "0"), "--calib-count 0 is not valid"),
        (("--min-cosine-target", "1.5"), "is not valid"),
    ],
)
def test_bad_precision_options_fail_cleanly_and_write_nothing(cli, tmp_path, args, fragment):
    folder = tmp_path / "out"
    result = cli("export", "--model", "efficientvit_b0", "--height", "64", "--width", "64", "--precision", "int8", *args, "--output", folder)
    assert_clean_error(result, 2, fragment)
    assert not folder.exists() and not list(tmp_path.glob(".out*"))


@pytest.mark.fast
def test_plan_refuses_fp32(cli):
    assert_clean_error(cli("plan", "efficientvit_b0", "--precision", "fp32"), 2, "has no plan")


def test_plain_fp16_overflows_in_linear_attention_where_the_plan_does_not(tmp_path):
    """A constructed case: one LiteMLA's q/k/v scaled x300 puts k^T v past 65504 (as trained models
    at Cityscapes resolution can: the sums grow with the token count). Plain FP16 storage gives
    inf/NaN; the plan, from measured ranges, keeps the attention core in FP32 and stays accurate."""
    import torch

    from evitdeploy.data import load_inputs
    from evitdeploy.backends.options import ExportOptions
    from evitdeploy.precision.options import PrecisionOptions
    from evitdeploy.backends import export
    from evitdeploy.models import build_model

    model, spec = build_model(get_spec("efficientvit_b0").with_input(1, 128, 128))
    with torch.no_grad():
        model.stages[2].blocks[1].context_module.main.qkv.conv.weight.mul_(300.0)
    inputs, source = load_inputs(spec, 128, 128, None, 4)
    options = ExportOptions(
        output=tmp_path / "planned",
        precision="fp16",
        validation_inputs=inputs,
        validation_source=source,
        reduced=PrecisionOptions(calib_count=4),
    )
    artifact = export(model, spec, "onnx", options)  # validates against PyTorch FP32 too
    ranges = json.loads((artifact.folder / "ranges.json").read_text())["tensors"]
    attention = [r["absmax"] for r in ranges.values() if r["module"] == "stages.2.blocks.1.context_module.main" and r["op"] == "MatMul"]
    assert max(attention) > 65504
    storage = artifact.manifest["precision_plan"]["fp16_storage_check"]
    assert storage["plain"]["nonfinite"] > 0
    assert storage["planned"]["nonfinite"] == 0 and storage["planned"]["cosine_min"] > 0.999
    check = artifact.manifest["validation"]["checks"][0]["metrics"]
    assert check["nonfinite_outputs"] == 0 and check["cosine_min"] > 0.999


def test_fp16_io_makes_the_model_take_and_give_float16(cli, tmp_path, digits_checkpoint_path):
    from evitdeploy.models import trained

    np.savez(tmp_path / "digits.npz", image=trained.digits_images("train")[0][:8])
    result = cli(
        "export",
        "--model",
        "efficientvit_b0",
        "--checkpoint",
        digits_checkpoint_path,
        "--height",
        "64",
        "--width",
        "64",
        "--precision",
        "fp16",
        "--fp16-io",
        "--calib",
        tmp_path / "digits.npz",
        "--calib-count",
        "8",
        "--output",
        tmp_path / "io16",
    )
    assert result.exit_code == 0, result.output
    session = ort.InferenceSession(str(tmp_path / "io16" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == session.get_outputs()[0].type == "tensor(float16)"


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_percentile_and_entropy_ranges_clip_inside_the_observed_range(b0_graph, method):
    path, spec, _ = b0_graph
    calibration = build_calibration_set(spec, None, 8)
    ranges = collect_ranges(path, calibration.inputs, spec.input_name, calibration.report, with_entropy=True)
    clipped = 0
    for name, stats in ranges.tensors.items():
        low, high = ranges.interval(name, method)
        assert stats["min"] <= low <= high <= stats["max"] or stats["min"] == stats["max"]
        clipped += (low, high) != (stats["min"], stats["max"])
    assert clipped > len(ranges.tensors) // 4  # most activations have tails worth clipping


def test_the_tensorrt_scheme_uses_symmetric_int8_activations(b0_graph, tmp_path):
    from evitdeploy.precision.qdq import quantize

    path, spec, ranges = b0_graph
    info = quantize(path, int8_plan(onnx.load(str(path)), spec), ranges, tmp_path / "trt.onnx", scheme="symmetric-s8")
    model = onnx.load(str(tmp_path / "trt.onnx"))
    initializers = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    zero_points = [initializers[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert info["integer_hardswish"] == 0 and zero_points
    assert all(z.dtype == np.int8 and not z.any() for z in zero_points)


@pytest.mark.fast
def test_default_calibration_count_shrinks_above_a_megapixel():
    from evitdeploy.precision.options import PrecisionOptions

    assert PrecisionOptions().count_for(224, 224) == 64
    assert PrecisionOptions().count_for(1024, 2048) == 16
    assert PrecisionOptions(calib_count=8).count_for(1024, 2048) == 8


@pytest.mark.fast
def test_large_tensors_keep_exact_extremes_while_the_histogram_samples():
    from evitdeploy.precision.ranges import HISTOGRAM_SAMPLE, TensorRange

    values = np.random.default_rng(0).standard_normal(4 * HISTOGRAM_SAMPLE).astype(np.float32)
    values[12345] = 50.0
    stats = TensorRange("node", "Conv")
    stats.add(values)
    assert stats.maximum == 50.0 and stats.minimum == values.min()
    assert stats.histogram.counts.sum() <= HISTOGRAM_SAMPLE + 1
    assert stats.histogram.percentile(99.0) == pytest.approx(np.percentile(np.abs(values), 99.0), rel=0.05)


@pytest.mark.fast
def test_held_out_images_are_not_calibration_images(tmp_path):
    photos = np.random.default_rng(0).integers(0, 255, (20, 72, 72, 3), dtype=np.uint8)
    np.savez(tmp_path / "calib.npz", image=photos)
    calibration = build_calibration_set(SPEC, tmp_path / "calib.npz", 12)
    held_out = build_calibration_set(SPEC, tmp_path / "calib.npz", 8, seed=1, held_out_after=12)
    expected = build_calibration_set(SPEC, tmp_path / "calib.npz", 8)  # same preprocessing, first 8
    assert not any(np.array_equal(h, c) for h in held_out.inputs for c in calibration.inputs)
    assert held_out.report["crops_and_flips"] == 0 and expected.inputs.shape == held_out.inputs.shape
    samples = build_calibration_set(SPEC, None, 8, seed=5, held_out_after=64)  # 8 photos only: crops, no originals
    originals = build_calibration_set(SPEC, None, 8)
    assert samples.report["crops_and_flips"] == 8
    assert not any(np.array_equal(h, c) for h in samples.inputs for c in originals.inputs)


@pytest.mark.fast
def test_the_default_photos_are_distinct_colour_photos():
    """scikit-image's `cat` and `chelsea` are one array, and `camera` is grayscale: neither belongs
    in a set meant to exercise a colour model's ranges."""
    from evitdeploy.data import SAMPLE_PHOTOS, sample_photos

    photos = sample_photos(len(SAMPLE_PHOTOS))
    assert len(photos) == len(SAMPLE_PHOTOS) >= 8
    for name, photo in zip(SAMPLE_PHOTOS, photos):
        assert photo.ndim == 3 and photo.shape[2] == 3 and photo.dtype == np.uint8, name
        assert not (np.array_equal(photo[..., 0], photo[..., 1]) and np.array_equal(photo[..., 1], photo[..., 2])), f"{name} is gray"
    for i in range(len(photos)):
        for j in range(i + 1, len(photos)):
            assert photos[i].shape != photos[j].shape or not np.array_equal(photos[i], photos[j]), (SAMPLE_PHOTOS[i], SAMPLE_PHOTOS[j])


@pytest.mark.fast
def test_a_normalizations_division_stays_float_by_rule_so_converters_keep_it_float(tmp_path):
    """SAM's neck writes LayerNorm2d out (mean, power, root, division): the INT8 plan keeps those
    ops float by rule, so LiteRT's recipe (FloatScopes) keeps them float too; an int8 divisor
    rounded to its zero point made LiteRT's DIV refuse to run the SAM encoder."""
    import onnx
    import torch

    from evitdeploy.models import get_spec
    from evitdeploy.models.prompt import LayerNorm2d
    from evitdeploy.precision.plan import FloatScopes, int8_plan

    class Neck(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.norm = torch.nn.Conv2d(3, 8, 1), LayerNorm2d(8)

        def forward(self, x):
            return self.norm(self.conv(x))

    model = torch.nn.Sequential()
    model.add_module("neck", Neck())
    torch.onnx.export(model.eval(), torch.randn(1, 3, 8, 8), tmp_path / "neck.onnx", dynamo=False, opset_version=17)
    plan = int8_plan(onnx.load(tmp_path / "neck.onnx"), get_spec("efficientvit_b0"))
    by_op = {d.op: d for d in plan.decisions}
    assert by_op["Div"].precision == "fp32" and by_op["Div"].reason.startswith("rule: normalization math")
    assert by_op["Conv"].precision == "int8"
    scopes = FloatScopes(plan)
    assert scopes.keeps("neck.norm", weighted=False) and not scopes.keeps("neck.conv", weighted=True)
