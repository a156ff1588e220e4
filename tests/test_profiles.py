"""Profiles: the shipped ones load and say whether they run here; every bad profile is one clear line."""

from __future__ import annotations

import json
import platform

import pytest

from helpers import assert_clean_error
from evitdeploy.errors import UserError
from evitdeploy.profiles import host_kind, list_profiles, load_profile, parse_profile, require_backend

pytestmark = pytest.mark.fast  # profiles parsed and refused before anything is built

SHIPPED = ("x86-cpu", "arm64-cpu", "raspberry-pi-5", "jetson-orin-nano", "jetson-agx-orin", "a100", "h100", "iphone-15", "pixel-8")

GOOD = """
description = "a test device"
backend = "onnxruntime"
precision = "fp32"
precisions = ["fp32", "int8"]
"""


def test_every_shipped_profile_loads_and_reports_readiness(cli):
    listed = {p["name"]: p for p in list_profiles()}
    assert set(SHIPPED) <= set(listed)
    assert listed["x86-cpu"]["built"] and listed["x86-cpu"]["installed"]
    assert listed["jetson-orin-nano"]["built"] and not listed["jetson-orin-nano"]["installed"]  # no TensorRT here
    assert listed["pixel-8"]["target"] == "tflite" and listed["iphone-15"]["target"] == "coreml"
    result = cli("profiles", "--json")
    assert result.exit_code == 0
    assert {p["name"] for p in json.loads(result.stdout)} == set(listed)
    assert "raspberry-pi-5" in cli("profiles").stdout


def test_budget_and_tolerances_resolve_per_model_and_precision():
    profile = load_profile("x86-cpu")
    assert profile.budget_for("efficientvit_seg_b0_cityscapes") == 1500.0
    assert profile.budget_for("efficientvit_b0") == profile.latency_ms == 33.3
    assert profile.tolerances_for("int8").min_cosine == 0.98
    assert profile.tolerances_for("fp16").min_cosine == 0.999  # not in the profile: parity's default


def test_host_kind_judges_only_matching_hosts(monkeypatch):
    assert host_kind(load_profile("iphone-15"))[0] is False  # a phone is never the host
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    assert host_kind(load_profile("x86-cpu")) == (True, "this host matches profile x86-cpu (x86_64)")
    matched, why = host_kind(load_profile("arm64-cpu"))
    assert not matched and "x86_64" in why
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    matched, why = host_kind(load_profile("raspberry-pi-5"))  # aarch64, but no Pi 5 device tree here
    assert not matched and "Raspberry Pi 5" in why


def test_backend_not_installed_exits_3(cli, tmp_path, monkeypatch):
    monkeypatch.setattr("evitdeploy.doctor.installed", lambda package: package not in ("litert-torch", "ai-edge-litert"))
    result = cli("deploy", "--profile", "pixel-8", "--model", "efficientvit_b0", "-o", tmp_path / "out")
    assert_clean_error(result, 3, "profile pixel-8 needs litert-torch, ai-edge-litert, which is not installed", "evitdeploy[tflite]")
    assert not (tmp_path / "out").exists()


def test_missing_runtime_exits_3_naming_the_install(monkeypatch):
    monkeypatch.setattr("evitdeploy.doctor.installed", lambda package: package != "onnxruntime")
    with pytest.raises(UserError) as caught:
        require_backend(load_profile("x86-cpu"))
    assert caught.value.exit_code == 3 and caught.value.hint == "install it with: pip install onnx onnxslim onnxruntime"


