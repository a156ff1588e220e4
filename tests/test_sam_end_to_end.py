"""A reference-layout EfficientViT-SAM-L0 checkpoint, end to end through `evitdeploy predict`
(photo + prompt -> mask at the photo's size), against the reference predictor's composition on the
same checkpoint: EfficientViT-SAM's set_image transform (torchvision's resize of the PIL image,
ToTensor, Normalize, zero padding), the image encoder, segment_anything's ResizeLongestSide for the
prompt, Meta's prompt encoder and mask decoder, and SAM's postprocess_masks; a single point takes the
best of the three multimask outputs (SamPredictor's advice), a box the single-mask output.

The image encoder on the oracle's side is ours in PyTorch, loaded from the same file: it equals the
reference's own to 2e-6 (test_sam.py's test_image_encoder_equals_the_reference_implementation,
which runs where a checkout of the reference repository is named). Random weights, with randomised
norms and running statistics, in the reference's key layout (tests/data/sam_reference_keys.json.gz).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evitdeploy.models import build_model, get_spec
from sam_oracle import import_sam
from timm_oracle import import_transforms

DATA = Path(__file__).parent / "data"
SAM_MEAN = (123.675 / 255, 116.28 / 255, 103.53 / 255)
SAM_STD = (58.395 / 255, 57.12 / 255, 57.375 / 255)


def reference_layout_state(family: str = "l0", seed: int = 0) -> dict:
    """Random weights under the reference's key names and shapes: variance-preserving convolutions
    and linears, norms and running statistics that are not the identity, unit-scale tokens."""
    with gzip.open(DATA / "sam_reference_keys.json.gz", "rt") as handle:
        keys = json.load(handle)[family]
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in keys.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(shape, generator=g)
        elif key.endswith("running_mean"):
            state[key] = 0.1 * torch.randn(shape, generator=g)
        elif len(shape) == 1:  # a norm's scale, or any bias
            state[key] = (1.0 if key.endswith("weight") else 0.0) + 0.2 * torch.randn(shape, generator=g)
        elif "token" in key or "embed" in key.rsplit(".", 2)[-2] or "gaussian" in key:
            state[key] = torch.randn(shape, generator=g)
        else:
            fan_in = shape[0] if "output_upscaling" in key else int(np.prod(shape[1:]))  # a stride-2 2x2 transposed conv: one tap per output
            state[key] = torch.randn(shape, generator=g) / fan_in**0.5
    return state


def oracle(model, photo: np.ndarray, prompt: dict, sam, transforms) -> tuple:
    """(image embedding, the mask SamPredictor's advice picks at the photo's size) the reference's way."""
    from segment_anything.utils.transforms import ResizeLongestSide
    from torchvision.transforms.functional import resize, to_pil_image

    size, frame = 512, 1024
    h, w = photo.shape[:2]
    scale = size * 1.0 / max(h, w)
    target = (int(h * scale + 0.5), int(w * scale + 0.5))
    resized = photo if max(h, w) == size else np.array(resize(to_pil_image(photo), list(target)))
    x = transforms.Normalize(SAM_MEAN, SAM_STD)(transforms.ToTensor()(resized))
    x = F.pad(x, (0, size - x.shape[-1], 0, size - x.shape[-2]), value=0)[None]
    encoder, decoder = meta_prompt_modules(model, sam)
    with torch.no_grad(), model.formulation("textbook"):
        embedding = model(x)
        transform = ResizeLongestSide(frame)
        points = boxes = None
        if "points" in prompt:
            coords = torch.as_tensor(transform.apply_coords(np.array(prompt["points"], np.float64), (h, w)), dtype=torch.float)[None]
            points = (coords, torch.ones((1, len(prompt["points"]))))
        if "box" in prompt:
            boxes = torch.as_tensor(transform.apply_boxes(np.array([prompt["box"]], np.float64), (h, w)), dtype=torch.float)
        multimask = points is not None and boxes is None and len(prompt["points"]) == 1
        sparse, dense = encoder(points=points, boxes=boxes, masks=None)
        low_res, iou = decoder(
            image_embeddings=embedding,
            image_pe=encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )
        masks = F.interpolate(low_res, (frame, frame), mode="bilinear", align_corners=False)
        inner = (int(h * frame / max(h, w) + 0.5), int(w * frame / max(h, w) + 0.5))
        masks = F.interpolate(masks[..., : inner[0], : inner[1]], (h, w), mode="bilinear", align_corners=False) > 0
    return embedding.numpy(), masks[0, int(iou[0].argmax())].numpy()


