"""The trained SAM reference (models/trained_sam.py): its mosaics and prompts, then the checkpoint's
masks. Tests that need the checkpoint are slow: ~3 min of training on a cold cache."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from evitdeploy.device.prompts import decoder_feed
from evitdeploy.models import build_model, get_spec
from evitdeploy.models.checkpoint import read_our_state
from evitdeploy.models.trained import BACKGROUND, digit_mosaics, recipe_hash
from evitdeploy.models.trained_sam import (
    KINDS,
    PromptableRecipe,
    evaluate_promptable,
    make_prompt,
    mosaic_instances,
    prompt_kind,
    promptable_checkpoint,
    promptable_data,
)


@pytest.fixture(scope="module")
def sam_model(sam_checkpoint_path):
    model, spec = build_model(get_spec("efficientvit_sam_tiny"), sam_checkpoint_path)
    return model


@pytest.fixture(scope="module")
def held_out(sam_model):
    """A smaller evaluation than the docstring's (8 mosaics, about 220 prompts) to keep the test short."""
    return evaluate_promptable(sam_model, count=8, seed=12345)


@pytest.mark.fast
def test_instances_are_the_mosaics_digits_with_their_ink_inside_their_boxes():
    photos, instances = mosaic_instances(3, seed=4, split="train")
    same_photos, label_maps = digit_mosaics(3, 256, 256, seed=4, split="train")
    assert photos.dtype == np.uint8 and np.array_equal(photos, same_photos)
    for found, labels in zip(instances, label_maps):
        assert len(found) >= 4
        covered = np.zeros(labels.shape, bool)
        for instance in found:
            mask, (x0, y0, x1, y1) = instance["mask"], instance["box"]
            ys, xs = np.nonzero(mask)
            assert (xs.min(), ys.min(), xs.max(), ys.max()) == (x0, y0, x1, y1)  # tight, inclusive
            assert not mask[:y0].any() and not mask[y1 + 1 :].any() and not mask[:, :x0].any() and not mask[:, x1 + 1 :].any()
            assert (labels[mask] == instance["label"]).all() and not (covered & mask).any()
            covered |= mask
        assert np.array_equal(covered, labels != BACKGROUND)


@pytest.mark.fast
def test_prompts_hit_their_instance():
    photos, prompts, masks = promptable_data(2, seed=3, split="test")
    assert photos.shape == (2, 256, 256, 3) and photos.dtype == np.uint8
    for image_prompts, image_masks in zip(prompts, masks):
        assert image_masks.shape == (len(image_prompts), 256, 256) and image_masks.dtype == bool
        assert [prompt_kind(p) for p in image_prompts[: len(KINDS)]] == list(KINDS)
        for prompt, mask in zip(image_prompts, image_masks):
            if "box" in prompt:
                ys, xs = np.nonzero(mask)
                assert prompt["box"] == (xs.min(), ys.min(), xs.max(), ys.max())  # exact in evaluation
            else:
                on_ink = [bool(mask[int(y), int(x)]) for x, y in prompt["points"]]
                assert on_ink == [label == 1 for label in prompt["labels"]]
    again = promptable_data(2, seed=3, split="test")
    assert again[1] == prompts and all(np.array_equal(a, b) for a, b in zip(again[2], masks))
    jittered = make_prompt({"mask": masks[0][0], "box": prompts[0][3]["box"]}, "box", np.random.default_rng(0), jitter=3)
    assert max(abs(a - b) for a, b in zip(jittered["box"], prompts[0][3]["box"])) <= 3


@pytest.mark.slow
def test_the_recipe_hash_is_deterministic_and_names_the_checkpoint(sam_checkpoint_path):
    assert recipe_hash(PromptableRecipe()) == recipe_hash(PromptableRecipe())
    assert recipe_hash(PromptableRecipe()) != recipe_hash(replace(PromptableRecipe(), steps=PromptableRecipe().steps + 1))
    assert sam_checkpoint_path.name == f"sam_tiny_digits-{recipe_hash(PromptableRecipe())}.safetensors"
    before = sam_checkpoint_path.stat().st_mtime_ns
    assert promptable_checkpoint(cache_dir=sam_checkpoint_path.parent) == sam_checkpoint_path
    assert sam_checkpoint_path.stat().st_mtime_ns == before  # cached, not retrained


@pytest.mark.slow
def test_the_checkpoint_loads_strictly_into_the_registered_tiny_model(sam_checkpoint_path, sam_model):
    state, layout = read_our_state(sam_checkpoint_path)
    assert layout == "timm" and set(state) == set(sam_model.state_dict())  # build_model loads strictly too
    spec = get_spec("efficientvit_sam_tiny")
    with torch.no_grad():
        embedding = sam_model(torch.zeros(1, 3, 256, 256))
    assert tuple(embedding.shape[1:]) == spec.embedding


@pytest.mark.slow
def test_held_out_masks_are_good_for_points_and_boxes(held_out):
    # Measured on these 8 mosaics (224 prompts): 0.862 single-mask, 0.862 best multimask; per kind
    # 0.83 (point) .. 0.90 (box); 0.863 on the docstring's 32. The margin is for another machine or
    # torch build, where the deterministic training takes another path; an untrained model scores ~0.
    assert held_out["count"] == 4 * sum(len(found) for found in mosaic_instances(8, seed=12345)[1])
    assert held_out["single"] > 0.75
    assert held_out["multimask"] > 0.75
    for kind in KINDS:
        assert held_out["per_kind"][kind]["single"] > 0.7, kind
        assert held_out["per_kind"][kind]["multimask"] > 0.7, kind


@pytest.mark.slow
def test_the_iou_head_ranks_masks(held_out):
    assert held_out["iou_head_correlation"] > 0.5  # 0.99 measured


@pytest.mark.slow
def test_the_deployed_decoder_gives_the_evaluated_masks(sam_model):
    """The ONNX-form decoder (what is exported) gives what evaluate_promptable scores: token 0 alone,
    tokens 1..3 the multimask ones, all four exported; a box and a point prompt."""
    from evitdeploy.data import preprocess
    from evitdeploy.models.trained_sam import _all_masks

    photos, prompts, _ = promptable_data(1, seed=12345, split="test")
    spec = get_spec("efficientvit_sam_tiny")
    with torch.no_grad():
        embedding = sam_model(torch.from_numpy(preprocess([photos[0]], spec, spec.height, width=spec.width)))
        feeds = [decoder_feed(p, (256, 256), frame=256, embedding=spec.embedding) for p in prompts[0][:4]]
        masks, iou = _all_masks(sam_model, embedding, feeds, rows=[0] * 4)
        for j, feed in enumerate(feeds):
            inputs = {k: torch.from_numpy(v) for k, v in feed.items()}
            every, every_iou = sam_model.decoder()(embedding, **inputs)
            assert every.shape == (1, 4, 128, 128) and every_iou.shape == (1, 4)
            torch.testing.assert_close(every[0], masks[j], rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(every_iou[0], iou[j], rtol=1e-4, atol=1e-4)
