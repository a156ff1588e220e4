"""The precision plan run by PyTorch in FP16 (precision.torch_plan): what TensorRT's "obey" build
computes, seen without TensorRT. On the CPU here; the same test on CUDA carries the `gpu` marker."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from evitdeploy import api
from evitdeploy.data import preprocess
from evitdeploy.precision.plan import PrecisionPlan
from evitdeploy.precision.torch_plan import fp16_numerics, half_following, run_half
from evitdeploy.precision.options import PrecisionOptions
from evitdeploy.requests import PlanRequest
from evitdeploy.models import build_model, get_spec, trained
from evitdeploy.models.attention import LiteMLA

SEG = "efficientvit_seg_b0_cityscapes"


def mosaic_plan(tmp_path, checkpoint, height: int, width: int) -> PrecisionPlan:
    photos, _ = trained.digit_mosaics(2, height, width, seed=3, split="train")
    np.savez(tmp_path / "calib.npz", image=photos)
    reduced = PrecisionOptions(calib=str(tmp_path / "calib.npz"), calib_count=2)
    made = api.plan_model(PlanRequest(model=SEG, precision="fp16", checkpoint=checkpoint, height=height, width=width, reduced=reduced))
    made.pop("ranges")
    return PrecisionPlan.from_dict(made)


def mosaic_numerics(checkpoint, plan, height: int, width: int, device: str) -> dict:
    model, spec = build_model(get_spec(SEG).with_input(1, height, width), checkpoint, 0, None)
    photos, labels = trained.digit_mosaics(1, height, width, seed=4, split="test")
    result = fp16_numerics(model, spec, plan, preprocess(list(photos), spec, height, width), device)
    results = {label: report["metrics"] for label, report in result["reports"].items()}
    for label, out in result["outputs"].items():
        results.setdefault(label, {})["labels_miou"] = trained.segmentation_scores(np.nan_to_num(out), labels)["miou"]
    results["plan"]["passed"] = result["reports"]["plan"]["passed"]
    return results


def test_the_plan_keeps_fp16_finite_where_plain_fp16_overflows(tmp_path, mosaic_checkpoint_path):
    """Trained Seg-B0 at 512x1024 (LiteMLA's token sums already pass 65504 there), FP16 in PyTorch:
    plain FP16 gives inf/NaN and a wrong map, the plan none and the FP32 map."""
    plan = mosaic_plan(tmp_path, mosaic_checkpoint_path, 512, 1024)
    results = mosaic_numerics(mosaic_checkpoint_path, plan, 512, 1024, "cpu")
    assert results["plain"]["nonfinite_outputs"] > 0 and results["plain"]["pixel_agreement"] < 0.5, results
    assert results["plan"]["nonfinite_outputs"] == 0 and results["plan"]["passed"], results
    assert results["plan"]["pixel_agreement"] >= 0.99, results
    assert results["plan"]["labels_miou"] >= results["fp32"]["labels_miou"] - 0.005, results


@pytest.mark.gpu
def test_the_plan_on_cuda_at_cityscapes_resolution(tmp_path, mosaic_checkpoint_path):
    """The plan's FP16 numerics where TensorRT runs them: the same, at 1024x2048, on CUDA's FP16 kernels."""
    plan = mosaic_plan(tmp_path, mosaic_checkpoint_path, 1024, 2048)
    results = mosaic_numerics(mosaic_checkpoint_path, plan, 1024, 2048, "cuda")
    print(results)
    assert results["plain"]["nonfinite_outputs"] > 0, results
    assert results["plan"]["nonfinite_outputs"] == 0 and results["plan"]["pixel_agreement"] >= 0.99, results


def test_dtypes_follow_the_plan_and_plain_fp16_turns_the_islands_off(tmp_path):
    """Kept modules hold FP32 parameters and keep LiteMLA's float32 island; the rest is FP16."""
    model, spec = build_model(get_spec("efficientvit_b0").with_input(1, 64, 64), None, 0, None)
    made = api.plan_model(
        PlanRequest(
            model="efficientvit_b0",
            precision="fp16",
            height=64,
            width=64,
            reduced=PrecisionOptions(calib_count=4),
        ),
    )
    made.pop("ranges")
    plan = PrecisionPlan.from_dict(made)
    planned = copy.deepcopy(model)
    info = half_following(planned, plan)
    attention = [name for name, m in planned.named_modules() if isinstance(m, LiteMLA)]
    assert attention and set(attention) <= set(info["fp32_modules"])
    assert info["fp32_islands"] == len(attention)
    modules = dict(planned.named_modules())
    for name, module in modules.items():
        own = list(module.parameters(recurse=False))
        want = torch.float32 if name in info["fp32_modules"] else torch.float16
        assert all(p.dtype == want for p in own), name
    assert any(p.dtype == torch.float16 for p in modules[attention[0]].qkv.parameters())  # children keep their own
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    with torch.inference_mode():
        reference = model(torch.from_numpy(x)).numpy()
    out = run_half(planned, x)
    cosine = (out * reference).sum(1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(reference, axis=1))
    assert cosine.min() > 0.999

    plain = copy.deepcopy(model)
    info = half_following(plain, None)
    assert info == {"plan": False, "fp32_modules": [], "fp32_islands": 0}
    assert all(p.dtype == torch.float16 for p in plain.parameters())
    assert not any(m.fp32_island for m in plain.modules() if isinstance(m, LiteMLA))


def test_plan_cli_runs_the_fp16_numerics_on_a_torch_device(cli, tmp_path, digits_checkpoint_path):
    """The trained digits classifier (random weights give near-tied logits whose top-1 flips on any
    rounding), validated on digits the calibration did not use."""
    import json

    np.savez(tmp_path / "calib.npz", image=trained.digits_images("train")[0][:40])
    args = (
        "plan",
        "efficientvit_b0",
        "-c",
        digits_checkpoint_path,
        "-p",
        "fp16",
        "--height",
        "64",
        "--width",
        "64",
        "--calib",
        tmp_path / "calib.npz",
        "--calib-count",
        "32",
        "--torch-fp16",
        "cpu",
    )
    result = cli(*args, "--json")
    assert result.exit_code == 0, result.output
    numerics = json.loads(result.stdout)["torch_fp16"]
    assert numerics["device"] == "cpu" and "images not used for calibration" in numerics["data"]
    assert numerics["plan"]["passed"] and numerics["plan"]["nonfinite_outputs"] == 0 and numerics["plan"]["cosine_min"] > 0.999
    assert numerics["plan"]["top1_agreement"] == 1.0 and "plain" in numerics
    table = cli(*args)
    assert table.exit_code == 0 and "FP16 in PyTorch on cpu" in table.stdout


@pytest.mark.fast
def test_plan_cli_refuses_what_it_cannot_check(cli):
    from helpers import assert_clean_error

    base = ("plan", "efficientvit_b0", "--height", "64", "--width", "64")
    assert_clean_error(cli(*base, "-p", "int8", "--torch-fp16", "cpu"), 2, "--precision fp16")
    assert_clean_error(cli(*base, "-p", "fp16", "--torch-fp16", "tpu"), 2, "cpu or cuda")
    if not torch.cuda.is_available():
        assert_clean_error(cli(*base, "-p", "fp16", "--torch-fp16", "cuda"), 3, "no CUDA GPU")
