"""The model zoo: name -> ModelSpec + the factory that builds it."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

from evitdeploy.errors import UserError
from evitdeploy.models.configs import BACKBONES, SAM_MODELS, SEG_HEADS, SamConfig
from evitdeploy.spec import CLASSIFICATION, PROMPTABLE, SEGMENTATION, ModelSpec

_SEG_RESOLUTION = {"cityscapes": (1024, 2048), "ade20k": (512, 512)}


@dataclass(frozen=True)
class ModelEntry:
    spec: ModelSpec
    description: str


def _entries() -> dict[str, ModelEntry]:
    entries = {}
    for family, cfg in BACKBONES.items():
        name = f"efficientvit_{family}"
        spec = ModelSpec(name, CLASSIFICATION, family, dataset="imagenet", num_classes=1000, input_shape=(1, 3, 224, 224))
        entries[name] = ModelEntry(spec, f"EfficientViT-{family.upper()} ImageNet classifier")
    for (family, dataset), head in SEG_HEADS.items():
        name = f"efficientvit_seg_{family}_{dataset}"
        h, w = _SEG_RESOLUTION[dataset]
        spec = ModelSpec(name, SEGMENTATION, family, dataset=dataset, num_classes=head.num_classes, input_shape=(1, 3, h, w), output_stride=8)
        entries[name] = ModelEntry(spec, f"EfficientViT-{family.upper()} {dataset} segmentation")
    for family, cfg in SAM_MODELS.items():
        name = f"efficientvit_sam_{family}"
        what = (
            "small EfficientViT-SAM for the trained reference (digit mosaics; not a published model)"
            if family == "tiny"
            else (f"EfficientViT-SAM-{family.upper()} promptable segmentation (encoder + prompt decoder)")
        )
        entries[name] = ModelEntry(sam_spec(name, family, cfg), what)
    return entries


def sam_spec(name: str, family: str, cfg: SamConfig) -> ModelSpec:
    size = cfg.embedding_size
    return ModelSpec(
        name,
        PROMPTABLE,
        f"sam_{family}",
        dataset="sa1b",
        num_classes=1,
        input_shape=(1, 3, cfg.image_size, cfg.image_size),
        output_name="image_embeddings",
        embedding=(cfg.embed_dim, size, size),
        prompt_frame=cfg.prompt_frame,
    )


MODELS: dict[str, ModelEntry] = _entries()


def get_spec(name: str) -> ModelSpec:
    """The registered spec, or a UserError that names the closest registered models."""
    if name in MODELS:
        return MODELS[name].spec
    close = difflib.get_close_matches(name, MODELS, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else "run `evitdeploy models` to list them"
    raise UserError(f"unknown model {name!r}", hint)


def create_model(spec: ModelSpec, seed: int = 0):
    """A freshly initialised model in eval mode; deterministic for a given seed and torch version."""
    import torch

    from evitdeploy.models.efficientvit import EfficientViTClassifier, EfficientViTSegmenter

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if spec.promptable:
            from evitdeploy.models.sam import EfficientViTSam

            return EfficientViTSam(SAM_MODELS[spec.family.removeprefix("sam_")], eps=spec.attention_eps).eval()
        cfg = BACKBONES[spec.family]
        if spec.task == CLASSIFICATION:
            model = EfficientViTClassifier(cfg, spec.num_classes, eps=spec.attention_eps)
        else:
            head = replace(SEG_HEADS[(spec.family, spec.dataset)], num_classes=spec.num_classes)
            model = EfficientViTSegmenter(cfg, head, eps=spec.attention_eps)
    return model.eval()


def build_model(spec: ModelSpec, checkpoint: Optional[Path] = None, seed: int = 0, attention_eps: Optional[float] = None):
    """The model for `spec`, with weights from `checkpoint` or a seeded init, and its final spec.

    A checkpoint fixes the LiteMLA eps it was trained with (reference 1e-15, timm 1e-5) unless the
    caller overrides it, and the class count when it was fine-tuned to another one (only the final
    layer differs); the returned spec records both, so whoever reads a manifest rebuilds this model.
    """
    from evitdeploy.models.checkpoint import load_checkpoint, read_our_state

    ours = read_our_state(Path(checkpoint)) if checkpoint is not None else None
    if ours is not None and not spec.promptable:
        spec = _with_class_count_of(spec, ours[0])
    model = create_model(spec, seed)
    eps = spec.attention_eps
    if ours is not None:
        eps = load_checkpoint(model, Path(checkpoint), spec.name, ours=ours, guess=guess_model).attention_eps
    if attention_eps is not None:
        eps = attention_eps
    model.set_attention(eps=eps)
    return model, replace(spec, attention_eps=eps)


def _with_class_count_of(spec: ModelSpec, state: dict) -> ModelSpec:
    """`spec` with the checkpoint's class count when that is the checkpoint's only difference."""
    import torch

    from evitdeploy.models.checkpoint import fine_tuned_class_count

    with torch.device("meta"):  # shapes only: no memory, no init cost
        expected = create_model(spec).state_dict()
    count = fine_tuned_class_count(state, expected)
    return spec if count is None else replace(spec, num_classes=count)


def guess_model(state: dict) -> str | None:
    """The registered model whose parameter names and shapes match the checkpoint exactly."""
    import torch

    shapes = {k: tuple(v.shape) for k, v in state.items()}
    for name, entry in MODELS.items():
        with torch.device("meta"):
            candidate = create_model(entry.spec)
        if {k: tuple(v.shape) for k, v in candidate.state_dict().items()} == shapes:
            return name
    return None


def measure_profile(spec: ModelSpec, size: int = 1024) -> tuple[float, float, float]:
    """The profile measured on torch's meta device (shapes only, no memory): for the test that keeps
    evitdeploy.memory.PROFILES true (memory imports no torch and no model)."""
    import torch

    size = spec.height if spec.promptable else size  # SAM's encoder takes one size (the decoder is per prompt, small)
    with torch.device("meta"):
        model = create_model(spec.with_input(1, size, size))
    model.set_formulation("deploy")
    sizes: list[int] = []
    hooks = [
        module.register_forward_hook(lambda _m, _i, out: sizes.append(out.numel()) if isinstance(out, torch.Tensor) else None)
        for module in model.modules()
        if not list(module.children())
    ]
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size, device="meta"))
    for hook in hooks:
        hook.remove()
    pixels = size * size
    return (round(sum(sizes) / pixels, 1), round(max(sizes) / pixels, 2), round(sum(p.numel() for p in model.parameters()) / 1e6, 2))
