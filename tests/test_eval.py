"""`evitdeploy eval`: task metrics on labelled data on disk, for the artifact and the PyTorch FP32
reference on the same photos, with bootstrap intervals and the paired delta; the trained references
as real datasets (an ImageFolder of digits, digit mosaics as images + masks); every layout a user
has, as a tiny synthetic copy; bad datasets refused in one line."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from evitdeploy.models.references import write_datasets
from helpers import LOOSE_PROFILE, Cli, assert_clean_error


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_datasets(tmp_path_factory.mktemp("datasets"), digits=120, mosaics=6)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, digits_checkpoint_path, mosaic_checkpoint_path, data):
    from evitdeploy.models.trained import digits_images

    root, cli = tmp_path_factory.mktemp("eval-artifacts"), Cli()
    np.savez(root / "digits-train.npz", image=digits_images("train")[0][:64])  # calibration and export validation: digits, not natural photos
    made = {}
    for name, model, checkpoint, size, extra in (
        ("digits-fp32", "efficientvit_b0", digits_checkpoint_path, ("64", "64"), ()),
        (
            "digits-int8",
            "efficientvit_b0",
            digits_checkpoint_path,
            ("64", "64"),
            ("-p", "int8", "--calib", root / "digits-train.npz", "--data", root / "digits-train.npz"),
        ),
        (
            "digits-naive",
            "efficientvit_b0",
            digits_checkpoint_path,
            ("64", "64"),
            ("-p", "int8", "--int8-plan", "naive", "--calib", root / "digits-train.npz", "--data", root / "digits-train.npz"),
        ),
        ("mosaic-fp32", "efficientvit_seg_b0_cityscapes", mosaic_checkpoint_path, ("128", "256"), ()),
    ):
        result = cli("export", "-m", model, "--checkpoint", checkpoint, "--height", size[0], "--width", size[1], *extra, "-o", root / name)
        assert result.exit_code == 0, result.output
        made[name] = root / name
    return made


def run_eval(artifact, dataset, *more):
    result = Cli()("eval", artifact, "--dataset", dataset, *more, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_an_fp32_artifact_scores_exactly_what_pytorch_scores(artifacts, data):
    report = run_eval(artifacts["digits-fp32"], data["digits"])
    assert report["images"] == 120 and report["dataset"]["layout"] == "imagefolder"
    assert report["metrics"]["top1"]["value"] == report["fp32"]["top1"]["value"] > 0.9
    assert report["delta"]["top1"] == {"value": 0.0, "low": 0.0, "high": 0.0} and report["disagreements"] == 0
    low, value, high = (report["metrics"]["top1"][k] for k in ("low", "value", "high"))
    assert low < value <= high <= 1.0 and len(report["per_class"]) == 10
    seg = run_eval(artifacts["mosaic-fp32"], data["mosaics"])
    assert seg["dataset"]["layout"] == "pairs" and seg["metrics"]["miou"]["value"] == seg["fp32"]["miou"]["value"] > 0.3
    assert seg["delta"]["miou"]["value"] == 0.0 and seg["disagreements"] == 0


def test_an_int8_artifact_has_a_delta_with_a_paired_interval(artifacts, data):
    report = run_eval(artifacts["digits-int8"], data["digits"], "--limit", "60", "--seed", "3")
    assert report["images"] == 60 and report["dataset"]["of"] == 120
    delta = report["delta"]["top1"]
    assert delta["low"] <= delta["value"] <= delta["high"]
    assert delta["value"] == pytest.approx(report["metrics"]["top1"]["value"] - report["fp32"]["top1"]["value"])
    again = run_eval(artifacts["digits-int8"], data["digits"], "--limit", "60", "--seed", "3")
    assert again["metrics"] == report["metrics"]  # a seed is a deterministic subset and interval


def test_the_naive_int8_baseline_shows_what_the_plan_buys(artifacts, data):
    """onnxruntime's quantize_static with its defaults: written with its parity miss recorded,
    failed by check, and far below the plan on the task metric (here 68% vs 98.7% top-1 with VNNI;
    without VNNI its full 8-bit weights saturate, which only lowers it)."""
    manifest = json.loads((artifacts["digits-naive"] / "manifest.json").read_text())
    assert manifest["precision_plan"]["naive"].startswith("onnxruntime.quantization.quantize_static")
    assert not manifest["validation"]["checks"][0]["passed"] and "int8_kernels" not in manifest
    assert Cli()("check", artifacts["digits-naive"]).exit_code == 1
    naive = run_eval(artifacts["digits-naive"], data["digits"])
    planned = run_eval(artifacts["digits-int8"], data["digits"])
    assert naive["delta"]["top1"]["high"] < -0.05  # beyond noise: at least 5 points lost
    assert planned["delta"]["top1"]["value"] > naive["delta"]["top1"]["high"]


def test_a_naive_plan_is_refused_where_no_stock_quantizer_is_named(tmp_path):
    for target, precision in (("trt", "int8"), ("onnx", "fp16")):
        result = Cli()("export", "-m", "efficientvit_b0", "-t", target, "-p", precision, "--int8-plan", "naive", "-o", tmp_path / target)
        assert_clean_error(result, code=2)
        assert "--int8-plan naive" in result.output and not (tmp_path / target).exists()


def test_gate_fails_an_accuracy_drop_beyond_the_threshold_and_noise(artifacts, data, tmp_path):
    """Paired on the same images: the naive baseline against FP32 is a regression (exit 1); the
    plan within a generous drop passes; evals of different images, or a broken file, are refused."""
    cli, saved = Cli(), {}
    for name in ("digits-fp32", "digits-int8", "digits-naive"):
        saved[name] = tmp_path / f"{name}.json"
        assert cli("eval", artifacts[name], "--dataset", data["digits"], "--save", saved[name]).exit_code == 0
    rows = json.loads(saved["digits-naive"].read_text())["per_image"]
    assert len(rows) == 120 and {"id", "label", "top1", "top1_fp32"} <= rows[0].keys()
    result = cli("gate", saved["digits-naive"], "--baseline", saved["digits-fp32"], "--json", "--markdown", tmp_path / "gate.md")
    report = json.loads(result.stdout)
    assert result.exit_code == 1 and report["verdict"] == "regression" and report["matched"] == 120
    assert report["delta"]["high"] < 0 and "Accuracy regression" in (tmp_path / "gate.md").read_text()
    result = cli("gate", saved["digits-int8"], "--baseline", saved["digits-fp32"], "--max-drop", "10", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["verdict"] != "regression"
    subset = tmp_path / "subset.json"
    assert cli("eval", artifacts["digits-int8"], "--dataset", data["digits"], "--limit", "50", "--save", subset).exit_code == 0
    assert_clean_error(cli("gate", subset, "--baseline", saved["digits-fp32"]), 2, "different images")
    broken = json.loads(saved["digits-int8"].read_text())
    del broken["per_image"][3]["top1"]
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    assert_clean_error(cli("gate", tmp_path / "broken.json", "--baseline", saved["digits-fp32"]), 2, "lacks the classification fields")
    assert_clean_error(cli("gate", saved["digits-int8"], "--baseline", tmp_path / "gate.md"), 2)


def test_gate_on_segmentation_evals_pairs_per_class_intersections(artifacts, data, tmp_path):
    saved = tmp_path / "seg.json"
    assert Cli()("eval", artifacts["mosaic-fp32"], "--dataset", data["mosaics"], "--save", saved).exit_code == 0
    result = Cli()("gate", saved, "--baseline", saved, "--json")
    report = json.loads(result.stdout)
    assert result.exit_code == 0 and report["metric"] == "miou" and report["verdict"] == "no change"
    assert report["new"]["value"] == pytest.approx(json.loads(saved.read_text())["metrics"]["miou"]["value"])


def test_a_bundle_carries_labelled_photos_its_verify_py_scores_on_the_device(data, tmp_path, digits_checkpoint_path):
    """deploy --eval-subset: the naive INT8 baseline on a profile whose parity tolerances let it
    through; the deploy fails on its drop, and the bundle's own verify.py (numpy + the runtime)
    scores the carried digits and fails it again, where the making host did."""
    import subprocess
    import sys

    from evitdeploy.models.trained import digits_images

    np.savez(tmp_path / "train.npz", image=digits_images("train")[0][:64])
    (tmp_path / "loose.toml").write_text(LOOSE_PROFILE)
    result = Cli()(
        "deploy", "--profile", tmp_path / "loose.toml", "--model", "efficientvit_b0", "-c", digits_checkpoint_path, "--height", "64", "--width", "64",
        "-p", "int8", "--int8-plan", "naive", "--calib", tmp_path / "train.npz", "--data", tmp_path / "train.npz",
        "--dataset", data["digits"], "--max-drop", "0.5", "--eval-subset", "40", "-o", tmp_path / "bundle", "--json",
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    assert summary["accuracy"]["beyond"] and any("drops" in failure for failure in summary["failures"])
    section = json.loads((tmp_path / "bundle" / "manifest.json").read_text())["bundle"]["eval_subset"]
    assert section["photos"] == 40 and section["metric"] == "top1" and section["fp32"] - section["making_host"] > 0.05
    run = subprocess.run([sys.executable, "-I", "verify.py", "--json", "--count", "0"], cwd=tmp_path / "bundle", capture_output=True, text=True)
    report = json.loads(run.stdout)
    assert run.returncode == 1 and report["accuracy"]["checked"] and report["accuracy"]["photos"] == 40
    assert report["accuracy"]["value"] == pytest.approx(section["making_host"]) and any(f.startswith("accuracy: top1") for f in report["failures"])


def test_a_damaged_eval_subset_is_refused_in_one_line(tmp_path):
    from evitdeploy.device import eval_subset
    from evitdeploy.device.integrity import BundleError

    spec = {"task": "classification", "num_classes": 10}
    photo = np.zeros((8, 8, 3), np.uint8)
    for arrays, fragment in (
        ({"photo_0": photo, "label": np.array([12])}, "one class index"),
        ({"photo_0": photo.astype(np.float32), "label": np.array([1])}, "uint8"),
        ({"photo_0": photo, "label": np.array([object()], dtype=object)}, "cannot be read as numeric arrays"),
    ):
        np.savez(tmp_path / eval_subset.FILE, **arrays)
        with pytest.raises(BundleError, match=fragment):
            eval_subset.load(tmp_path, spec)


def test_the_int8_search_can_aim_at_the_task_metric_on_labelled_photos(artifacts, data, digits_checkpoint_path):
    """plan --dataset D --max-drop 0: every step of the search is scored on the labelled digits and
    it stops at the first plan within the drop (or spends its budget), as NNCF's accuracy control."""
    train = artifacts["digits-fp32"].parent / "digits-train.npz"
    common = ("efficientvit_b0", "-c", digits_checkpoint_path, "--height", "64", "--width", "64", "-p", "int8", "--calib", train)
    result = Cli()("plan", *common, "--dataset", data["digits"], "--max-drop", "0", "--search-budget", "2", "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    search, steps = plan["search"], plan["search"]["steps"]
    assert search["target"].startswith("top1 at most 0 pt below FP32") and "120 labelled photos" in search["target"]
    assert all(
        step["task_fp32"] == steps[0]["task_fp32"] and step["task_drop_pt"] == pytest.approx(100 * (step["task_fp32"] - step["task_metric"])) for step in steps
    )
    assert search["met"] == (search["final"]["task_drop_pt"] <= 0)
    assert search["met"] or len(steps) == 3  # met, or both budgeted moves made
    assert plan["settings"]["task_target"]["photos"] == 120
    for extra, fragment in (
        (("--max-drop", "1"), "add --dataset PATH"),
        (("--dataset", data["digits"], "--max-drop", "1", "--int8-plan", "naive"), "no such option"),
        (("--dataset", data["digits"], "--max-drop", "-1"), "--max-drop"),
    ):
        assert_clean_error(Cli()("plan", *common, *extra), 2, fragment)
    fp16 = Cli()("plan", *common[:-4], "-p", "fp16", "--calib", train, "--dataset", data["digits"], "--max-drop", "1")
    assert_clean_error(fp16, 2, "--max-drop steers the INT8 search")


def _photo(path, size=(40, 60), seed=0):
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)


