import numpy as np

from evitdeploy.parity import Tolerances, compare, tolerances_for
from evitdeploy.spec import ModelSpec

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
    tol = tolerances_for("fp32").override(max_abs=1e-3, min_top1=None)
    assert tol.max_abs == 1e-3 and tol.min_top1 == 1.0


def test_shape_mismatch_is_a_failure_not_a_crash():
    report = compare(CLS, np.zeros((2, 6)), np.zeros((2, 5)), "fp32", tolerances_for("fp32"))
    assert not report["passed"] and "shape" in report["failures"][0]
