"""`with model.formulation("textbook"):` runs the reference's arithmetic inside the block only: the
model is back on the deploy formulation after it, also when the block raises."""

import pytest

from evitdeploy.models import build_model, get_spec
from evitdeploy.models.attention import LiteMLA


def attention_formulations(model) -> set:
    return {m.formulation for m in model.modules() if isinstance(m, LiteMLA)}


@pytest.mark.parametrize("name", ["efficientvit_b0", "efficientvit_sam_tiny"])
def test_the_textbook_formulation_holds_inside_the_block_only(name):
    spec = get_spec(name)
    model, _ = build_model(spec if spec.promptable else spec.with_input(1, 64, 64))
    assert attention_formulations(model) == {"channel_first"}
    with model.formulation("textbook") as inside:
        assert inside is model and attention_formulations(model) == {"token_first"}
    assert attention_formulations(model) == {"channel_first"}
    with pytest.raises(RuntimeError, match="a failed check"):
        with model.formulation("textbook"):
            raise RuntimeError("a failed check")
    assert attention_formulations(model) == {"channel_first"}


def test_an_unknown_formulation_is_refused_before_the_block():
    model, _ = build_model(get_spec("efficientvit_b0").with_input(1, 64, 64))
    with pytest.raises(ValueError, match="formulation must be one of"):
        with model.formulation("fast"):
            pass
    assert attention_formulations(model) == {"channel_first"}
