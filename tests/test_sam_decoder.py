"""Our SAM prompt encoder and mask decoder (evitdeploy.models.prompt) against Meta's
segment_anything modules (imported through tests/sam_oracle.py) with the same weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evitdeploy.models.prompt import MaskDecoder, PromptDecoder, PromptEncoder, TwoWayTransformer
from sam_oracle import import_sam

# EfficientViT-SAM's configuration (build_efficientvit_sam), and a small one for quick checks.
FULL = dict(embed_dim=256, emb=(64, 64), frame=(1024, 1024), mask_in_chans=16, depth=2, heads=8, mlp_dim=2048)
SMALL = dict(embed_dim=32, emb=(8, 12), frame=(128, 192), mask_in_chans=8, depth=1, heads=2, mlp_dim=64)
KINDS = ("points", "box", "points+box", "mask")
TOL = 1e-5


def _meta():
    sam = import_sam()
    if sam is None:
        pytest.skip("segment-anything is not installed (pip install 'evitdeploy[test]'); it is only a test oracle")
    return sam


def _meta_modules(sam, cfg: dict, seed: int = 0):
    """Meta's prompt encoder and mask decoder, nn.LayerNorm eps 1e-6 as EfficientViT-SAM's
    set_norm_eps sets it. Random weights that keep activations near unit scale (norms too): torch's
    default init gives mask logits of ~0.5, against which an absolute 1e-5 would be lax; these give
    logits of a few units (max ~6)."""
    torch.manual_seed(seed)
    encoder = sam.prompt_encoder.PromptEncoder(
        embed_dim=cfg["embed_dim"], image_embedding_size=cfg["emb"], input_image_size=cfg["frame"], mask_in_chans=cfg["mask_in_chans"]
    )
    transformer = sam.transformer.TwoWayTransformer(depth=cfg["depth"], embedding_dim=cfg["embed_dim"], mlp_dim=cfg["mlp_dim"], num_heads=cfg["heads"])
    decoder = sam.mask_decoder.MaskDecoder(
        num_multimask_outputs=3, transformer=transformer, transformer_dim=cfg["embed_dim"], iou_head_depth=3, iou_head_hidden_dim=256
    )
    _randomize(encoder, decoder, seed=seed + 1)
    for module in (*encoder.modules(), *decoder.modules()):
        if isinstance(module, torch.nn.LayerNorm):
            module.eps = 1e-6
    return encoder.eval(), decoder.eval()


def _randomize(*models: torch.nn.Module, seed: int) -> None:
    """Weights that keep activations near unit scale (variance-preserving), norms not identity."""
    g = torch.Generator().manual_seed(seed)
    for module in (m for model in models for m in model.modules()):
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            transposed = isinstance(module, torch.nn.ConvTranspose2d)  # stride = kernel: one tap per output
            fan_in = module.weight.shape[0] if transposed else module.weight[0].numel()
            module.weight.data.copy_(torch.randn(module.weight.shape, generator=g) / fan_in**0.5)
            module.bias.data.copy_(0.1 * torch.randn(module.bias.shape, generator=g))
        if isinstance(module, torch.nn.LayerNorm) or type(module).__name__ == "LayerNorm2d":  # Meta's and ours
            module.weight.data.copy_(1 + 0.2 * torch.randn(module.weight.shape, generator=g))
            module.bias.data.copy_(0.2 * torch.randn(module.bias.shape, generator=g))


def _ours(cfg: dict, meta_encoder=None, meta_decoder=None):
    encoder = PromptEncoder(embed_dim=cfg["embed_dim"], image_embedding_size=cfg["emb"], input_image_size=cfg["frame"], mask_in_chans=cfg["mask_in_chans"])
    transformer = TwoWayTransformer(depth=cfg["depth"], embedding_dim=cfg["embed_dim"], num_heads=cfg["heads"], mlp_dim=cfg["mlp_dim"])
    decoder = MaskDecoder(num_multimask_outputs=3, transformer=transformer, transformer_dim=cfg["embed_dim"], iou_head_depth=3, iou_head_hidden_dim=256)
    if meta_encoder is not None:
        encoder.load_state_dict(meta_encoder.state_dict(), strict=True)
        decoder.load_state_dict(meta_decoder.state_dict(), strict=True)
    return encoder.eval(), decoder.eval()


@pytest.fixture(scope="module")
def full():
    """(Meta's encoder, decoder), (ours, loaded strict from Meta's), at EfficientViT-SAM's size."""
    meta = _meta_modules(_meta(), FULL)
    return meta, _ours(FULL, *meta)


