"""`evitdeploy predict`: a photo through an artifact, the prediction as JSON and drawn into a PNG."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import Cli, assert_clean_error
from evitdeploy import predict as predicting
from evitdeploy import rendering
from evitdeploy.labels import class_names, imagenet_labels, palette
from evitdeploy.models import get_spec
from evitdeploy.requests import PredictRequest


@pytest.fixture(scope="module")
def seg_artifact(tmp_path_factory):
    """A Cityscapes segmenter (random init) exported small: 64x128, the Cityscapes aspect."""
    folder = tmp_path_factory.mktemp("artifacts") / "seg-b0-64x128"
    result = Cli()("export", "--model", "efficientvit_seg_b0_cityscapes", "--height", "64", "--width", "128", "--output", folder)
    assert result.exit_code == 0, result.output
    return folder


def files_in(folder) -> set:
    return {p.relative_to(folder) for p in folder.rglob("*")}


# ---- labels and palettes ----


def test_imagenet_labels_are_1000_unique_names_in_class_order():
    labels = imagenet_labels()
    assert len(labels) == 1000 and len(set(labels)) == 1000 and all(name.strip() == name and name for name in labels)
    assert labels[0] == "tench" and labels[207] == "golden retriever" and labels[999] == "toilet tissue"
    assert class_names(get_spec("efficientvit_b0")) == labels


def test_a_head_of_another_size_gets_generic_names_never_a_datasets():
    digits = replace(get_spec("efficientvit_b0"), num_classes=10)  # dataset still "imagenet"
    mosaic = replace(get_spec("efficientvit_seg_b0_cityscapes"), num_classes=11)
    assert class_names(digits) == tuple(f"class {i}" for i in range(10))
    assert class_names(mosaic)[10] == "class 10" and len(class_names(mosaic)) == 11
    assert len(set(palette(mosaic))) == 11 and palette(mosaic) == palette(replace(mosaic))  # distinct, the same every time


def test_cityscapes_and_ade20k_keep_their_official_names_and_colours():
    cityscapes, ade20k = get_spec("efficientvit_seg_b1_cityscapes"), get_spec("efficientvit_seg_b1_ade20k")
    assert len(palette(cityscapes)) == len(class_names(cityscapes)) == 19
    assert class_names(cityscapes)[0] == "road" and palette(cityscapes)[0] == (128, 64, 128)
    assert class_names(cityscapes)[18] == "bicycle" and palette(cityscapes)[18] == (119, 11, 32)
    assert len(palette(ade20k)) == len(set(class_names(ade20k))) == 150
    assert class_names(ade20k)[:3] == ("wall", "building", "sky") and palette(ade20k)[0] == (120, 120, 120)


# ---- classification ----


def test_classifier_prints_the_top_k_labels_as_json_and_draws_them(cli, b0_64_artifact, photo, tmp_path):
    result = cli("predict", b0_64_artifact, photo, "-o", tmp_path / "out.png", "--top", "3", "--json")
    assert result.exit_code == 0, result.output
    prediction = json.loads(result.stdout)
    assert {"model", "task", "target", "precision", "image", "result", "output", "latency_ms"} <= set(prediction)
    assert prediction["task"] == "classification" and prediction["target"] == "onnx" and prediction["precision"] == "fp32"
    assert prediction["image"] == {"path": str(photo), "width": 451, "height": 300}
    top = prediction["result"]["top"]
    assert [entry["rank"] for entry in top] == [1, 2, 3]
    probabilities = [entry["probability"] for entry in top]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1 + 1e-9
    assert all(entry["label"] == imagenet_labels()[entry["index"]] for entry in top)
    assert prediction["latency_ms"] > 0 and prediction["output"] == str(tmp_path / "out.png")
    with Image.open(tmp_path / "out.png") as drawn:
        assert drawn.format == "PNG" and drawn.size == (451, 300)


def test_classifier_human_output_lists_the_labels_and_the_png(cli, b0_64_artifact, photo, tmp_path):
    result = cli("predict", b0_64_artifact, photo, "-o", tmp_path / "sub" / "out.png")
    assert result.exit_code == 0, result.output
    assert " 1. " in result.stdout and " 5. " in result.stdout and " 6. " not in result.stdout
    assert f"wrote {tmp_path / 'sub' / 'out.png'}" in " ".join(result.stdout.split()) and (tmp_path / "sub" / "out.png").is_file()


def test_force_replaces_an_existing_png(cli, b0_64_artifact, photo, tmp_path):
    (tmp_path / "out.png").write_bytes(b"old")
    assert cli("predict", b0_64_artifact, photo, "-o", tmp_path / "out.png", "--force").exit_code == 0
    with Image.open(tmp_path / "out.png") as drawn:
        assert drawn.size == (451, 300)


# ---- segmentation ----


def test_segmenter_overlays_its_classes_on_the_whole_photo(seg_artifact, photo, tmp_path):
    prediction = predicting.predict(PredictRequest(path=seg_artifact, image=photo, output=tmp_path / "seg.png"))
    assert prediction["task"] == "segmentation" and prediction["model"] == "efficientvit_seg_b0_cityscapes"
    x0, y0, x1, y1 = prediction["result"]["region"]
    assert (x0, y0, x1, y1) == (0, 0, 451, 300)  # the whole photo, resized to the input as the reference's evaluation does
    classes = prediction["result"]["classes"]
    assert sum(entry["fraction"] for entry in classes) == pytest.approx(1.0)
    spec = get_spec("efficientvit_seg_b0_cityscapes")
    assert all(entry["name"] == class_names(spec)[entry["index"]] and tuple(entry["color"]) == palette(spec)[entry["index"]] for entry in classes)
    json.dumps(prediction, allow_nan=False)
    original = np.asarray(Image.open(photo).convert("RGB"), dtype=np.float32)
    with Image.open(tmp_path / "seg.png") as drawn:
        assert drawn.size == (451, 300)
        pixels = np.asarray(drawn.convert("RGB"), dtype=np.float32)
    colour = np.asarray(classes[0]["color"], dtype=np.float32)
    seen = slice(y0 + 2, y0 + 20)  # above the legend band: the photo and the class colour, half each
    mixed = (original[seen, 5:40] + colour) / 2
    share = np.mean(np.abs(pixels[seen, 5:40] - mixed).max(axis=-1) <= 1)
    assert share > classes[0]["fraction"] - 0.05


def test_the_class_map_in_chunks_is_the_argmax_of_the_logits_upsampled_as_torch_does():
    """device.pipeline (numpy): bilinear, half-pixel centres, to the photo's own size (odd ones too)."""
    from evitdeploy.device.pipeline import class_map

    logits = np.random.default_rng(0).standard_normal((40, 8, 16)).astype(np.float32)
    for size in ((64, 128), (301, 77)):
        upsampled = torch.nn.functional.interpolate(torch.from_numpy(logits)[None], size=size, mode="bilinear", align_corners=False)[0]
        found = class_map(logits, size)
        top2 = upsampled.topk(2, dim=0).values
        decided = (top2[0] - top2[1]).numpy() > 1e-5  # pixels whose two best classes differ by float rounding may go either way
        assert found.dtype == np.int32 and np.array_equal(found[decided], upsampled.argmax(0).numpy()[decided]) and decided.mean() > 0.99


