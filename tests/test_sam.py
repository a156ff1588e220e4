"""EfficientViT-SAM: the five published models' structure, the reference's checkpoint layout, SAM's
geometry, and the encoder + decoder artifact (export, check, bench) on ONNX Runtime and OpenVINO."""

from __future__ import annotations

import gzip
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import Cli, assert_clean_error
from evitdeploy.device import prompts
from evitdeploy.models import MODELS, build_model, create_model, get_spec
from evitdeploy.models.checkpoint import detect_layout, reference_to_ours

DATA = Path(__file__).parent / "data"
# The reference repository's parameter counts (its README: 34.8M / 47.7M / 61.3M / 117.0M / 203.3M),
# exactly as its own modules count them (measured from mit-han-lab/efficientvit's sam.py).
PUBLISHED = {
    "l0": (34.8, 34_792_784),
    "l1": (47.7, 47_650_128),
    "l2": (61.3, 61_328_592),
    "xl0": (117.0, 116_957_904),
    "xl1": (203.3, 203_346_128),
}


def _meta_model(name: str):
    with torch.device("meta"):
        return create_model(get_spec(name))


@pytest.mark.parametrize("family", sorted(PUBLISHED))
def test_parameter_counts_are_the_published_ones(family):
    model = _meta_model(f"efficientvit_sam_{family}")
    count = sum(p.numel() for p in model.parameters())
    assert count == PUBLISHED[family][1]
    assert round(count / 1e6, 1) == PUBLISHED[family][0]


@pytest.mark.parametrize("family", sorted(PUBLISHED))
def test_the_reference_checkpoint_layout_maps_onto_ours_key_for_key(family):
    """Names and shapes of the reference's state dict (recorded from its sam.py) become exactly ours."""
    with gzip.open(DATA / "sam_reference_keys.json.gz", "rt") as handle:
        reference = json.load(handle)[family]
    state = {k: torch.empty(shape, device="meta") for k, shape in reference.items()}
    assert detect_layout(state) == "reference"
    renamed = reference_to_ours(state)
    ours = _meta_model(f"efficientvit_sam_{family}").state_dict()
    assert {k: tuple(v.shape) for k, v in renamed.items()} == {k: tuple(v.shape) for k, v in ours.items()}


@pytest.mark.skipif(
    not os.environ.get("EVITDEPLOY_REFERENCE_REPO"),
    reason="set EVITDEPLOY_REFERENCE_REPO to a checkout of mit-han-lab/efficientvit to run the reference oracle",
)
def test_image_encoder_equals_the_reference_implementation(tmp_path):
    """The reference's own EfficientViT-SAM-L0 (random init) saved as a checkpoint, loaded by us:
    same image embedding in the textbook formulation, the reference's arithmetic (measured 1.4e-6 for L0)."""
    from safetensors.torch import save_file

    reference = _reference_sam_module()
    torch.manual_seed(0)
    theirs = reference.efficientvit_sam_l0().eval()
    for module in theirs.modules():
        if isinstance(module, (torch.nn.LayerNorm, torch.nn.BatchNorm2d)):
            module.eps = 1e-6  # sam_model_zoo's set_norm_eps
    save_file({k: v.contiguous() for k, v in theirs.state_dict().items()}, str(tmp_path / "l0.safetensors"))
    ours, spec = build_model(get_spec("efficientvit_sam_l0"), tmp_path / "l0.safetensors")
    assert spec.attention_eps == 1e-15  # the reference's LiteMLA eps, from its key layout
    x = torch.randn(1, 3, 512, 512)
    with torch.no_grad(), ours.formulation("textbook"):
        assert torch.allclose(ours(x), theirs.image_encoder(x), atol=2e-5, rtol=0)


def _reference_sam_module():
    """The reference's sam.py, imported without torchvision, triton or its training stack."""
    import importlib
    import types

    from sam_oracle import import_sam
    from timm_oracle import _install_torchvision_stub

    if import_sam() is None:
        pytest.skip("segment-anything is not installed (a test oracle)")
    _install_torchvision_stub()
    if not hasattr(sys.modules["segment_anything"], "SamAutomaticMaskGenerator"):  # the bare package (sam_oracle) runs no __init__
        sys.modules["segment_anything"].SamAutomaticMaskGenerator = object  # the reference subclasses it for its own generator only
    root = os.environ["EVITDEPLOY_REFERENCE_REPO"]
    sys.path.insert(0, root)
    for name, attrs in {
        "efficientvit.models.nn.drop": {"__all__": []},
        "efficientvit.models.nn.triton_rms_norm": {"TritonRMSNorm2dFunc": object, "__all__": []},
    }.items():
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        sys.modules[name] = module
    package = types.ModuleType("efficientvit.models.efficientvit")
    package.__path__ = [os.path.join(root, "efficientvit", "models", "efficientvit")]
    sys.modules[package.__name__] = package
    sam = importlib.import_module("efficientvit.models.efficientvit.sam")
    sam.transforms = types.SimpleNamespace(Compose=lambda *a: None, ToTensor=lambda: None, Normalize=lambda **k: None)
    return sam


