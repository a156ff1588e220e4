"""The whole pipeline a bundle ships: an app's `evitdeploy_device.load(bundle).predict(photo)` on the
device-only interpreter gives what `evitdeploy predict` draws, and verify.py checks raw photos
through preprocessing, runtime and postprocessing against PyTorch's answers, so a changed
preprocessing fails it (exit 1) while an older bundle without photos still verifies."""

from __future__ import annotations

import json
import shutil
import textwrap

import numpy as np
import pytest
from PIL import Image

from evitdeploy.device.integrity import sha256_of
from helpers import Cli, manifest_of, on_device, rewrite_manifest

APP = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from PIL import Image

    bundle, photo = sys.argv[1], sys.argv[2]
    sys.path.insert(0, bundle)
    import evitdeploy_device

    model = evitdeploy_device.load(bundle)
    result = model.predict(np.asarray(Image.open(photo).convert("RGB")), **json.loads(sys.argv[3]))
    out = {"top": result.get("top")}
    if "class_map" in result:
        out["class_counts"] = np.bincount(result["class_map"][result["class_map"] >= 0].ravel()).tolist()
        out["shape"] = list(result["class_map"].shape)
    if "masks" in result:
        out["masks"] = [{"index": m["index"], "score": m["score"], "area": int(m["mask"].sum()), "shape": list(m["mask"].shape)} for m in result["masks"]]
    print(json.dumps(out))
    """
)


def run_app(tmp_path, bundle, photo, **options) -> dict:
    """The app above in a fresh interpreter where evitdeploy, torch and OpenCV do not import."""
    script = tmp_path / "app.py"
    script.write_text(APP)
    run = on_device(script, str(bundle), str(photo), json.dumps(options))
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def deploy(folder, model: str, checkpoint, *size: str):
    size_flags = ("--height", size[0], "--width", size[1])
    result = Cli()("deploy", "--profile", "x86-cpu", "--model", model, "--checkpoint", checkpoint, *size_flags, "--samples", "2", "-o", folder, "--json")
    summary = json.loads(result.stdout)
    assert summary["check"]["passed"], result.output
    return folder


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, digits_checkpoint_path, mosaic_checkpoint_path):
    """The trained references: a random-weight model's answer barely depends on its input, so
    only a trained one shows what a changed preprocessing does."""
    root = tmp_path_factory.mktemp("pipeline")
    return {
        "classification": deploy(root / "b0", "efficientvit_b0", digits_checkpoint_path, "64", "64"),
        "segmentation": deploy(root / "seg", "efficientvit_seg_b0_cityscapes", mosaic_checkpoint_path, "128", "256"),
    }


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("photo") / "photo.png"
    from skimage import data

    Image.fromarray(data.chelsea()[:251, :377]).save(path)  # odd, not square
    return path


@pytest.mark.parametrize("task", ["classification", "segmentation"])
def test_an_app_gets_what_predict_draws(bundles, photo, task, tmp_path):
    bundle = bundles[task]
    app = run_app(tmp_path, bundle, photo, top=5)
    result = Cli()("predict", bundle, photo, "-o", tmp_path / "drawn.png", "--json")
    assert result.exit_code == 0, result.output
    predicted = json.loads(result.stdout)["result"]
    if task == "classification":
        assert [e["index"] for e in app["top"]] == [e["index"] for e in predicted["top"]]
        assert np.allclose([e["probability"] for e in app["top"]], [e["probability"] for e in predicted["top"]], rtol=1e-5)
        assert app["top"][0]["label"] == predicted["top"][0]["label"]  # the bundle's labels.txt: the model's class names
    else:
        assert app["shape"] == [251, 377]  # the class map at the photo's size
        pixels = sum(app["class_counts"])
        fractions = {index: count / pixels for index, count in enumerate(app["class_counts"]) if count}
        assert fractions == pytest.approx({c["index"]: c["fraction"] for c in predicted["classes"]}, abs=1e-3)


@pytest.mark.parametrize("task", ["classification", "segmentation"])
def test_verify_checks_raw_photos_through_the_whole_pipeline(bundles, task):
    bundle = bundles[task]
    manifest = manifest_of(bundle)
    assert manifest["bundle"]["pipeline"]["photos"] == [[213, 320], [213, 320]]  # coffee and chelsea, longest side 320
    run = on_device(bundle / "verify.py", "--json", "--count", "2")
    assert run.returncode in (0, 1), run.stderr
    report = json.loads(run.stdout)
    whole = report["pipeline"]
    assert whole["checked"] and whole["passed"] and whole["metrics"]["photos"] == 2, whole
    assert whole["preprocessing"] == manifest["bundle"]["pipeline"]["preprocessing"]
    if task == "segmentation":
        assert whole["metrics"]["photo_pixel_agreement"] > 0.999


def _rehash(folder, name: str) -> None:
    rewrite_manifest(folder, lambda m: m["files"].__setitem__(name, {"sha256": sha256_of(folder / name), "bytes": (folder / name).stat().st_size}))


@pytest.mark.parametrize("task", ["classification", "segmentation"])
def test_a_changed_preprocessing_fails_verify(bundles, task, tmp_path):
    """The interpolation flipped in a copy's manifest: the graph-level check cannot see it, the
    whole-pipeline check does (exit 1)."""
    folder = tmp_path / "copy"
    shutil.copytree(bundles[task], folder)
    flipped = {"bicubic": "bilinear", "bilinear": "bicubic"}

    def flip(manifest):
        pre = manifest["spec"]["preprocessing"]
        pre["interpolation"] = flipped[pre["interpolation"]]
        pre.pop("source", None)

    rewrite_manifest(folder, flip)
    run = on_device(folder / "verify.py", "--json", "--count", "0")
    assert run.returncode == 1, run.stderr + run.stdout
    report = json.loads(run.stdout)
    assert report["parity"]["passed"] and not report["pipeline"]["passed"]
    assert report["failures"] and all(line.startswith("whole pipeline: ") for line in report["failures"])


def test_an_older_bundle_without_photos_still_verifies(bundles, tmp_path):
    """No pipeline.npz, no labels.txt, no preprocessing in the spec: what bundles held before."""
    folder = tmp_path / "old"
    shutil.copytree(bundles["classification"], folder)
    for name in ("pipeline.npz", "labels.txt"):
        (folder / name).unlink()

    def older(manifest):
        for name in ("pipeline.npz", "labels.txt"):
            del manifest["files"][name]
        del manifest["spec"]["preprocessing"]
        del manifest["bundle"]["pipeline"]

    rewrite_manifest(folder, older)
    run = on_device(folder / "verify.py", "--count", "0")
    assert run.returncode == 0, run.stderr + run.stdout
    assert "pipeline  not checked: this bundle carries no raw photos" in run.stdout
    app = run_app(tmp_path, folder, _photo(tmp_path))
    assert app["top"][0]["label"].startswith("class ")  # no labels.txt: names by index


def _photo(tmp_path):
    path = tmp_path / "p.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(path)
    return path


def test_damaged_pipeline_arrays_are_refused(bundles, tmp_path):
    folder = tmp_path / "bad"
    shutil.copytree(bundles["classification"], folder)
    with np.load(folder / "pipeline.npz") as stored:
        arrays = dict(stored)
    arrays["photo_0"] = arrays["photo_0"].astype(np.float32)  # not a photo
    np.savez(folder / "pipeline.npz", **arrays)
    _rehash(folder, "pipeline.npz")
    run = on_device(folder / "verify.py", "--count", "0")
    assert run.returncode == 2 and "photo_0.. (H, W, 3) uint8" in run.stderr and "Traceback" not in run.stderr


def test_an_app_is_refused_a_modified_bundle_and_a_bad_photo(bundles, tmp_path):
    import sys

    folder = tmp_path / "mod"
    shutil.copytree(bundles["classification"], folder)
    sys.path.insert(0, str(folder))
    try:
        import evitdeploy_device
        from evitdeploy_device.integrity import BundleError

        model = evitdeploy_device.load(folder)
        with pytest.raises(ValueError, match="RGB uint8"):
            model.predict(np.zeros((4, 4), np.uint8))
        with pytest.raises(ValueError, match="promptable"):
            model.predict(np.zeros((4, 4, 3), np.uint8), box=(0, 0, 2, 2))
        (folder / "labels.txt").write_text("tampered\n")
        with pytest.raises(BundleError, match="labels.txt"):
            evitdeploy_device.load(folder)
    finally:
        sys.path.remove(str(folder))
        for name in [m for m in sys.modules if m == "evitdeploy_device" or m.startswith("evitdeploy_device.")]:
            del sys.modules[name]


def test_a_users_preprocessing_from_a_timm_config_is_recorded_and_used(tmp_path):
    """--preprocessing config.json (a timm checkpoint's): the manifest records it, check runs it,
    predict reports it; a file that is not one is refused in one line before anything is built."""
    from evitdeploy.device import preprocessing
    from helpers import assert_clean_error

    config = {"architecture": "efficientvit_b0", "pretrained_cfg": {"interpolation": "bilinear", "crop_pct": 0.875, "mean": [0.5] * 3, "std": [0.5] * 3}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    cli, folder = Cli(), tmp_path / "b0"
    result = cli("export", "--model", "efficientvit_b0", "--height", "64", "--width", "64", "--preprocessing", tmp_path / "config.json", "-o", folder)
    assert result.exit_code == 0, result.output
    spec = manifest_of(folder)["spec"]
    assert spec["preprocessing"] == preprocessing.from_timm(config) and spec["mean"] == [0.5] * 3
    check = cli("check", folder, "--json")
    assert check.exit_code == 0 and "timm pretrained config: bilinear, crop 0.875" in json.loads(check.stdout)["preprocessing"], check.output
    for text, fragment in (("{", "not JSON"), ('{"pretrained_cfg": {"crop_mode": "squash"}}', "squash"), ('{"resize": "widest"}', "resize")):
        (tmp_path / "bad.json").write_text(text)
        bad = cli("export", "--model", "efficientvit_b0", "--preprocessing", tmp_path / "bad.json", "-o", tmp_path / "never")
        assert_clean_error(bad, 2, fragment)
        assert not (tmp_path / "never").exists()


@pytest.mark.parametrize(
    ("profile", "task"),
    [("intel-cpu", "segmentation"), ("intel-cpu", "promptable"), ("raspberry-pi-5", "segmentation"), ("raspberry-pi-5", "promptable")],
)
def test_openvino_and_tflite_bundles_verify_the_whole_pipeline_on_the_device_interpreter(profile, task, tmp_path, mosaic_checkpoint_path, sam_checkpoint_path):
    """OpenVINO and LiteRT bundles of the trained segmenter and promptable model (the classifiers'
    are verified in test_openvino.py and test_tflite.py): verify.py with numpy, Pillow and the
    runtime only passes its graph-level and its whole-pipeline checks. FP32: the budgets of
    these profiles are not what is tested."""
    model, checkpoint, size = {
        "segmentation": ("efficientvit_seg_b0_cityscapes", mosaic_checkpoint_path, ("128", "256")),
        "promptable": ("efficientvit_sam_tiny", sam_checkpoint_path, ("256", "256")),
    }[task]
    folder = tmp_path / "bundle"
    flags = ("--profile", profile, "--precision", "fp32", "--model", model, "--checkpoint", checkpoint, "--height", size[0], "--width", size[1])
    result = Cli()("deploy", *flags, "--samples", "2", "-o", folder, "--json")
    assert json.loads(result.stdout)["check"]["passed"], result.output
    run = on_device(folder / "verify.py", "--json", "--count", "0")
    assert run.returncode == 0, run.stderr + run.stdout
    whole = json.loads(run.stdout)["pipeline"]
    assert whole["checked"] and whole["passed"] and whole["metrics"]["photos"] == 2, whole