def _mask(path, size=(40, 60), value=1):
    Image.fromarray(np.full(size, value, np.uint8)).save(path)


def test_cityscapes_and_ade20k_layouts(artifacts, tmp_path):
    """Tiny synthetic copies of the standard layouts: Cityscapes' train ids, ADE20K's 1-based ids."""
    city = tmp_path / "cityscapes"
    for split, town in (("val", "lindau"),):
        (city / "leftImg8bit" / split / town).mkdir(parents=True)
        (city / "gtFine" / split / town).mkdir(parents=True)
        for i in range(2):
            _photo(city / "leftImg8bit" / split / town / f"{town}_00000{i}_000019_leftImg8bit.png", seed=i)
            _mask(city / "gtFine" / split / town / f"{town}_00000{i}_000019_gtFine_labelTrainIds.png", value=10)
    report = run_eval(artifacts["mosaic-fp32"], city)
    assert report["dataset"]["layout"] == "cityscapes" and report["images"] == 2
    ade = tmp_path / "ade"
    (ade / "images" / "validation").mkdir(parents=True)
    (ade / "annotations" / "validation").mkdir(parents=True)
    _photo(ade / "images" / "validation" / "ADE_val_00000001.jpg")
    _mask(ade / "annotations" / "validation" / "ADE_val_00000001.png", value=11)  # ADE's 11 is the model's 10
    report = run_eval(artifacts["mosaic-fp32"], ade)
    assert report["dataset"]["layout"] == "ade20k" and [c["index"] for c in report["per_class"]][-1] <= 10


