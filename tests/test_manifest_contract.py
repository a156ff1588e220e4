"""One manifest contract, three readers: ModelSpec, evitdeploy.schemas (pydantic) and the device's
numpy-only field list (device.integrity, carried verbatim into bundles). They are kept equal here:
the fields, which may be absent or null, the values each takes, and the task names."""

from __future__ import annotations

from typing import Literal, Union, get_args, get_origin

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from evitdeploy.device import integrity, tasks
from evitdeploy.models import MODELS, get_spec
from evitdeploy.predict import PREDICTORS
from evitdeploy.schemas import BundleManifest, SpecSchema
from evitdeploy.spec import ModelSpec

DEVICE_FIELDS = [(dotted, valid) for dotted, valid, _ in integrity.MANIFEST_FIELDS + integrity.OPTIONAL_FIELDS]


def _model_in(annotation):
    """The schema class inside an annotation (Optional[X], Annotated[X, ...]); None for a leaf."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((found for found in map(_model_in, get_args(annotation)) if found is not None), None)


def schema_fields(dotted: str) -> list:
    """The schema's FieldInfo for each step of a dotted manifest path (asserting each exists)."""
    model, found = BundleManifest, []
    for depth, name in enumerate(dotted.split(".")):
        assert model is not None and name in model.model_fields, f"the schema declares no `{'.'.join(dotted.split('.')[: depth + 1])}`"
        found.append(model.model_fields[name])
        model = _model_in(found[-1].annotation)
    return found


def literal_values(annotation) -> tuple:
    """The values a Literal (or an Optional Literal) field lists; () for any other field."""
    if get_origin(annotation) is Literal:
        return get_args(annotation)
    if get_origin(annotation) is Union:
        return tuple(v for arg in get_args(annotation) for v in literal_values(arg))
    return ()


def takes_null(annotation) -> bool:
    try:
        TypeAdapter(annotation).validate_python(None, strict=True)
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize("dotted", [d for d, _ in DEVICE_FIELDS])
def test_every_field_the_device_checks_is_one_the_schema_declares(dotted):
    schema_fields(dotted)


def test_the_device_requires_no_field_the_schema_lets_a_manifest_leave_out():
    """A required device field sits in sections the schema requires; the sections a manifest may
    leave out (default None) are exactly the device's optional ones."""
    optional_sections = {name for name, field in BundleManifest.model_fields.items() if not field.is_required() and field.default is None}
    assert {dotted.split(".")[0] for dotted, _, _ in integrity.OPTIONAL_FIELDS} == optional_sections
    for dotted, _, _ in integrity.MANIFEST_FIELDS:
        assert dotted.split(".")[0] not in optional_sections, dotted
        for section in schema_fields(dotted)[:-1]:
            assert section.is_required(), f"{dotted}: the schema lets its section be left out"


@pytest.mark.parametrize("dotted, valid", DEVICE_FIELDS, ids=[d for d, _ in DEVICE_FIELDS])
def test_the_device_takes_null_exactly_where_the_schema_does(dotted, valid):
    assert valid(None) == takes_null(schema_fields(dotted)[-1].annotation), dotted


@pytest.mark.parametrize("dotted, valid", [(d, v) for d, v in DEVICE_FIELDS if literal_values(schema_fields(d)[-1].annotation)])
def test_the_device_takes_every_value_the_schema_lists(dotted, valid):
    values = literal_values(schema_fields(dotted)[-1].annotation)
    assert all(valid(value) for value in values), (dotted, values)


@pytest.mark.parametrize("dotted", ["spec.task", "bundle.budget.statistic", "int8_kernels.target"])
def test_the_device_refuses_what_the_schema_refuses_where_it_acts_on_the_value(dotted):
    """The values verify.py branches on: a name outside the schema's list is refused on the device too
    (a precision name is only printed there, so any name passes)."""
    valid = dict(DEVICE_FIELDS)[dotted]
    values = literal_values(schema_fields(dotted)[-1].annotation)
    assert values and not valid("not-" + str(values[0])) and not valid(str(values[0]).upper())


def test_task_names_are_one_list():
    assert literal_values(SpecSchema.model_fields["task"].annotation) == tasks.TASKS
    assert {get_spec(name).task for name in MODELS} == set(tasks.TASKS)  # every task has a model
    assert set(PREDICTORS) == set(tasks.TASKS)  # and predict handles each


def test_model_spec_and_its_schema_have_the_same_fields():
    written = set(get_spec("efficientvit_b0").to_dict()) - {"output_meaning"}  # `preprocess` is written resolved, as `preprocessing`
    assert written | {"multimask"} == set(SpecSchema.model_fields)  # the schema also reads older manifests' `multimask` (decoder_masks now)


@pytest.mark.parametrize("name", ["efficientvit_b0", "efficientvit_seg_b0_cityscapes", "efficientvit_sam_l0"])
def test_a_spec_writes_the_preprocessing_that_ran_and_reads_it_back(name):
    spec = get_spec(name)
    written = spec.to_dict()
    assert written["preprocessing"] == spec.preprocessing and written["preprocessing"]["mean"] == list(spec.mean)
    SpecSchema.model_validate(written)
    assert ModelSpec.from_dict(written) == spec
    timm_style = spec.with_preprocessing({**spec.preprocessing, "rounding": "floor", "crop_ratio": 0.875})
    assert ModelSpec.from_dict(timm_style.to_dict()) == timm_style and timm_style.preprocessing["rounding"] == "floor"
    del written["preprocessing"]  # a manifest written before it was recorded: the task's reference
    assert ModelSpec.from_dict(written) == spec


@pytest.mark.parametrize(
    "change,fragment",
    [({"interpolation": "lanczos"}, "interpolation"), ({"resize": "fit"}, "resize"), ({"crop_ratio": 0}, "crop_ratio"), ({"std": [1, 0, 1]}, "std")],
)
def test_a_preprocessing_the_device_code_cannot_run_is_refused_at_the_door(change, fragment):
    written = get_spec("efficientvit_b0").to_dict()
    written["preprocessing"].update(change)
    with pytest.raises(ValidationError, match=fragment):
        SpecSchema.model_validate(written)