@pytest.mark.fast
def test_the_registry_lists_five_published_models_and_the_trained_one():
    names = [n for n, e in MODELS.items() if e.spec.promptable]
    assert names == [f"efficientvit_sam_{f}" for f in ("l0", "l1", "l2", "xl0", "xl1", "tiny")]
    assert get_spec("efficientvit_sam_l0").input_shape == (1, 3, 512, 512)
    assert get_spec("efficientvit_sam_xl1").input_shape == (1, 3, 1024, 1024)
    for name in names[:-1]:
        spec = get_spec(name)
        assert spec.embedding == (256, 64, 64) and spec.prompt_frame == 1024 and spec.low_res_size == 256


@pytest.mark.fast
def test_sam_geometry_matches_its_resize_longest_side():
    # SamResize.get_preprocess_shape / ResizeLongestSide.apply_coords, written out
    assert prompts.preprocess_shape(480, 640, 1024) == (768, 1024)
    assert prompts.preprocess_shape(333, 500, 512) == (341, 512)
    coords = prompts.to_frame([[320.0, 240.0], [0.0, 479.0]], (480, 640), 1024)
    assert np.allclose(coords, [[512.0, 384.0], [0.0, 479 * 768 / 480]])
    feed = prompts.decoder_feed({"points": [(10, 20)], "labels": [1]}, (480, 640), frame=1024, embedding=(256, 64, 64))
    assert feed["point_labels"].tolist() == [[1.0, -1.0]]  # SAM's padding point without a box
    feed = prompts.decoder_feed({"box": (1, 2, 3, 4)}, (480, 640), frame=1024, embedding=(256, 64, 64))
    assert feed["point_labels"].tolist() == [[2.0, 3.0]] and feed["mask_input"].shape == (1, 1, 256, 256)


@pytest.mark.fast
def test_masks_for_image_is_sams_postprocess():
    import torch.nn.functional as F

    low = np.random.default_rng(0).standard_normal((1, 3, 256, 256)).astype(np.float32)
    original = (480, 640)
    got = prompts.masks_for_image(low, original, 1024)
    x = F.interpolate(torch.from_numpy(low), (1024, 1024), mode="bilinear", align_corners=False)[..., :768, :1024]
    expected = F.interpolate(x, original, mode="bilinear", align_corners=False).numpy()
    assert got.shape == (1, 3, 480, 640) and np.abs(got - expected).max() < 1e-4


@pytest.mark.fast
def test_mask_metrics_see_a_wrong_mask():
    rng = np.random.default_rng(1)
    ref = {"low_res_masks": rng.standard_normal((2, 3, 16, 16)), "iou_predictions": rng.random((2, 3))}
    same = prompts.promptable_metrics(ref, ref)
    assert same["mask_iou_min"] == 1.0 and same["iou_prediction_max_error"] == 0.0
    flipped = {"low_res_masks": -ref["low_res_masks"], "iou_predictions": ref["iou_predictions"] + 0.1}
    bad = prompts.promptable_metrics(ref, flipped)
    assert bad["mask_iou_min"] == 0.0 and bad["low_res_cosine_min"] < -0.99
    failures = prompts.promptable_failures(bad, {"min_mask_iou": 0.99, "max_iou_error": 1e-3, "min_cosine": 0.99})
    assert len(failures) == 3


@pytest.fixture(scope="module")
def sam_onnx(tmp_path_factory):
    from evitdeploy.api import export_model
    from evitdeploy.requests import ExportRequest

    folder = tmp_path_factory.mktemp("sam") / "tiny-onnx"
    return export_model(ExportRequest(model="efficientvit_sam_tiny", output=folder, dynamic="batch"))