def test_imagenet_synset_mapping_names_the_class_order(artifacts, data, tmp_path):
    folder = tmp_path / "imagenet-like"
    shutil.copytree(data["digits"], folder)
    (folder / "classes.txt").unlink()
    (folder / "LOC_synset_mapping.txt").write_text("".join(f"{i} digit {i}, the number\n" for i in range(10)))
    assert run_eval(artifacts["digits-fp32"], folder, "--limit", "10")["images"] == 10


def test_bad_datasets_are_refused_in_one_line(artifacts, data, tmp_path):
    digits, mosaic = artifacts["digits-fp32"], artifacts["mosaic-fp32"]
    cli = Cli()

    def copy(name):
        target = tmp_path / name
        shutil.copytree(data["digits"], target)
        return target

    missing = copy("missing")
    shutil.rmtree(missing / "3")
    (missing / "classes.txt").unlink()
    assert_clean_error(cli("eval", digits, "--dataset", missing), 2, "9 class folders")
    extra = copy("extra")
    (extra / "eleven").mkdir()
    assert_clean_error(cli("eval", digits, "--dataset", extra), 2, "eleven")
    stray = copy("stray")
    (stray / "4" / "notes.txt").write_text("hi")
    assert_clean_error(cli("eval", digits, "--dataset", stray), 2, "not an image")
    deep = copy("deep")
    (deep / "5" / "a" / "b").mkdir(parents=True)
    assert_clean_error(cli("eval", digits, "--dataset", deep), 2, "is a folder inside")
    (tmp_path / "empty").mkdir()
    assert_clean_error(cli("eval", mosaic, "--dataset", tmp_path / "empty"), 2, "segmentation layout")
    pairs = tmp_path / "pairs"
    (pairs / "images").mkdir(parents=True)
    (pairs / "masks").mkdir()
    _photo(pairs / "images" / "a.png")
    _mask(pairs / "masks" / "a.png", size=(41, 60))
    assert_clean_error(cli("eval", mosaic, "--dataset", pairs), 2, "its image is 60x40")
    _mask(pairs / "masks" / "a.png", value=42)
    assert_clean_error(cli("eval", mosaic, "--dataset", pairs), 2, "class id 42")
    (pairs / "masks" / "a.png").unlink()
    assert_clean_error(cli("eval", mosaic, "--dataset", pairs), 2, "has no label map")
    assert_clean_error(cli("eval", digits, "--dataset", data["digits"], "--limit", "0"), 2, "--limit")
    assert_clean_error(cli("eval", digits, "--dataset", tmp_path / "nope"), 2, "not a folder")


