"""A size the host cannot hold is refused with the memory estimate, SAM included: memory sizes a
spec without asking it to validate the size (SAM takes one size, and refused every other one)."""

import re

import pytest

from evitdeploy import api, memory
from evitdeploy.errors import UserError
from evitdeploy.models import get_spec
from evitdeploy.requests import ExportRequest
from helpers import assert_clean_error

SAM = "efficientvit_sam_l0"


def test_a_sam_export_over_the_limit_reports_the_estimate(tmp_path, monkeypatch):
    monkeypatch.setenv(memory.ENV_LIMIT, "0.3")
    with pytest.raises(UserError) as refused:
        api.export_model(ExportRequest(model=SAM, output=tmp_path / "o"))
    assert re.search(r"needs about [\d.]+ GB of memory; 0\.3 GB is the limit", refused.value.message), refused.value
    assert "more memory" in refused.value.hint and "512x512" in refused.value.hint
    assert "drop --height" not in str(refused.value) and "smaller size" not in refused.value.hint  # SAM takes its one size
    assert not (tmp_path / "o").exists()


def test_a_sam_export_over_the_limit_is_one_clean_line_on_the_command_line(cli, tmp_path, monkeypatch):
    monkeypatch.setenv(memory.ENV_LIMIT, "0.3")
    result = cli("export", "--model", SAM, "-o", tmp_path / "o")
    assert_clean_error(result, 2, "GB of memory", "0.3 GB", memory.ENV_LIMIT)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("operation", memory.OPERATIONS)
def test_every_sam_operation_over_the_limit_reports_the_estimate(operation, monkeypatch):
    monkeypatch.setenv(memory.ENV_LIMIT, "0.3")
    with pytest.raises(UserError, match="GB of memory"):
        memory.require_fits(get_spec(SAM), operation)


def test_the_size_search_asks_nothing_of_the_spec_but_its_shape(monkeypatch):
    """A SAM spec at a size it would refuse is still sized: the search is arithmetic on shapes."""
    monkeypatch.setenv(memory.ENV_LIMIT, "0.9")
    height, width = memory.largest_fitting(get_spec(SAM), "export")
    assert height % 32 == 0 and 64 <= height < 512 and width == height


def test_a_misaligned_size_is_refused_with_one_that_fits_memory(monkeypatch):
    monkeypatch.setenv(memory.ENV_LIMIT, "24")
    spec = get_spec("efficientvit_seg_b1_cityscapes")
    with pytest.raises(UserError, match="multiples of 32") as refused:
        memory.with_input(spec, None, 99969, 99969)
    height, width = map(int, re.search(r"--height (\d+) --width (\d+)", refused.value.hint).groups())
    assert height < 99968
    memory.require_fits(spec.with_input(None, height, width), "export")  # the suggestion fits


def test_the_spec_alone_suggests_the_nearest_size_it_takes():
    with pytest.raises(UserError) as refused:
        get_spec("efficientvit_b0").with_input(None, 100, 230)
    assert refused.value.hint == "try --height 96 --width 224"