def test_an_onnx_export_is_encoder_plus_decoder_and_validated(sam_onnx):
    manifest = sam_onnx.manifest
    assert manifest["models"] == {"encoder": "encoder.onnx", "decoder": "decoder.onnx"}
    assert sam_onnx.model_file.name == "encoder.onnx"
    check = manifest["validation"]["checks"][0]
    assert check["passed"] and check["metrics"]["prompts"] == 16 and check["metrics"]["mask_iou_min"] >= 0.99
    assert check["metrics"]["iou_prediction_max_error"] <= 1e-3


def test_the_decoder_takes_any_number_of_points_and_a_batch(sam_onnx):
    """Dynamic points and batch, each against PyTorch's decoder."""
    import onnxruntime as ort

    from evitdeploy.backends.promptable import decoder_bench_feed

    model, spec = build_model(sam_onnx.spec)
    decoder = model.decoder(spec.decoder_masks)
    session = ort.InferenceSession(str(sam_onnx.folder / "decoder.onnx"), providers=["CPUExecutionProvider"])
    dims = [d for i in session.get_inputs() if i.name == "point_coords" for d in i.shape]
    assert isinstance(dims[0], str) and isinstance(dims[1], str) and dims[2] == 2
    embedding = np.random.default_rng(2).standard_normal((1, *spec.embedding)).astype(np.float32)
    for points in (1, 4, 16):
        feed = decoder_bench_feed(spec, embedding, points)
        if points == 16:
            feed = {k: np.concatenate([v, v]) for k, v in feed.items()}  # batch 2
        masks, ious = session.run(None, feed)
        with torch.no_grad():
            expected = decoder(*(torch.from_numpy(feed[n]) for n in decoder.input_names))
        assert masks.shape == (len(feed["point_coords"]), 4, spec.low_res_size, spec.low_res_size)
        assert np.abs(masks - expected[0].numpy()).max() < 1e-3 and np.abs(ious - expected[1].numpy()).max() < 1e-5