@pytest.fixture(scope="module")
def sam_artifact(tmp_path_factory, sam_checkpoint_path):
    folder = tmp_path_factory.mktemp("eval-sam") / "sam-fp32"
    result = Cli()("export", "-m", "efficientvit_sam_tiny", "--checkpoint", sam_checkpoint_path, "-o", folder)
    assert result.exit_code == 0, result.output
    return folder


def test_a_promptable_model_on_coco_style_annotations(sam_artifact, data, tmp_path):
    """Each digit prompted with its box and with its most interior pixel; the shown mask against
    the ground truth, overall and by COCO size; FP32 equals PyTorch; gate pairs it by instance."""
    report = run_eval(sam_artifact, data["promptable"])
    (tmp_path / "sam.json").write_text(json.dumps(report))
    gated = Cli()("gate", tmp_path / "sam.json", "--baseline", tmp_path / "sam.json", "--json")
    assert gated.exit_code == 0, gated.output
    assert json.loads(gated.stdout)["metric"] == "miou_box" and json.loads(gated.stdout)["matched"] == report["instances"]
    assert report["dataset"]["layout"] == "coco" and report["images"] == 4 and report["instances"] >= 8
    assert report["metrics"]["miou_box"]["value"] == report["fp32"]["miou_box"]["value"] > 0.6  # trained on these: 0.86 measured
    assert report["metrics"]["miou_point"]["value"] > 0.3 and report["disagreements"] == 0
    assert sum(report["by_size"].values()) == report["instances"] and any(k.startswith("miou_box_") for k in report["metrics"])