def _prompts(kind: str, cfg: dict, batch: int = 2, seed: int = 0) -> tuple[dict, dict]:
    """The same prompts for Meta's eager encoder (points=, boxes=, masks=) and for PromptDecoder
    (boxes as two points labelled 2/3; Meta's padding point, label -1, where it pads)."""
    g = torch.Generator().manual_seed(seed)
    h, w = cfg["frame"]
    scale = torch.tensor([w, h], dtype=torch.float32)
    coords = torch.rand((batch, 3, 2), generator=g) * scale
    labels = torch.randint(0, 2, (batch, 3), generator=g).float()
    corner = torch.rand((batch, 1, 2), generator=g) * scale * 0.5
    boxes = torch.cat([corner, corner + (0.1 + 0.4 * torch.rand((batch, 1, 2), generator=g)) * scale], dim=1)
    mask_shape = (batch, 1, 4 * cfg["emb"][0], 4 * cfg["emb"][1])
    masks = torch.randn(mask_shape, generator=g) * 4

    points = kind in ("points", "points+box", "mask")
    has_box = "box" in kind
    meta = dict(points=(coords, labels) if points else None, boxes=boxes.reshape(batch, 4) if has_box else None, masks=masks if kind == "mask" else None)
    ours_coords, ours_labels = [], []
    if points:
        ours_coords.append(coords)
        ours_labels.append(labels)
    if has_box:
        ours_coords.append(boxes)
        ours_labels.append(torch.tensor([[2.0, 3.0]]).expand(batch, -1))
    else:  # Meta pads points with one not-a-point when no box is given
        ours_coords.append(torch.zeros((batch, 1, 2)))
        ours_labels.append(torch.full((batch, 1), -1.0))
    ours = dict(
        point_coords=torch.cat(ours_coords, dim=1),
        point_labels=torch.cat(ours_labels, dim=1),
        mask_input=masks if kind == "mask" else torch.zeros(mask_shape),
        has_mask_input=torch.ones(batch) if kind == "mask" else torch.zeros(1),
    )
    return meta, ours


def _image(cfg: dict, batch: int = 1, seed: int = 5) -> torch.Tensor:
    return torch.randn((batch, cfg["embed_dim"], *cfg["emb"]), generator=torch.Generator().manual_seed(seed))


def _meta_eager(encoder, decoder, image, prompts: dict, multimask: bool):
    sparse, dense = encoder(**prompts)
    return decoder(
        image_embeddings=image,
        image_pe=encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask,
    )


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


@torch.no_grad()
@pytest.mark.parametrize("kind", KINDS)
def test_encoder_and_decoder_match_meta(full, kind):
    (meta_enc, meta_dec), (enc, dec) = full
    image = _image(FULL)
    prompts, _ = _prompts(kind, FULL)
    meta_sparse, meta_dense = meta_enc(**prompts)
    sparse, dense = enc(**prompts)
    assert _max_diff(sparse, meta_sparse) <= TOL and _max_diff(dense, meta_dense) <= TOL
    for multimask in (True, False):
        meta_masks, meta_iou = _meta_eager(meta_enc, meta_dec, image, prompts, multimask)
        masks, iou = _meta_eager(enc, dec, image, prompts, multimask)
        assert masks.shape == (2, 3 if multimask else 1, 256, 256)
        assert _max_diff(masks, meta_masks) <= TOL, kind
        assert _max_diff(iou, meta_iou) <= TOL, kind


