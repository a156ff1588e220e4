"""Flags and sizes at the door: a manifest's spec beats --model, seeds
and counts are bounded (in --help too), and a size that cannot fit this host's memory is refused
before anything is built or written."""

import json
import re
import time

import pytest

from helpers import assert_clean_error
from evitdeploy import api, limits
from evitdeploy.errors import UserError
from evitdeploy.models import get_spec
from evitdeploy.requests import BenchRequest, CheckRequest, ExportRequest, InterleaveRequest, PlanRequest

HUGE = "99968"


@pytest.fixture(scope="module")
def b0_64(b0_64_artifact):
    """A B0 exported at 64x64: its manifest says 64x64, --model's default spec says 224x224."""
    return b0_64_artifact


@pytest.fixture(scope="module")
def b0_dynamic(tmp_path_factory):
    from helpers import Cli

    folder = tmp_path_factory.mktemp("b0-dyn") / "art"
    result = Cli()("export", "--model", "efficientvit_b0", "--height", "64", "--width", "64", "--dynamic", "height,width", "-o", folder)
    assert result.exit_code == 0, result.output
    return folder


# ---- --model on an artifact with a manifest ----


def test_bench_and_check_with_the_same_model_use_the_manifest_size(cli, b0_64):
    bench = cli("bench", "--model", "efficientvit_b0", b0_64, "--count", "2", "--warmup", "0", "--threads", "1", "--json")
    assert bench.exit_code == 0, bench.output
    assert json.loads(bench.stdout)["input_shape"] == [1, 3, 64, 64]
    check = cli("check", "--model", "efficientvit_b0", b0_64, "--samples", "1", "--json")
    assert check.exit_code == 0, check.output
    assert json.loads(check.stdout)["input_shape"] == [1, 3, 64, 64]


@pytest.mark.parametrize("verb", ["bench", "check"])
def test_model_contradicting_the_manifest_is_refused(cli, b0_64, verb):
    result = cli(verb, "--model", "efficientvit_b1", b0_64)
    assert_clean_error(result, 2, "manifest says it is efficientvit_b0", "drop --model")


def test_api_model_contradicting_the_manifest_is_a_user_error(b0_64):
    with pytest.raises(UserError, match="efficientvit_b0"):
        api.bench_artifact(BenchRequest(path=b0_64, model_name="efficientvit_seg_b0_cityscapes", count=1, warmup=0))


# ---- --seed ----


@pytest.mark.fast
@pytest.mark.parametrize("verb", ["export", "deploy"])
def test_a_seed_beyond_torchs_range_is_refused(cli, tmp_path, verb):
    extra = ["--profile", "x86-cpu"] if verb == "deploy" else []
    result = cli(verb, *extra, "--model", "efficientvit_b0", "--seed", "18446744073709551616", "-o", tmp_path / "sub" / "out")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "Overflow" not in result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.fast