def test_broken_coco_files_are_refused_in_one_line(sam_artifact, data, tmp_path):
    cli = Cli()
    original = json.loads((data["promptable"] / "annotations.json").read_text())
    for change, fragment in (
        (lambda d: d["annotations"][0].__setitem__("image_id", 999), "names image 999"),
        (lambda d: d["annotations"][1].__setitem__("id", d["annotations"][0]["id"]), "share an id"),
        (lambda d: d["annotations"][0].__setitem__("segmentation", [[1, 2, 3, 4, 5, 6, 7]]), "even count"),
        (lambda d: d["annotations"][0]["segmentation"].__setitem__("counts", "not RLE at all ~~~"), "cannot be decoded"),
        (lambda d: d["annotations"][0].__setitem__("bbox", [0, 0, -5, 3]), "bbox"),
        (lambda d: d["images"][0].__setitem__("file_name", "../escape.png"), "file_name"),
        (lambda d: d.__setitem__("images", []), "images"),
    ):
        folder = tmp_path / f"coco{len(list(tmp_path.iterdir()))}"
        shutil.copytree(data["promptable"], folder)
        document = json.loads(json.dumps(original))
        change(document)
        (folder / "annotations.json").write_text(json.dumps(document))
        assert_clean_error(cli("eval", sam_artifact, "--dataset", folder), 2, fragment)