@torch.no_grad()
@pytest.mark.parametrize("kind", KINDS)
def test_prompt_decoder_matches_meta_eager_and_its_onnx_recipe(full, kind):
    sam = _meta()
    (meta_enc, meta_dec), (enc, dec) = full
    image = _image(FULL)
    meta_prompts, ours = _prompts(kind, FULL, seed=1)
    # Meta's own ONNX recipe; its image encoder only lends img_size. Third output: all low-res masks.
    stub = torch.nn.Module()
    stub.img_size = FULL["frame"][0]
    meta_sam = sam.sam.Sam(image_encoder=stub, prompt_encoder=meta_enc, mask_decoder=meta_dec)
    recipe = sam.onnx.SamOnnxModel(meta_sam, return_single_mask=False)
    has_mask = ours["has_mask_input"][:1]  # Meta's recipe takes one flag (all rows agree here)
    _, recipe_iou, recipe_masks = recipe(
        image, ours["point_coords"], ours["point_labels"], ours["mask_input"], has_mask, orig_im_size=torch.tensor([64.0, 64.0])
    )
    for multimask in (True, False):
        masks, iou = PromptDecoder(enc, dec, masks=3 if multimask else 1)(image_embeddings=image, **ours)
        meta_masks, meta_iou = _meta_eager(meta_enc, meta_dec, image, meta_prompts, multimask)
        assert _max_diff(masks, meta_masks) <= TOL and _max_diff(iou, meta_iou) <= TOL, kind
        selected = slice(1, None) if multimask else slice(0, 1)
        assert _max_diff(masks, recipe_masks[:, selected]) <= TOL and _max_diff(iou, recipe_iou[:, selected]) <= TOL, kind
    every, every_iou = PromptDecoder(enc, dec)(image_embeddings=image, **ours)  # what is exported: all four tokens
    assert _max_diff(every, recipe_masks) <= TOL and _max_diff(every_iou, recipe_iou) <= TOL, kind


@torch.no_grad()
def test_prompt_decoder_pairs_image_rows_with_prompt_rows(full):
    """A batch of images goes row by row with the prompts (Meta repeats one image per prompt)."""
    (meta_enc, meta_dec), (enc, dec) = full
    images = _image(FULL, batch=2)
    meta_prompts, ours = _prompts("mask", FULL, seed=2)
    masks, iou = PromptDecoder(enc, dec, masks=3)(image_embeddings=images, **ours)
    for row in range(2):
        (coords, labels), mask = meta_prompts["points"], meta_prompts["masks"]
        one = dict(points=(coords[row : row + 1], labels[row : row + 1]), boxes=None, masks=mask[row : row + 1])
        meta_masks, meta_iou = _meta_eager(meta_enc, meta_dec, images[row : row + 1], one, multimask=True)
        assert _max_diff(masks[row : row + 1], meta_masks) <= TOL and _max_diff(iou[row : row + 1], meta_iou) <= TOL


def _random_prompt_inputs(cfg: dict, batch: int, points: int, image_batch: int, seed: int) -> dict:
    """Every label kind (-1..3) at random places; a mask on some rows only."""
    g = torch.Generator().manual_seed(seed)
    h, w = cfg["frame"]
    return dict(
        image_embeddings=_image(cfg, batch=image_batch, seed=seed),
        point_coords=torch.rand((batch, points, 2), generator=g) * torch.tensor([w, h]),
        point_labels=torch.randint(-1, 4, (batch, points), generator=g).float(),
        mask_input=torch.randn((batch, 1, 4 * cfg["emb"][0], 4 * cfg["emb"][1]), generator=g) * 4,
        has_mask_input=torch.tensor([1.0, 0.0])[:batch],
    )


