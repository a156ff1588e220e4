import numpy as np
import pytest

from evitdeploy.errors import UserError
from evitdeploy.parity import Tolerances, compare, tolerances_for
from evitdeploy.spec import ModelSpec

pytestmark = pytest.mark.fast  # metrics on arrays, no export

CLS = ModelSpec("m", "classification", "b0", "imagenet", 6, (1, 3, 64, 64))
SEG = ModelSpec("s", "segmentation", "b0", "cityscapes", 3, (1, 3, 64, 64), output_stride=8)


def test_identical_outputs_pass_with_perfect_metrics():
    logits = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    report = compare(CLS, logits, logits.copy(), "fp32", tolerances_for("fp32"))
    assert report["passed"] and report["failures"] == []
    m = report["metrics"]
    assert m["max_abs_error"] == 0 and m["top1_agreement"] == 1 and m["top5_agreement"] == 1
    assert abs(m["cosine_min"] - 1) < 1e-12


def test_a_flipped_top1_fails_fp32_and_is_counted():
    ref = np.array([[3.0, 1, 0, 0, 0, 0], [0, 2.0, 1, 0, 0, 0]], dtype=np.float32)
    cand = ref.copy()
    cand[1, 2] = 2.5  # sample 1 now prefers class 2; class 1 is still in its top 5
    report = compare(CLS, ref, cand, "fp32", tolerances_for("fp32"))
    assert not report["passed"]
    assert report["metrics"]["top1_agreement"] == 0.5
    assert report["metrics"]["top5_agreement"] == 1.0
    assert any("top-1 agreement" in f for f in report["failures"])
    assert any("max abs error" in f for f in report["failures"])


def test_a_reference_with_a_near_tie_at_the_top_is_not_judged_by_top1():
    """A random-weight model's best two classes 3e-4 apart on a range of ~2: its argmax is not an
    answer to agree with. Counted, not judged; the cosine still is; a decided sample still fails."""
    ref = np.array([[0.9549, 0.95458, 0.0, -1, 0.5, 0.2], [3.0, 1, 0, 0, 0, 0]], dtype=np.float32)
    cand = ref.copy()
    cand[0, 1] = 0.9552  # the tie flips
    report = compare(CLS, ref, cand, "int8", tolerances_for("int8"))
    assert report["passed"] and report["metrics"]["top1_agreement"] == 1.0 and report["metrics"]["top1_undecided"] == 1
    cand[1, 1] = 3.5  # the decided sample flips too
    report = compare(CLS, ref, cand, "int8", tolerances_for("int8"))
    assert not report["passed"] and report["metrics"]["top1_agreement"] == 0.0


def test_nan_in_candidate_always_fails():
    ref = np.ones((1, 6), dtype=np.float32)
    cand = ref.copy()
    cand[0, 0] = np.nan
    report = compare(CLS, ref, cand, "int8", Tolerances())
    assert not report["passed"] and report["metrics"]["nonfinite_outputs"] == 1
    assert np.isnan(report["metrics"]["cosine_min"])  # not reported as a perfect 1.0


def test_segmentation_pixel_agreement_and_miou_of_argmax_maps():
    ref = np.zeros((1, 3, 2, 2), dtype=np.float32)
    ref[0, 0, 0, :] = 1  # top row class 0
    ref[0, 1, 1, :] = 1  # bottom row class 1
    cand = ref.copy()
    cand[0, 2, 1, 1] = 5  # one pixel becomes class 2
    report = compare(SEG, ref, cand, "fp32", tolerances_for("fp32").override(max_abs=None, min_cosine=0))
    m = report["metrics"]
    assert m["pixel_agreement"] == 0.75
    # IoU: class 0 = 1, class 1 = 1/2, class 2 = 0 -> mean 0.5
    assert abs(m["miou"] - 0.5) < 1e-9
    assert not report["passed"]


def test_tolerance_overrides_replace_only_what_is_given():
    tol = tolerances_for("fp32").override(max_abs=1e-3)
    assert tol.max_abs == 1e-3 and tol.min_top1 == 1.0 and tol.min_cosine == 0.99999