def meta_prompt_modules(model, sam):
    """Meta's PromptEncoder and MaskDecoder (EfficientViT-SAM's configuration) with the model's weights."""
    encoder = sam.prompt_encoder.PromptEncoder(embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024), mask_in_chans=16)
    transformer = sam.transformer.TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8)
    decoder = sam.mask_decoder.MaskDecoder(num_multimask_outputs=3, transformer=transformer, transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256)
    encoder.load_state_dict(model.prompt_encoder.state_dict(), strict=True)
    decoder.load_state_dict(model.mask_decoder.state_dict(), strict=True)
    for module in (*encoder.modules(), *decoder.modules()):
        if isinstance(module, torch.nn.LayerNorm):
            module.eps = 1e-6  # EfficientViT-SAM's set_norm_eps
    return encoder.eval(), decoder.eval()


def photos() -> dict:
    from skimage import data

    return {"coffee 400x600": data.coffee(), "chelsea 300x451": data.chelsea(), "rocket 427x640 cropped to 427x213": data.rocket()[:, 200:413]}


def test_a_reference_layout_sam_l0_through_predict_equals_the_reference_predictor(cli, tmp_path):
    """Embeddings within 1e-4, mask IoU >= 0.999 on non-square photos, for a point and a box."""
    import onnxruntime as ort
    from PIL import Image
    from safetensors.torch import save_file

    from evitdeploy.device.pipeline import model_input
    from evitdeploy.device.prompts import mask_iou

    sam, transforms = import_sam(), import_transforms()
    if sam is None or transforms is None:
        pytest.skip("segment-anything and torchvision's transforms are the oracle here")
    checkpoint = tmp_path / "l0_reference_layout.safetensors"
    save_file(reference_layout_state(), str(checkpoint))
    model, spec = build_model(get_spec("efficientvit_sam_l0"), checkpoint)
    folder = tmp_path / "l0"
    result = cli("export", "--model", "efficientvit_sam_l0", "--checkpoint", checkpoint, "--target", "onnx", "-o", folder, "--json")
    assert result.exit_code == 0, result.output
    encoder = ort.InferenceSession(str(folder / "encoder.onnx"), providers=["CPUExecutionProvider"])
    found = {}
    for name, photo in photos().items():
        h, w = photo.shape[:2]
        path = tmp_path / f"{name.split()[0]}.png"
        Image.fromarray(photo).save(path)
        embedding = encoder.run(None, {spec.input_name: model_input(photo, spec.to_dict())})[0]
        for kind, prompt, flags in (
            ("point", {"points": [(0.4 * w, 0.55 * h)]}, ["--point", f"{0.4 * w},{0.55 * h}"]),
            ("box", {"box": (0.2 * w, 0.15 * h, 0.75 * w, 0.9 * h)}, ["--box", f"{0.2 * w},{0.15 * h},{0.75 * w},{0.9 * h}"]),
        ):
            theirs_embedding, theirs_mask = oracle(model, photo, prompt, sam, transforms)
            mask_file = tmp_path / f"{name.split()[0]}-{kind}.npy"
            result = cli("predict", folder, path, *flags, "-o", tmp_path / "drawn.png", "--force", "--save-mask", mask_file, "--json")
            assert result.exit_code == 0, result.output
            ours_mask = np.load(mask_file)[0]
            assert ours_mask.shape == (h, w)
            found[f"{name} {kind}"] = (float(np.abs(embedding - theirs_embedding).max()), mask_iou(ours_mask, theirs_mask), float(theirs_mask.mean()))
    print(json.dumps(found, indent=1))
    for case, (embedding_error, iou, share) in found.items():
        assert embedding_error < 1e-4, case
        assert iou >= 0.999, case
    assert any(0.02 < share < 0.98 for _, _, share in found.values())  # masks that are neither empty nor everything