def test_seen_region_is_the_footprint_of_the_reference_center_crop():
    """A classifier sees the center crop of the photo resized to cover size / 0.95: 95% of the
    largest centred box at the input's aspect; a segmenter sees the whole photo."""
    spec = get_spec("efficientvit_b0").with_input(1, 64, 128)
    assert predicting.seen_region(300, 451, spec) == (13, 40, 441, 256)  # the 451x225.5 box, 95% of it
    assert predicting.seen_region(100, 100, spec) == (3, 27, 98, 74)
    assert predicting.seen_region(100, 400, spec) == (106, 3, 294, 97)
    assert predicting.seen_region(224, 224, get_spec("efficientvit_b0")) == (6, 6, 218, 218)  # 224 of 236
    assert predicting.seen_region(300, 451, get_spec("efficientvit_seg_b0_cityscapes")) == (0, 0, 451, 300)


# ---- drawing helpers (the SAM branch draws with them too) ----


def test_overlay_mask_blends_only_inside_the_mask():
    image = rendering.picture(np.full((10, 20, 3), 100, np.uint8))
    mask = np.zeros((10, 20), bool)
    mask[2:5, 3:8] = True
    drawn = np.asarray(rendering.overlay_mask(image, mask=mask, color=(200, 0, 50), alpha=0.5))
    assert (drawn[mask] == [150, 50, 75]).all() and (drawn[~mask] == 100).all()


def test_points_and_box_are_drawn_where_they_are():
    image = rendering.picture(np.zeros((100, 100, 3), np.uint8))
    dotted = np.asarray(rendering.draw_points(image, [(20, 30), (70, 60)], [1, 0]))
    assert tuple(dotted[30, 20]) == rendering.FOREGROUND and tuple(dotted[60, 70]) == rendering.BACKGROUND
    assert dotted[5, 5].max() == 0
    boxed = np.asarray(rendering.draw_box(image, (10, 10, 90, 80)))
    assert tuple(boxed[10, 50]) == rendering.FOREGROUND and boxed[45, 50].max() == 0 and boxed.shape == (100, 100, 3)


# ---- refusals: one line, exit 2 (3: backend), nothing written ----


