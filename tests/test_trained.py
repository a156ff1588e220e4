import json
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from evitdeploy.data import preprocess
from evitdeploy.errors import UserError
from evitdeploy.models import build_model, get_spec
from evitdeploy.models.trained import (
    BACKGROUND,
    ClassifierRecipe,
    classification_accuracy,
    digit_mosaics,
    digits_checkpoint,
    digits_images,
    mosaic_spec,
    recipe_hash,
    segmentation_scores,
)


def torch_logits(model, inputs: np.ndarray, batch: int = 8) -> np.ndarray:
    """The PyTorch model's logits, `batch` images at a time."""
    x = torch.from_numpy(inputs)
    with torch.no_grad():
        return torch.cat([model(x[i : i + batch]) for i in range(0, len(x), batch)]).numpy()


@pytest.mark.fast
def test_digits_are_uint8_photos_with_a_fixed_held_out_split():
    train_images, train_labels = digits_images("train")
    test_images, test_labels = digits_images("test")
    assert train_images.shape == (1258, 64, 64, 3) and train_images.dtype == np.uint8
    assert test_images.shape == (539, 64, 64, 3) and test_labels.dtype == np.int64
    assert set(test_labels) == set(range(10))
    assert np.array_equal(digits_images("test")[0], test_images)
    assert test_images[:, :, :4].mean() < 5 and test_images.max() == 255  # bright ink, dark margins


def test_the_digits_classifier_loads_as_a_10_class_b0_and_is_accurate_on_held_out_digits(digits_checkpoint_path):
    model, spec = build_model(get_spec("efficientvit_b0"), digits_checkpoint_path)
    assert spec.num_classes == 10
    images, labels = digits_images("test")
    logits = torch_logits(model, preprocess(list(images), spec, 64, 64))
    assert logits.shape == (539, 10)
    assert classification_accuracy(logits, labels) >= 0.93  # 0.983 measured


def test_a_trained_checkpoint_is_cached_and_reused(digits_checkpoint_path):
    before = digits_checkpoint_path.stat().st_mtime_ns
    assert digits_checkpoint(cache_dir=digits_checkpoint_path.parent) == digits_checkpoint_path
    assert digits_checkpoint_path.stat().st_mtime_ns == before
    assert recipe_hash(ClassifierRecipe()) in digits_checkpoint_path.name


@pytest.mark.fast
def test_another_recipe_gets_another_cache_name():
    assert recipe_hash(ClassifierRecipe()) != recipe_hash(replace(ClassifierRecipe(), epochs=13))


@pytest.mark.fast
def test_mosaics_label_each_digits_ink_on_a_dominant_background():
    photos, labels = digit_mosaics(4, 128, 256, seed=1)
    assert photos.shape == (4, 128, 256, 3) and photos.dtype == np.uint8
    assert labels.shape == (4, 128, 256) and labels.min() >= 0 and labels.max() <= BACKGROUND
    background = (labels == BACKGROUND).mean()
    assert 0.8 < background < 0.98
    assert len(np.unique(labels)) >= 5  # several digits per canvas
    assert photos[labels != BACKGROUND].mean() > 3 * photos[labels == BACKGROUND].mean()
    assert np.array_equal(digit_mosaics(4, 128, 256, seed=1)[1], labels)


@pytest.mark.fast
def test_missing_scikit_learn_is_a_user_error_with_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(UserError) as info:
        digits_images("test")
    assert info.value.exit_code == 3 and "pip install scikit-learn" in info.value.hint


@pytest.mark.parametrize("height,width,count", [(128, 256, 32), (512, 1024, 4)])
def test_the_mosaic_segmenter_beats_the_all_background_baseline(mosaic_checkpoint_path, height, width, count):
    model, spec = build_model(mosaic_spec(height, width), mosaic_checkpoint_path)
    photos, labels = digit_mosaics(count, height, width, seed=12345, split="test")
    logits = torch_logits(model, preprocess(list(photos), spec, height, width), batch=4)
    assert logits.shape == (count, 11, height // 8, width // 8)
    scores = segmentation_scores(logits, labels)
    baseline = (labels == BACKGROUND).mean()  # all-background: 0.911 (128x256), 0.913 (512x1024)
    assert scores["pixel_accuracy"] > baseline + 0.05  # 0.987 measured at both sizes
    assert scores["miou"] > 0.7  # 0.876 (128x256), 0.863 (512x1024) measured


def test_a_digits_checkpoint_exports_as_a_10_class_model_and_passes_check(cli, digits_checkpoint_path, tmp_path):
    folder = tmp_path / "digits"
    result = cli("export", "--model", "efficientvit_b0", "--checkpoint", digits_checkpoint_path, "--height", "64", "--width", "64", "-o", folder, "--force")
    assert result.exit_code == 0, result.output
    assert json.loads((folder / "manifest.json").read_text())["spec"]["num_classes"] == 10
    result = cli("check", folder)
    assert result.exit_code == 0, result.output