def test_an_override_of_none_turns_that_gate_off():
    tol = tolerances_for("fp32").override(max_abs=None)
    assert tol.max_abs is None and tol.min_cosine == 0.99999  # the others kept
    ref = np.array([[30.0, 1, 0, 0, 0, 0]], dtype=np.float32)
    report = compare(CLS, ref, ref * 1.01, "fp32", tol)  # same direction and top-1, 0.3 off in absolute terms
    assert report["passed"], report["failures"]
    assert not compare(CLS, ref, ref * 1.01, "fp32", tolerances_for("fp32"))["passed"]
    off = tolerances_for("fp32").override(min_top1=None, min_cosine=None)
    assert off.min_top1 == 0.0 and off.min_cosine == 0.0 and off.max_abs == 1e-4


def test_an_override_of_an_unknown_gate_is_refused():
    with pytest.raises(UserError) as info:
        tolerances_for("fp32").override(max_abs_error=1e-3)
    assert "max_abs_error" in info.value.message


def test_check_atol_off_turns_the_max_abs_gate_off():
    from evitdeploy.cli import _tolerances

    assert _tolerances(None, None, None, None) == {}  # nothing given: the precision's defaults
    assert _tolerances("off", None, None, None) == {"max_abs": None}
    assert _tolerances("none", 0.9, None, None) == {"max_abs": None, "min_cosine": 0.9}
    assert _tolerances("1e-3", None, None, None) == {"max_abs": 1e-3}
    for bad in ("abc", "-1", "nan"):
        with pytest.raises(UserError):
            _tolerances(bad, None, None, None)


def test_check_atol_accepts_off_on_the_command_line(cli, tmp_path):
    from helpers import assert_clean_error

    assert_clean_error(cli("check", tmp_path / "missing", "--atol", "loose"), 2, "--atol")
    off = cli("check", tmp_path / "missing", "--atol", "off")  # parsed, then the artifact is missing
    assert_clean_error(off, 2, "artifact not found")


def test_shape_mismatch_is_a_failure_not_a_crash():
    report = compare(CLS, np.zeros((2, 6)), np.zeros((2, 5)), "fp32", tolerances_for("fp32"))
    assert not report["passed"] and "shape" in report["failures"][0]


def test_an_all_zero_output_agrees_only_with_another_all_zero_output():
    from evitdeploy.device.metrics import cosine_per_sample

    live = np.random.default_rng(1).standard_normal((3, 6))
    dead = np.zeros((3, 6))
    assert np.array_equal(cosine_per_sample(dead, dead), np.ones(3))
    assert np.array_equal(cosine_per_sample(live, dead), np.zeros(3))  # a dead candidate
    assert np.array_equal(cosine_per_sample(dead, live), np.zeros(3))
    mixed = live.copy()
    mixed[1] = 0
    cos = cosine_per_sample(live, mixed)
    assert cos[1] == 0.0 and abs(cos[0] - 1) < 1e-12 and abs(cos[2] - 1) < 1e-12
    # the cosine gate refuses a dead candidate (top-1 alone would not: argmax of zeros is class 0)
    report = compare(CLS, live.astype(np.float32), dead.astype(np.float32), "int8", Tolerances(min_cosine=0.98))
    assert not report["passed"] and report["metrics"]["cosine_min"] == 0.0


def test_check_bench_and_verify_py_pick_onnx_runtime_providers_in_one_order(tmp_path, monkeypatch):
    """The host (backends/onnxruntime/runner.py) and the device (verify.py) must run an ONNX model on the
    same execution provider, or a bundle's parity on the device is not the parity measured here."""
    import onnxruntime as ort

    from evitdeploy.backends.onnxruntime import device
    from evitdeploy.backends.onnxruntime.runner import OnnxRuntimeRunner
    from evitdeploy.device import runtimes

    chosen = []

    class Session:
        def __init__(self, path, options=None, providers=None):
            chosen.append(list(providers))

        def get_inputs(self):
            return [type("Input", (), {"name": "image", "type": "tensor(float)"})()]

        def get_providers(self):
            return chosen[-1]

    everything = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(ort, "InferenceSession", Session)
    monkeypatch.setattr(ort, "get_available_providers", lambda: everything)
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not read by the fake session")
    OnnxRuntimeRunner(model).load()
    runtimes.open_model(tmp_path, {"target": "onnx", "model_file": "model.onnx", "spec": {"output_name": "logits"}}, None, device)
    assert chosen[0] == chosen[1] == device.onnx_providers(everything)
    assert chosen[0][-1] == "CPUExecutionProvider"
    assert device.onnx_providers(["CPUExecutionProvider", "SomeOtherExecutionProvider"]) == ["CPUExecutionProvider"]
