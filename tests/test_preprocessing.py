"""The device-side preprocessing (numpy + Pillow) against the references' own code, as test oracles:
torchvision's transforms as the EfficientViT reference composes them for evaluation, timm's eval
transform from a timm pretrained config, the EfficientViT-SAM predictor's set_image composition
with segment_anything's ResizeLongestSide for prompts, and OpenCV's INTER_CUBIC for segmenters.

The photos: scikit-image's eight colour photos, a grayscale one, an RGBA one and random images of
odd sizes, extreme aspect ratios (3x500, 500x3), upscaling (17x23) and 1x1.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from evitdeploy.data import as_rgb
from evitdeploy.device import preprocess as pre
from evitdeploy.device import preprocessing
from evitdeploy.device.prompts import to_frame
from timm_oracle import import_timm, import_transforms

pytestmark = pytest.mark.fast
SAM_MEAN = (123.675 / 255, 116.28 / 255, 103.53 / 255)  # as the reference's EfficientViTSam.transform writes them
SAM_STD = (58.395 / 255, 57.12 / 255, 57.375 / 255)


def photos() -> list[np.ndarray]:
    from skimage import data

    found = [
        data.astronaut(),
        data.coffee(),
        data.chelsea(),
        data.rocket(),
        data.hubble_deep_field(),
        data.immunohistochemistry(),
        data.retina()[::3, ::3],
        data.stereo_motorcycle()[0],
        as_rgb(data.camera()),  # grayscale
        as_rgb(data.logo()),  # RGBA
    ]
    rng = np.random.default_rng(0)
    found += [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((17, 23), (3, 500), (500, 3), (1, 1), (101, 77), (224, 224))]
    return found


PHOTOS = photos()


def transforms():
    found = import_transforms()
    if found is None:
        pytest.skip("torchvision's transforms do not import here (the oracle of the reference's eval transform)")
    return found


def test_there_are_at_least_twelve_photos_of_every_kind_asked_for():
    shapes = [p.shape[:2] for p in PHOTOS]
    assert len(PHOTOS) >= 12 and (1, 1) in shapes and (3, 500) in shapes and (17, 23) in shapes


def test_grayscale_and_rgba_become_rgb_as_pils_convert_does():
    from PIL import Image
    from skimage import data

    for image in (data.camera(), data.logo()):
        assert np.array_equal(as_rgb(image), np.asarray(Image.fromarray(image).convert("RGB")))


@pytest.mark.parametrize("size", [224, 64, 97])
def test_classifier_input_equals_the_reference_eval_transform_bit_for_bit(size):
    """The reference's build_valid_transform: Resize(ceil(size / 0.95), bicubic) on a PIL image,
    CenterCrop(size), ToTensor, Normalize."""
    from PIL import Image

    T = transforms()
    reference = T.Compose(
        [
            T.Resize(int(math.ceil(size / 0.95)), interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(size),
            T.ToTensor(),
            T.Normalize(preprocessing.IMAGENET_MEAN, preprocessing.IMAGENET_STD),
        ]
    )
    settings = preprocessing.classifier_reference()
    for photo in PHOTOS:
        ours = pre.prepare(photo, settings, (size, size))
        theirs = reference(Image.fromarray(photo)).numpy()
        assert ours.dtype == np.float32 and np.array_equal(ours, theirs), f"{photo.shape}: max {np.abs(ours - theirs).max()}"


@pytest.mark.parametrize("name", ["efficientvit_b0.r224_in1k", "efficientvit_b1.r256_in1k"])
def test_classifier_input_equals_timms_eval_transform_from_its_pretrained_config(name):
    from PIL import Image

    timm_model = import_timm()
    if timm_model is None or import_transforms() is None:
        pytest.skip("timm or torchvision's transforms do not import here")
    import timm
    from timm.data import create_transform, resolve_data_config

    config = resolve_data_config({}, pretrained_cfg=timm.models.get_pretrained_cfg(name).to_dict())
    theirs_transform = create_transform(**config)
    settings = {**preprocessing.classifier_reference(config["mean"], config["std"], crop_ratio=config["crop_pct"]), "rounding": "floor"}
    settings["interpolation"] = config["interpolation"]
    _, height, width = config["input_size"]
    for photo in PHOTOS:
        ours = pre.prepare(photo, settings, (height, width))
        theirs = theirs_transform(Image.fromarray(photo)).numpy()
        assert np.array_equal(ours, theirs), f"{name} {photo.shape}: max {np.abs(ours - theirs).max()}"


@pytest.mark.parametrize("size", [512, 1024, 128])
def test_sam_input_equals_the_reference_predictors_set_image_input_bit_for_bit(size):
    """EfficientViT-SAM's transform: SamResize (torchvision's resize of to_pil_image, longest side
    to the size, left alone when it already is), ToTensor, Normalize, SamPad (zeros at the bottom
    and right, after normalizing)."""
    import torch.nn.functional as F

    T = transforms()
    from torchvision.transforms.functional import resize, to_pil_image

    settings = preprocessing.sam_reference()
    for photo in PHOTOS:
        h, w = photo.shape[:2]
        scale = size * 1.0 / max(h, w)
        target = (int(h * scale + 0.5), int(w * scale + 0.5))  # the reference's get_preprocess_shape
        resized = photo if max(h, w) == size else np.array(resize(to_pil_image(photo), list(target)))
        x = T.Normalize(SAM_MEAN, SAM_STD)(T.ToTensor()(resized))
        theirs = F.pad(x, (0, size - x.shape[-1], 0, size - x.shape[-2]), value=0).numpy()
        ours = pre.prepare(photo, settings, (size, size))
        assert ours.dtype == np.float32 and np.array_equal(ours, theirs), f"{photo.shape}: max {np.abs(ours - theirs).max()}"


def test_sam_prompt_coordinates_equal_resize_longest_side_exactly():
    import torch

    transforms()  # segment_anything's transforms import torchvision's functional resize
    from segment_anything.utils.transforms import ResizeLongestSide

    rng = np.random.default_rng(1)
    resize = ResizeLongestSide(1024)
    for photo in PHOTOS:
        h, w = photo.shape[:2]
        points = rng.uniform(0, 1, (5, 2)) * (w, h)
        theirs = torch.as_tensor(resize.apply_coords(points, (h, w)), dtype=torch.float).numpy()
        assert np.array_equal(to_frame(points, (h, w), 1024), theirs), photo.shape


@pytest.mark.parametrize("size", [(64, 64), (512, 1024), (37, 91)])
def test_segmenter_input_is_within_one_level_of_opencv_inter_cubic(size):
    cv2 = pytest.importorskip("cv2", reason="OpenCV is the oracle of the segmenters' resize (the test extra installs it)")
    worst, differing, total = 0, 0, 0
    for photo in PHOTOS:
        ours = pre.resize_opencv(photo, size, "bicubic").astype(int)
        theirs = cv2.resize(photo, (size[1], size[0]), interpolation=cv2.INTER_CUBIC).astype(int)
        worst = max(worst, int(np.abs(ours - theirs).max()))
        differing, total = differing + int((ours != theirs).sum()), total + ours.size
    assert worst <= 1, worst
    assert differing / total < 0.01, f"{differing} of {total} values differ by one"


def test_segmenter_input_is_the_opencv_resize_normalized():
    settings = preprocessing.segmenter_reference()
    photo = PHOTOS[1]
    x = pre.prepare(photo, settings, (64, 128))
    expected = pre.normalize(pre.resize_opencv(photo, (64, 128), "bicubic"), settings)
    assert x.shape == (3, 64, 128) and np.array_equal(x, expected)


def test_a_preprocessing_from_a_manifest_is_checked_before_use():
    assert preprocessing.problems(preprocessing.classifier_reference()) == []
    assert preprocessing.problems(preprocessing.sam_reference()) == [] and preprocessing.problems(preprocessing.segmenter_reference()) == []
    bad = {**preprocessing.classifier_reference(), "interpolation": "lanczos", "crop_ratio": 0, "std": [1, 0, 1]}
    found = preprocessing.problems(bad)
    assert len(found) == 3 and any("interpolation" in p for p in found)
    assert preprocessing.problems("bicubic") == ["preprocessing is not an object"]
    with pytest.raises(ValueError):
        pre.prepare(np.zeros((4, 4), np.uint8), preprocessing.classifier_reference(), (8, 8))