def test_check_and_bench_a_sam_artifact(cli, sam_onnx):
    result = cli("check", sam_onnx.folder, "--samples", "2", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["task"] == "promptable_segmentation" and report["metrics"]["prompts"] == 16
    assert len(report["mask_iou_per_prompt"]) == 16 and report["metrics"]["mask_iou_min"] >= 0.99
    result = cli("bench", sam_onnx.folder, "--count", "3", "--warmup", "1", "--json")
    assert result.exit_code == 0, result.output
    runs = json.loads(result.stdout)["results"]
    assert [r.get("points") for r in runs] == [None, 1, 4, 16] and runs[0]["model"] == "encoder"


def test_a_sam_manifest_without_its_decoder_is_refused(cli, sam_onnx, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(sam_onnx.folder, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["models"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert_clean_error(cli("check", copy), 2, "encoder and decoder")


@pytest.mark.fast
def test_sam_takes_its_one_input_size(cli, tmp_path):
    assert_clean_error(cli("export", "--model", "efficientvit_sam_tiny", "--height", "512", "-o", tmp_path / "x"), 2, "takes 256x256")
    assert not (tmp_path / "x").exists()


def test_openvino_exports_and_checks_a_sam_model(cli, tmp_path):
    pytest.importorskip("openvino", reason="OpenVINO is an optional extra (pip install 'evitdeploy[openvino]')")
    folder = tmp_path / "tiny-ov"
    result = cli("export", "--model", "efficientvit_sam_tiny", "--target", "openvino", "-o", folder)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in folder.iterdir()) == ["decoder.openvino", "encoder.openvino", "manifest.json"]
    result = cli("check", folder, "--samples", "2", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["metrics"]["mask_iou_min"] >= 0.99


def test_predict_draws_the_mask_of_a_prompt(cli, sam_onnx, tmp_path):
    from PIL import Image

    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (120, 200, 3), dtype=np.uint8)).save(photo)
    out = tmp_path / "mask.png"
    result = cli("predict", sam_onnx.folder, photo, "--point", "50,60", "--point", "150,30,0", "--box", "20,10,180,110", "-o", out, "--json")
    assert result.exit_code == 0, result.output
    prediction = json.loads(result.stdout)["result"]
    assert [m["index"] for m in prediction["masks"]] == [0] and "single-mask" in prediction["shown_by"]  # a box: SAM's single mask
    assert prediction["masks"][0]["score"] == prediction["iou_predictions"][0] and len(prediction["iou_predictions"]) == 4
    assert prediction["prompt"]["labels"] == [1, 0] and Image.open(out).size == (200, 120)
    # one point: the best of the three multimask outputs; --save-mask writes it at the photo's size
    result = cli("predict", sam_onnx.folder, photo, "--point", "50,60", "-o", tmp_path / "point.png", "--save-mask", tmp_path / "m.png", "--json")
    assert result.exit_code == 0, result.output
    prediction = json.loads(result.stdout)["result"]
    ious = prediction["iou_predictions"]
    (shown,) = prediction["masks"]
    assert shown["index"] == 1 + int(np.argmax(ious[1:])) and "highest predicted IoU" in prediction["shown_by"]
    saved = np.asarray(Image.open(tmp_path / "m.png"))
    assert saved.shape == (120, 200) and set(np.unique(saved)) <= {0, 255} and int((saved == 255).sum()) == shown["area"]
    if shown["area"]:
        rows, cols = np.nonzero(saved)
        assert shown["bbox"] == [int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1]
    # --multimask: all three, and the .npy holds each
    result = cli("predict", sam_onnx.folder, photo, "--point", "50,60", "--multimask", "-o", tmp_path / "all.png", "--save-mask", tmp_path / "m.npy", "--json")
    assert result.exit_code == 0, result.output
    prediction = json.loads(result.stdout)["result"]
    masks = np.load(tmp_path / "m.npy")
    assert [m["index"] for m in prediction["masks"]] == [1, 2, 3] and masks.shape == (3, 120, 200) and masks.dtype == bool
    assert [int(m.sum()) for m in masks] == [m["area"] for m in prediction["masks"]]
    assert_clean_error(cli("predict", sam_onnx.folder, photo, "--point", "5,5", "-o", tmp_path / "x.png", "--save-mask", tmp_path / "m.jpg"), 2, ".npy")
    assert_clean_error(cli("predict", sam_onnx.folder, photo, "-o", tmp_path / "none.png"), 2, "--point")
    assert_clean_error(cli("predict", sam_onnx.folder, photo, "--point", "250,30", "-o", tmp_path / "out.png"), 2, "outside the 200x120 image")
    assert not (tmp_path / "none.png").exists() and not (tmp_path / "out.png").exists()


@pytest.fixture(scope="module")
def sam_bundle(tmp_path_factory):
    from helpers import Cli

    folder = tmp_path_factory.mktemp("sam-bundle") / "tiny-x86"
    result = Cli()("deploy", "--profile", "x86-cpu", "--model", "efficientvit_sam_tiny", "--samples", "2", "-o", folder, "--json")
    summary = json.loads(result.stdout)
    # the x86-cpu profile's 33 ms budget is judged on this shared host: only parity must pass here
    assert summary["check"]["passed"] and all("latency" in f for f in summary["failures"]), result.output
    return folder, summary


def test_a_sam_bundle_verifies_itself_on_the_device(sam_bundle):
    """verify.py with numpy + onnxruntime only: the recorded prompts through both models, PyTorch's masks."""
    from helpers import on_device

    folder, summary = sam_bundle
    assert summary["check"]["metrics"]["prompts"] == 16
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["models"] == {"encoder": "encoder.onnx", "decoder": "decoder.onnx"}
    assert "Decoder      decoder.onnx" in (folder / "README.txt").read_text()
    run = on_device(folder / "verify.py", "--json", "--count", "3")
    assert run.returncode in (0, 1), run.stderr + run.stdout
    report = json.loads(run.stdout)
    assert report["parity"]["passed"] and all("latency" in f for f in report["failures"]), report["failures"]
    assert report["parity"]["metrics"]["prompts"] == 16 and report["parity"]["metrics"]["mask_iou_min"] >= 0.99  # both photos (256x256 fits)
    assert report["decoder_latency"]["count"] == 3 and report["latency_of"] == "the encoder, per image"


def test_a_sam_bundle_checks_masks_at_the_photos_size_and_an_app_gets_what_predict_draws(sam_bundle, tmp_path):
    """verify.py: raw photos, SAM's conventions, masks at the photo's size vs PyTorch's; an app's
    load(bundle).predict on the device-only interpreter equals `evitdeploy predict` on the bundle."""
    from PIL import Image

    from helpers import on_device
    from test_pipeline import run_app

    folder, _ = sam_bundle
    run = on_device(folder / "verify.py", "--json", "--count", "0")
    whole = json.loads(run.stdout)["pipeline"]
    assert whole["checked"] and whole["passed"] and whole["metrics"]["prompts"] == 6 and whole["metrics"]["same_mask_shown"] == 1.0, whole
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(5).integers(0, 255, (90, 150, 3), dtype=np.uint8)).save(photo)
    for flags, options in (
        (["--point", "40,30"], {"points": [[40, 30]]}),
        (["--box", "10,10,120,80"], {"box": [10, 10, 120, 80]}),
        (["--point", "40,30", "--multimask"], {"points": [[40, 30]], "multimask": True}),
    ):
        result = Cli()("predict", folder, photo, *flags, "-o", tmp_path / "drawn.png", "--force", "--json")
        predicted = json.loads(result.stdout)["result"]["masks"]
        app = run_app(tmp_path, folder, photo, **options)["masks"]
        assert [m["index"] for m in app] == [m["index"] for m in predicted] and [m["area"] for m in app] == [m["area"] for m in predicted], flags
        assert all(m["shape"] == [90, 150] for m in app) and np.allclose([m["score"] for m in app], [m["score"] for m in predicted], atol=1e-6)


def test_a_sam_bundle_with_damaged_prompts_is_refused(sam_bundle, tmp_path):
    import shutil

    from evitdeploy.device.integrity import sha256_of
    from helpers import on_device

    folder = tmp_path / "copy"
    shutil.copytree(sam_bundle[0], folder)
    with np.load(folder / "reference.npz") as reference:
        arrays = dict(reference)
    arrays["prompt_images"] = arrays["prompt_images"] + 5  # prompts of an image the bundle does not hold
    np.savez(folder / "reference.npz", **arrays)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["reference.npz"] = {"sha256": sha256_of(folder / "reference.npz"), "bytes": (folder / "reference.npz").stat().st_size}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    run = on_device(folder / "verify.py")
    assert run.returncode == 2 and "prompt_images must index the inputs" in run.stderr and "Traceback" not in run.stderr


def test_sam_checkpoints_load_flat_nested_or_safetensors_and_a_wrong_one_is_named(tmp_path, cli):
    from safetensors.torch import save_file

    model = create_model(get_spec("efficientvit_sam_tiny"), seed=5)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    torch.save({"model": state}, tmp_path / "nested.pt")
    save_file(state, str(tmp_path / "flat.safetensors"))
    x = torch.randn(1, 3, 256, 256)
    for path in (tmp_path / "nested.pt", tmp_path / "flat.safetensors"):
        loaded, spec = build_model(get_spec("efficientvit_sam_tiny"), path)
        with torch.no_grad():
            assert torch.equal(loaded(x), model(x))
    result = cli("export", "--model", "efficientvit_sam_l0", "--checkpoint", tmp_path / "flat.safetensors", "-o", tmp_path / "out")
    assert_clean_error(result, 2, "does not fit efficientvit_sam_l0", "efficientvit_sam_tiny")
    assert not (tmp_path / "out").exists()


def test_the_fixed_points_decoder_gives_sams_masks_for_any_count_up_to_its_own():
    """TFLite and Core ML decoders take a fixed number of points. Padding tokens change SAM's
    output; masked out of the attention (point_count), they change nothing."""
    from evitdeploy.backends.promptable import decoder_bench_feed
    from evitdeploy.device.prompts import fixed_points_feed, pad_points

    model, spec = build_model(get_spec("efficientvit_sam_tiny"), seed=0)
    decoder, fixed = model.decoder(spec.decoder_masks).eval(), model.decoder(spec.decoder_masks, fixed_points=8).eval()
    embedding = np.random.default_rng(3).standard_normal((1, *spec.embedding)).astype(np.float32)

    def run(module, feed):
        with torch.no_grad():
            out = module(*(torch.from_numpy(feed[name]) for name in module.input_names))
        return [np.asarray(v) for v in (out.values() if isinstance(out, dict) else out)]

    for points in (1, 3, 7):  # plus SAM's padding point: 2, 4 and 8 decoder points
        feed = decoder_bench_feed(spec, embedding, points)
        expected, got = run(decoder, feed), run(fixed, fixed_points_feed(feed, 8))
        assert np.abs(got[0] - expected[0]).max() < 1e-5 and np.abs(got[1] - expected[1]).max() < 1e-6
    padded_naively = run(decoder, pad_points(decoder_bench_feed(spec, embedding, 1), 8))
    assert np.abs(padded_naively[1] - run(decoder, decoder_bench_feed(spec, embedding, 1))[1]).max() > 1e-3
    with pytest.raises(ValueError, match="at most 8"):
        fixed_points_feed(decoder_bench_feed(spec, embedding, 8), 8)