def test_prompt_decoder_exports_to_onnx_with_dynamic_points(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    encoder, decoder = _ours(FULL)
    _randomize(encoder, decoder, seed=7)
    model = PromptDecoder(encoder, decoder).eval()
    dummy = _random_prompt_inputs(FULL, batch=2, points=3, image_batch=2, seed=0)
    path = tmp_path / "prompt_decoder.onnx"
    axes = {name: {0: "batch"} for name in PromptDecoder.input_names}
    axes["image_embeddings"] = {0: "image_batch"}
    axes["point_coords"] = axes["point_labels"] = {0: "batch", 1: "points"}
    axes.update({name: {0: "batch"} for name in PromptDecoder.output_names})
    axes["has_mask_input"] = {0: "mask_flags"}
    torch.onnx.export(
        model,
        tuple(dummy.values()),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=list(PromptDecoder.input_names),
        output_names=list(PromptDecoder.output_names),
        dynamic_axes=axes,
    )
    graph_inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in onnx.load(str(path)).graph.input}
    assert graph_inputs["point_coords"] == ["batch", "points", 2]
    assert graph_inputs["point_labels"] == ["batch", "points"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    cases = [(batch, points, batch) for batch in (1, 2) for points in (1, 4, 16)] + [(2, 4, 1)]  # last: one image, two prompts
    for seed, (batch, points, image_batch) in enumerate(cases, start=1):
        inputs = _random_prompt_inputs(FULL, batch=batch, points=points, image_batch=image_batch, seed=seed)
        with torch.no_grad():
            masks, iou = model(**inputs)
        ort_masks, ort_iou = session.run(None, {name: t.numpy() for name, t in inputs.items()})
        assert ort_masks.shape == (batch, 4, 256, 256) and ort_iou.shape == (batch, 4)
        assert np.abs(ort_masks - masks.numpy()).max() <= 1e-4, (batch, points)
        assert np.abs(ort_iou - iou.numpy()).max() <= 1e-5, (batch, points)


def test_parameter_count_equals_meta():
    meta, ours = _meta_modules(_meta(), FULL), _ours(FULL)
    count = lambda modules: sum(p.numel() for m in modules for p in m.parameters())  # noqa: E731 (a one-line parameter count, named for the assertions below)
    assert count(ours) == count(meta)
    assert count(ours) > 4_000_000  # SAM's decoder side is ~4.06M parameters


def test_state_dict_names_are_metas():
    """Checkpoint keys as EfficientViT-SAM's state dict spells them, and its LayerNorm eps."""
    encoder, decoder = _ours(SMALL)
    keys = {f"prompt_encoder.{k}" for k in encoder.state_dict()} | {f"mask_decoder.{k}" for k in decoder.state_dict()}
    for key in (
        "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
        "prompt_encoder.point_embeddings.0.weight",
        "prompt_encoder.point_embeddings.3.weight",
        "prompt_encoder.not_a_point_embed.weight",
        "prompt_encoder.no_mask_embed.weight",
        "prompt_encoder.mask_downscaling.1.weight",
        "prompt_encoder.mask_downscaling.6.bias",
        "mask_decoder.iou_token.weight",
        "mask_decoder.mask_tokens.weight",
        "mask_decoder.transformer.layers.0.self_attn.q_proj.weight",
        "mask_decoder.transformer.layers.0.mlp.lin1.weight",
        "mask_decoder.transformer.layers.0.norm4.bias",
        "mask_decoder.transformer.final_attn_token_to_image.out_proj.weight",
        "mask_decoder.transformer.norm_final_attn.weight",
        "mask_decoder.output_upscaling.1.weight",
        "mask_decoder.output_upscaling.3.bias",
        "mask_decoder.output_hypernetworks_mlps.0.layers.0.weight",
        "mask_decoder.iou_prediction_head.layers.2.bias",
    ):
        assert key in keys, key
    eps = {m.eps for m in decoder.modules() if isinstance(m, torch.nn.LayerNorm)}
    assert eps == {1e-6}


@torch.no_grad()
def test_small_config_matches_meta():
    """Non-square frame and embedding, other widths: the sizes really are parameters."""
    meta_enc, meta_dec = _meta_modules(_meta(), SMALL, seed=3)
    enc, dec = _ours(SMALL, meta_enc, meta_dec)
    image = _image(SMALL)
    meta_prompts, ours = _prompts("points+box", SMALL, seed=3)
    meta_masks, meta_iou = _meta_eager(meta_enc, meta_dec, image, meta_prompts, multimask=True)
    masks, iou = PromptDecoder(enc, dec, masks=3)(image_embeddings=image, **ours)
    assert masks.shape == (2, 3, 32, 48)
    assert _max_diff(masks, meta_masks) <= TOL and _max_diff(iou, meta_iou) <= TOL