@pytest.mark.parametrize(
    "case,fragment",
    [
        ("missing image", "image not found"),
        ("text file", "is not an image file"),
        ("text as .png", "cannot read image"),
        ("folder", "is a folder"),
        ("existing output", "already exists"),
        ("not a png name", "is not a .png file name"),
        ("top 0", "invalid value for '--top'"),
        ("top 21", "invalid value for '--top'"),
        ("point on a classifier", "--point is for promptable (SAM) models"),
        ("box on a classifier", "--box is for promptable (SAM) models"),
        ("point not numbers", "is not X,Y"),
        ("missing artifact", "artifact not found"),
        ("16-bit png", "is a I;16 (16- or 32-bit) image"),
        ("cmyk jpeg", "is a CMYK image"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(cli, b0_64_artifact, photo, tmp_path, case, fragment):
    (tmp_path / "notes.txt").write_text("not a photo\n")
    (tmp_path / "fake.png").write_text("not a photo either\n")
    (tmp_path / "photos").mkdir()
    (tmp_path / "taken.png").write_bytes(b"mine")
    image, output, extra, artifact = photo, tmp_path / "out.png", [], b0_64_artifact
    if case == "missing image":
        image = tmp_path / "nope.jpg"
    elif case == "text file":
        image = tmp_path / "notes.txt"
    elif case == "text as .png":
        image = tmp_path / "fake.png"
    elif case == "folder":
        image = tmp_path / "photos"
    elif case == "existing output":
        output = tmp_path / "taken.png"
    elif case == "not a png name":
        output = tmp_path / "out.jpg"
    elif case.startswith("top"):
        extra = ["--top", case.split()[1]]
    elif case == "point on a classifier":
        extra = ["--point", "10,20"]
    elif case == "box on a classifier":
        extra = ["--box", "10,20,30,40"]
    elif case == "point not numbers":
        extra = ["--point", "abc"]
    elif case == "missing artifact":
        artifact = tmp_path / "no-artifact"
    elif case == "16-bit png":
        image = tmp_path / "deep.png"
        Image.fromarray(np.full((20, 30), 40000, np.uint16)).save(image)
    elif case == "cmyk jpeg":
        image = tmp_path / "print.jpg"
        Image.new("CMYK", (30, 20), (0, 50, 100, 0)).save(image)
    before = files_in(tmp_path)
    assert_clean_error(cli("predict", artifact, image, "-o", output, *extra), 2, fragment)
    assert files_in(tmp_path) == before and (tmp_path / "taken.png").read_bytes() == b"mine"


def test_exif_orientation_is_ignored_as_the_references_loader_ignores_it(tmp_path):
    """A JPEG whose EXIF says "rotate 90°" is read as stored, as PIL's convert("RGB") in the
    reference's loader reads it: the model sees the same pixels the reference evaluated on."""
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = (250, 10, 10)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    path = tmp_path / "rotated.jpg"
    Image.fromarray(pixels).save(path, exif=exif, quality=100)
    read = predicting.read_image(path)
    assert read.shape == (20, 40, 3)  # not turned to 40x20
    assert np.array_equal(read, np.asarray(Image.open(path).convert("RGB")))


def test_a_data_folder_reads_its_photos_as_predict_does(cli, b0_64_artifact, tmp_path):
    """check --data FOLDER and predict share data.read_photo: the same refusals, the same pixels."""
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(np.full((20, 30), 40000, np.uint16)).save(folder / "deep.png")
    assert_clean_error(cli("check", b0_64_artifact, "--data", folder, "--samples", "1"), 2, "is a I;16 (16- or 32-bit) image")
    (folder / "deep.png").unlink()
    Image.new("CMYK", (30, 20)).save(folder / "print.jpg")
    assert_clean_error(cli("check", b0_64_artifact, "--data", folder, "--samples", "1"), 2, "is a CMYK image")


def test_a_one_pixel_photo_is_a_photo(cli, b0_64_artifact, tmp_path):
    """1x1 is upscaled to the input as the reference's transform would: not refused."""
    path = tmp_path / "dot.png"
    Image.fromarray(np.full((1, 1, 3), 200, np.uint8)).save(path)
    result = cli("predict", b0_64_artifact, path, "-o", tmp_path / "dot-top5.png", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["result"]["region"] == [0, 0, 1, 1]


def test_a_prompt_outside_the_image_is_refused(cli, b0_64_artifact, photo, tmp_path, monkeypatch):
    """Checked for a task that takes prompts (classification stands in for SAM here)."""
    monkeypatch.setattr(predicting, "PROMPTED", frozenset({"classification"}))
    for prompt in (["--point", "451,10"], ["--point", "10,-1"], ["--box", "0,0,452,100"], ["--box", "50,10,40,20"]):
        assert_clean_error(cli("predict", b0_64_artifact, photo, "-o", tmp_path / "out.png", *prompt), 2, "image")
    assert not (tmp_path / "out.png").exists()


def test_a_backend_that_cannot_predict_here_is_exit_3(cli, b0_64_artifact, photo, tmp_path, monkeypatch):
    monkeypatch.setattr(predicting, "why_not_here", lambda artifact, what: "this runtime predicts only on the moon")
    result = cli("predict", b0_64_artifact, photo, "-o", tmp_path / "out.png", "--json")
    assert_clean_error(result, 3, "only on the moon")
    assert json.loads(result.stdout)["exit_code"] == 3 and not (tmp_path / "out.png").exists()
