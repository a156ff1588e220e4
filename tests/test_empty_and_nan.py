"""Empty image data and NaN/Inf numbers are input errors: one `error:` line, exit 2, nothing left
on disk, and the heavy verbs refuse them before any model is built or exported (not a traceback
from deep inside preprocessing, nor a parity failure blamed on the exporter)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from evitdeploy import api
from evitdeploy.errors import UserError
from evitdeploy.requests import CheckRequest, ExportRequest, PlanRequest
from helpers import assert_clean_error

pytestmark = pytest.mark.fast  # every refusal comes before any export; the check cases read the session's 64 px artifact

SIZE = ("--height", "64", "--width", "64")
EMPTY = {
    "photos.npz": lambda path: np.savez(path, x=np.zeros((0, 64, 64, 3), np.uint8)),
    "inputs.npz": lambda path: np.savez(path, x=np.zeros((0, 3, 64, 64), np.float32)),
    "emptydir": lambda path: path.mkdir(),
}
NAN_VALUES = 2 * 3 * 64 * 64


@pytest.fixture
def here(tmp_path, monkeypatch) -> Path:
    """The test's folder as the working directory: data is named relatively, as a user types it,
    and a default output name would land here (and be caught as a file left behind)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _files(folder: Path) -> set:
    return {p.relative_to(folder) for p in folder.rglob("*")}


def _refused(result, before: set, folder: Path, *fragments: str) -> None:
    """Exit 2, one error line with the fragments, no work started, nothing new on disk."""
    assert_clean_error(result, 2, *fragments)
    assert "building" not in result.output, result.output  # refused before the model was built
    assert _files(folder) == before


def _export(*args):
    return ("export", "--model", "efficientvit_b0", *SIZE, "-o", "out", *args)


def _deploy(*args):
    return ("deploy", "--profile", "x86-cpu", "--model", "efficientvit_b0", *SIZE, "--samples", "1", "-o", "out", *args)


def _plan(*args):
    return ("plan", "efficientvit_b0", "--precision", "int8", *SIZE, "--calib-count", "1", "--search-budget", "0", *args)


@pytest.mark.parametrize("name", sorted(EMPTY))
def test_check_refuses_empty_data_with_json(cli, here, b0_64_artifact, name):
    EMPTY[name](here / name)
    before = _files(here)
    result = cli("check", b0_64_artifact, "--data", name, "--samples", "1", "--json")
    _refused(result, before, here, f"{name} holds 0 images; check needs at least 1")
    document = json.loads(result.stdout)
    assert document["exit_code"] == 2 and "holds 0 images" in document["error"]


@pytest.mark.parametrize("verb", [_export, _deploy])
@pytest.mark.parametrize("name", sorted(EMPTY))
def test_export_and_deploy_refuse_empty_data_before_exporting(cli, here, verb, name):
    EMPTY[name](here / name)
    before = _files(here)
    _refused(cli(*verb("--data", name)), before, here, f"{name} holds 0 images", "needs at least 1")


@pytest.mark.parametrize("name", sorted(EMPTY))
def test_plan_refuses_empty_calibration_data(cli, here, name):
    EMPTY[name](here / name)
    before = _files(here)
    result = cli(*_plan("--calib", name))
    _refused(result, before, here, f"--calib {name} holds 0 calibration images; INT8 calibration needs at least 1")


def test_int8_export_refuses_empty_calibration_data(cli, here):
    EMPTY["photos.npz"](here / "zero.npz")
    before = _files(here)
    _refused(cli(*_export("--precision", "int8", "--calib", "zero.npz")), before, here, "--calib zero.npz holds 0 calibration images")


@pytest.mark.parametrize("verb", ["check", _export, _deploy])
def test_nan_in_data_is_refused_at_load(cli, here, b0_64_artifact, verb):
    np.savez(here / "nan.npz", input=np.full((2, 3, 64, 64), np.nan, np.float32))
    before = _files(here)
    args = ("check", b0_64_artifact, "--samples", "1") if verb == "check" else verb()
    result = cli(*args, "--data", "nan.npz")
    _refused(result, before, here, f"nan.npz holds {NAN_VALUES} NaN/Inf values", "finite")


def test_inf_in_calibration_data_is_refused(cli, here):
    inputs = np.zeros((2, 3, 64, 64), np.float32)
    inputs[1, 0, :2, :3] = np.inf
    np.savez(here / "inf.npz", input=inputs)
    before = _files(here)
    _refused(cli(*_plan("--calib", "inf.npz")), before, here, "--calib inf.npz holds 6 NaN/Inf values", "finite")


@pytest.mark.parametrize(
    "args, flag",
    [
        (_export("--attention-eps", "nan"), "--attention-eps nan is not a finite number"),
        (_export("--attention-eps", "inf"), "--attention-eps inf is not a finite number"),
        (_export("--attention-eps", "-inf"), "--attention-eps -inf is not a finite number"),
        (_plan("--attention-eps", "nan"), "--attention-eps nan is not a finite number"),
        (_export("--fp16-margin", "nan"), "--fp16-margin nan is not a finite number"),
        (_export("--fp16-margin", "inf"), "--fp16-margin inf is not a finite number"),
        (_plan("--fp16-margin", "inf"), "--fp16-margin inf is not a finite number"),
        (_deploy("--fp16-margin", "nan"), "--fp16-margin nan is not a finite number"),
        (("gate", "b.json", "--baseline", "b.json", "--min-time", "-inf"), "--min-time"),
    ],
)
def test_non_finite_numbers_in_options_are_refused_at_the_door(cli, here, args, flag):
    before = _files(here)
    _refused(cli(*args), before, here, flag)


@pytest.mark.parametrize(
    "flag, value",
    [("--min-cosine", "nan"), ("--min-cosine", "-inf"), ("--min-top1", "nan"), ("--min-top1", "inf"), ("--min-pixel-agreement", "nan")],
)
def test_check_refuses_non_finite_thresholds(cli, here, b0_64_artifact, flag, value):
    before = _files(here)
    result = cli("check", b0_64_artifact, "--samples", "1", flag, value, "--json")
    _refused(result, before, here, f"{flag} {value} is not a finite number")
    assert json.loads(result.stdout)["exit_code"] == 2


def test_python_callers_get_the_same_refusals(here, b0_64_artifact):
    """A Python caller skips the CLI: the API checks its requests itself."""
    with pytest.raises(UserError, match="--attention-eps nan is not a finite number"):
        api.export_model(ExportRequest(model="efficientvit_b0", height=64, width=64, output=here / "out", attention_eps=math.nan))
    with pytest.raises(UserError, match="--attention-eps inf is not a finite number"):
        api.plan_model(PlanRequest(model="efficientvit_b0", precision="int8", height=64, width=64, attention_eps=math.inf))
    with pytest.raises(UserError, match="--min-cosine nan is not a finite number"):
        api.check_artifact(CheckRequest(path=b0_64_artifact, samples=1, tolerance_overrides={"min_cosine": math.nan}))
    with pytest.raises(UserError, match="--atol inf is not a finite number"):
        api.check_artifact(CheckRequest(path=b0_64_artifact, samples=1, tolerance_overrides={"max_abs": math.inf}))
    np.savez(here / "zero.npz", x=np.zeros((0, 64, 64, 3), np.uint8))
    with pytest.raises(UserError, match="holds 0 images; check needs at least 1"):
        api.check_artifact(CheckRequest(path=b0_64_artifact, data=here / "zero.npz"))
    assert _files(here) == {Path("zero.npz")}