BAD = {
    "unknown top-level key": (GOOD + 'backnd = "x"\n', "unknown key 'backnd' in the top level"),
    "unknown key in a section": (GOOD + "[bench]\nthread = 2\n", "unknown key 'thread' in [bench]"),
    "unknown section": (GOOD + "[benchmark]\ncount = 2\n", "unknown key 'benchmark'"),
    "negative threads": (GOOD + "[bench]\nthreads = -1\n", "[bench] threads: input should be greater than or equal to 1, got -1"),
    "boolean count": (GOOD + "[bench]\ncount = true\n", "[bench] count: input should be a valid integer, got True"),
    "unknown backend": (GOOD.replace('"onnxruntime"', '"tpu"'), "backend 'tpu' is not known; use one of: onnxruntime, tensorrt, tflite, coreml"),
    "precision not offered": (GOOD.replace('precision = "fp32"', 'precision = "fp16"'), "precision 'fp16' is not in its precisions"),
    "unknown precision": (GOOD.replace('["fp32", "int8"]', '["fp32", "int4"]'), "precision 'int4' is not one onnxruntime builds; use fp32, fp16, int8"),
    "missing required": ('description = "x"\nbackend = "onnxruntime"\n', "missing required key 'precision'"),
    "not TOML": (GOOD + "[bench\n", "is not valid TOML"),
    "section not a table": (GOOD + "bench = 3\n", "bench must be a table"),
    "height not a multiple of 32": (GOOD + "[input]\nheight = 100\n", "[input] height: input should be a multiple of 32, got 100"),
    "unknown dynamic axis": (GOOD + '[input]\ndynamic = ["channels"]\n', "[input] dynamic[0]: input should be 'batch', 'height' or 'width'"),
    "min without its axis": (GOOD + '[input]\ndynamic = ["batch"]\nmin = [1, 2]\nmax = [4, 8]\n', "[input] min has 2 values for 1 dynamic axes"),
    "min above max": (GOOD + '[input]\ndynamic = ["batch"]\nmin = [8]\nmax = [4]\n', "[input] min [8] exceeds max [4]"),
    "zero budget": (GOOD + "[budget]\nlatency_ms = 0\n", "[budget] latency_ms: input should be greater than 0, got 0"),
    "unknown statistic": (GOOD + '[budget]\nstatistic = "mean"\n', "[budget] statistic: input should be 'median', 'p90' or 'p99', got 'mean'"),
    "bad model budget": (GOOD + '[budget.models]\nefficientvit_b0 = "fast"\n', "[budget.models] efficientvit_b0: input should be a valid number, got 'fast'"),
    "tolerance for an unknown precision": (
        GOOD + "[tolerances.bf16]\nmin_cosine = 0.9\n",
        "precision 'bf16' is not one onnxruntime builds; use fp32, fp16, int8",
    ),
    "unknown tolerance": (GOOD + "[tolerances.fp32]\nmin_cos = 0.9\n", "unknown key 'min_cos' in [tolerances.fp32]"),
    "tolerance out of range": (
        GOOD + "[tolerances.int8]\nmin_cosine = 1.5\n",
        "[tolerances.int8] min_cosine: input should be less than or equal to 1, got 1.5",
    ),
    "nhwc for onnxruntime": (GOOD + "[input]\nnhwc = true\n", "[input] nhwc is for the tflite backend"),
    "host machine not a list": (GOOD + '[host]\nmachine = "x86_64"\n', "[host] machine: input should be a valid list, got 'x86_64'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_profile_is_one_clear_line_exit_2_and_nothing_written(case, cli, tmp_path):
    text, fragment = BAD[case]
    path = tmp_path / "mine.toml"
    path.write_text(text)
    result = cli("deploy", "--profile", path, "--model", "efficientvit_b0", "-o", tmp_path / "out")
    assert_clean_error(result, 2, f"profile {path}", fragment)
    assert not (tmp_path / "out").exists()


def test_good_user_profile_parses():
    profile = parse_profile(GOOD + '[bench]\nthreads = 1\n[host]\nmachine = ["X86_64"]\n', "mine", "mine.toml")
    assert profile.threads == 1 and profile.host_machines == ("x86_64",) and profile.target == "onnx"


@pytest.mark.parametrize(
    "value, fragment",
    [("no-such-profile", "unknown profile 'no-such-profile'"), ("missing.toml", "profile file not found: missing.toml")],
)
def test_unknown_profile_names_the_choices(value, fragment, cli, tmp_path):
    result = cli("deploy", "--profile", value, "--model", "efficientvit_b0", "-o", tmp_path / "out")
    assert_clean_error(result, 2, fragment)