@pytest.mark.parametrize("verb", ["export", "deploy", "plan"])
def test_seed_range_is_in_help(cli, verb, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # one line per option: a range is not wrapped
    text = " ".join(cli(verb, "--help").stdout.split())
    assert str(limits.SEED_MAX) in text


@pytest.mark.fast
@pytest.mark.parametrize("seed", [2**64, -1])
def test_api_refuses_a_seed_out_of_range(tmp_path, seed):
    with pytest.raises(UserError, match="--seed"):
        api.export_model(ExportRequest(model="efficientvit_b0", output=tmp_path / "out", seed=seed))
    with pytest.raises(UserError, match="--seed"):
        api.plan_model(PlanRequest(model="efficientvit_b0", precision="int8", seed=seed))
    assert not (tmp_path / "out").exists()


# ---- counts and times ----

ABSURD = "1000000000000000000000"


@pytest.mark.parametrize(
    "args",
    [
        ["bench", "{art}", "--count", ABSURD],
        ["bench", "{art}", "--iterations", ABSURD],
        ["bench", "{art}", "--warmup", ABSURD],
        ["bench", "{art}", "--threads", ABSURD],
        ["bench", "{art}", "--min-time", "1e21"],
        ["check", "{art}", "--samples", ABSURD],
        ["gate", "--interleave", "{art}", "{art}", "--count", ABSURD],
        ["gate", "--interleave", "{art}", "{art}", "--block", ABSURD],
        ["gate", "--interleave", "{art}", "{art}", "--warmup", ABSURD],
        ["verify", "{art}", "--count", ABSURD],
        ["verify", "{art}", "--warmup", ABSURD],
        ["verify", "{art}", "--threads", ABSURD],
        ["export", "--model", "efficientvit_b0", "--precision", "int8", "--calib-count", ABSURD],
        ["export", "--model", "efficientvit_b0", "--precision", "int8", "--search-budget", ABSURD],
        ["deploy", "--profile", "x86-cpu", "--model", "efficientvit_b0", "--samples", ABSURD],
        ["sweep", "--model", "efficientvit_b0", "-o", "{tmp}/r.jsonl", "--count", ABSURD],
        ["sweep", "--model", "efficientvit_b0", "-o", "{tmp}/r.jsonl", "--samples", ABSURD],
        ["plan", "efficientvit_b0", "--calib-count", ABSURD],
        ["build", "{art}", "--count", ABSURD],
    ],
)
def test_absurd_counts_are_refused_at_once(cli, b0_64, tmp_path, args):
    args = [a.format(art=b0_64, tmp=tmp_path) for a in args]
    started = time.perf_counter()
    result = cli(*args)
    assert result.exit_code == 2, result.output
    assert time.perf_counter() - started < 5
    assert "Traceback" not in result.output
    assert not (tmp_path / "r.jsonl").exists()


@pytest.mark.fast
@pytest.mark.parametrize(
    "verb,flag,bound",
    [
        ("bench", "--count", limits.COUNT_MAX),
        ("bench", "--warmup", limits.WARMUP_MAX),
        ("bench", "--threads", limits.THREADS_MAX),
        ("check", "--samples", limits.SAMPLES_MAX),
        ("gate", "--block", limits.BLOCK_MAX),
        ("verify", "--count", limits.COUNT_MAX),
        ("sweep", "--min-time", limits.MIN_TIME_MAX_S),
        ("export", "--calib-count", limits.CALIB_COUNT_MAX),
        ("deploy", "--samples", limits.SAMPLES_MAX),
    ],
)
def test_bounds_are_in_help(cli, verb, flag, bound, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    text = " ".join(cli(verb, "--help").stdout.split())
    assert re.search(rf"{re.escape(flag)}\b.*?{int(bound)}", text), text


def test_api_bounds_counts(b0_64, tmp_path):
    from evitdeploy.bundle import verify_bundle
    from evitdeploy.precision.options import PrecisionOptions
    from evitdeploy.sweep import CellSettings

    with pytest.raises(UserError, match="--count"):
        api.bench_artifact(BenchRequest(path=b0_64, count=10**21))
    with pytest.raises(UserError, match="--warmup"):
        api.bench_artifact(BenchRequest(path=b0_64, warmup=10**21))
    with pytest.raises(UserError, match="--threads"):
        api.bench_artifact(BenchRequest(path=b0_64, threads=10**21))
    with pytest.raises(UserError, match="--min-time"):
        api.bench_artifact(BenchRequest(path=b0_64, min_time_s=1e21))
    with pytest.raises(UserError, match="--block"):
        api.bench_interleaved(InterleaveRequest(baseline_path=b0_64, new_path=b0_64, block=10**21))
    with pytest.raises(UserError, match="--samples"):
        api.check_artifact(CheckRequest(path=b0_64, samples=10**21))
    with pytest.raises(UserError, match="--count"):
        verify_bundle(b0_64, count=10**21)
    with pytest.raises(UserError, match="--count"):
        CellSettings(count=10**21)
    with pytest.raises(UserError, match="--calib-count"):
        PrecisionOptions(calib_count=10**21).check()
    with pytest.raises(UserError, match="--search-budget"):
        PrecisionOptions(search_budget=10**21).check()


# ---- sizes that cannot fit this host's memory ----


@pytest.mark.fast
def test_a_huge_export_is_refused_at_once_with_the_estimate(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("EVITDEPLOY_MEMORY_LIMIT_GB", "24")
    started = time.perf_counter()
    result = cli("export", "--model", "efficientvit_seg_b1_cityscapes", "--height", HUGE, "--width", HUGE, "-o", tmp_path / "sub" / "out")
    assert time.perf_counter() - started < 2
    assert_clean_error(result, 2, "GB", "24")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.fast
def test_8k_seg_b1_fits_24_gb_and_is_refused_at_8(cli, tmp_path, monkeypatch):
    """Measured peaks extrapolate to ~14 GB for Seg-B1 at 8192x8192 (17.5 GB with the margin): a
    24 GB host takes it; the 8 GB one of the report (killed at 7 GB) is told before it starts."""
    from evitdeploy import memory

    spec = get_spec("efficientvit_seg_b1_cityscapes").with_input(None, 8192, 8192)
    monkeypatch.setenv("EVITDEPLOY_MEMORY_LIMIT_GB", "24")
    assert memory.fits(spec, "export")
    monkeypatch.setenv("EVITDEPLOY_MEMORY_LIMIT_GB", "8")
    result = cli("export", "--model", "efficientvit_seg_b1_cityscapes", "--height", "8192", "--width", "8192", "-o", tmp_path / "out")
    assert_clean_error(result, 2, "memory", "17.5 GB", "8.0 GB")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.fast
@pytest.mark.parametrize("verb", ["deploy", "plan", "sweep"])
def test_huge_sizes_are_refused_by_every_verb(cli, tmp_path, monkeypatch, verb):
    monkeypatch.setenv("EVITDEPLOY_MEMORY_LIMIT_GB", "24")
    args = {
        "deploy": ["deploy", "--profile", "x86-cpu", "--model", "efficientvit_b0", "--height", HUGE, "--width", HUGE, "-o", tmp_path / "a" / "b"],
        "plan": ["plan", "efficientvit_b0", "--height", HUGE, "--width", HUGE],
        "sweep": ["sweep", "--model", "efficientvit_b0", "-r", f"{HUGE}x{HUGE}", "-o", tmp_path / "a" / "r.jsonl"],
    }[verb]
    started = time.perf_counter()
    result = cli(*args)
    assert time.perf_counter() - started < 2
    assert_clean_error(result, 2, "memory")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("verb", ["bench", "check"])
def test_a_dynamic_artifact_at_a_huge_size_is_refused(cli, b0_dynamic, monkeypatch, verb):
    monkeypatch.setenv("EVITDEPLOY_MEMORY_LIMIT_GB", "24")
    started = time.perf_counter()
    result = cli(verb, b0_dynamic, "--height", HUGE, "--width", HUGE)
    assert time.perf_counter() - started < 2
    assert_clean_error(result, 2, "memory")


@pytest.mark.fast
def test_the_size_hint_never_suggests_a_refused_size(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("EVITDEPLOY_MEMORY_LIMIT_GB", "24")
    result = cli("export", "--model", "efficientvit_seg_b1_cityscapes", "--height", "99969", "--width", "99969", "-o", tmp_path / "o")
    assert_clean_error(result, 2, "multiples of 32")
    height, width = map(int, re.search(r"--height (\d+) --width (\d+)", result.output).groups())
    assert height % 32 == 0 and width % 32 == 0
    from evitdeploy import memory

    spec = get_spec("efficientvit_seg_b1_cityscapes").with_input(None, height, width)
    memory.require_fits(spec, "export")  # the suggestion fits
    assert list(tmp_path.iterdir()) == []


@pytest.mark.fast
def test_the_default_sizes_fit_and_the_estimate_grows_with_the_size(monkeypatch):
    from evitdeploy import memory

    monkeypatch.setenv("EVITDEPLOY_MEMORY_LIMIT_GB", "24")
    spec = get_spec("efficientvit_seg_b1_cityscapes")
    for operation in ("export", "check", "bench", "plan"):
        memory.require_fits(spec, operation)
    small, big = memory.estimate_bytes(spec, "export"), memory.estimate_bytes(spec.with_input(None, 2048, 4096), "export")
    assert small < 3e9 and 2 * small < big < 4 * small


@pytest.mark.fast
@pytest.mark.parametrize(
    "name",
    ["efficientvit_b0", "efficientvit_l3", "efficientvit_seg_b1_cityscapes", "efficientvit_seg_l2_ade20k", "efficientvit_sam_l0", "efficientvit_sam_xl0"],
)
def test_the_tabulated_profiles_match_the_models(name):
    """memory.PROFILES (read without importing torch) equals what the meta device measures."""
    from evitdeploy import memory
    from evitdeploy.models.registry import measure_profile

    assert memory.PROFILES[name] == pytest.approx(measure_profile(get_spec(name)), rel=0.01)


@pytest.mark.fast
def test_api_refuses_a_huge_size_before_writing(tmp_path, monkeypatch):
    monkeypatch.setenv("EVITDEPLOY_MEMORY_LIMIT_GB", "24")
    with pytest.raises(UserError, match="memory"):
        api.export_model(ExportRequest(model="efficientvit_seg_b1_cityscapes", output=tmp_path / "o", height=99968, width=99968))
    assert not (tmp_path / "o").exists()
