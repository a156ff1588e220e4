import pytest

from evitdeploy.errors import UserError
from evitdeploy.models import MODELS, get_spec
from evitdeploy.spec import ModelSpec

pytestmark = pytest.mark.fast  # no export, no model run: the registry and input-size rules


def test_registry_has_every_backbone_and_the_reference_segmentation_heads():
    names = set(MODELS)
    assert {f"efficientvit_{f}" for f in ("b0", "b1", "b2", "b3", "l1", "l2", "l3")} <= names
    assert "efficientvit_seg_b1_cityscapes" in names and "efficientvit_seg_l2_ade20k" in names
    seg = get_spec("efficientvit_seg_b1_cityscapes")
    assert seg.num_classes == 19 and seg.input_shape == (1, 3, 1024, 2048) and seg.output_stride == 8
    assert get_spec("efficientvit_seg_b1_ade20k").num_classes == 150


def test_unknown_model_suggests_the_closest_names():
    with pytest.raises(UserError) as info:
        get_spec("efficientvit_b7")
    assert "unknown model" in info.value.message and "efficientvit_b" in info.value.hint


@pytest.mark.parametrize("height,width", [(100, 224), (224, 16), (0, 224)])
def test_input_sizes_the_backbone_cannot_take_are_refused_with_a_suggestion(height, width):
    with pytest.raises(UserError) as info:
        get_spec("efficientvit_b0").with_input(height=height, width=width)
    assert "multiples of 32" in info.value.message and "--height" in info.value.hint


def test_spec_round_trips_through_its_manifest_form():
    spec = get_spec("efficientvit_seg_b0_cityscapes").with_input(2, 256, 512)
    data = spec.to_dict()
    assert data["output_meaning"].startswith("per-pixel class logits")
    assert ModelSpec.from_dict(data) == spec
