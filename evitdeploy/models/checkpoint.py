"""Load EfficientViT weights from a local file, safely, in either public key layout.

Accepted: `.safetensors`, or `.pt/.pth/.bin` read with `torch.load(weights_only=True)` (tensors and
plain containers only: arbitrary pickles are refused); a flat state dict or one nested under
`state_dict` / `model`; the reference repository's keys (`backbone.input_stem.op_list.0...`) or
timm's (`stem.in_conv...`), which are also ours.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from evitdeploy.errors import UserError, first_line, shorten
from evitdeploy.files import input_file

# The final layer, whose width is the class count: a fine-tuned checkpoint differs from its
# architecture's registered spec only here.
FINAL_LAYER_KEYS = ("head.classifier.4.weight", "head.classifier.4.bias", "head.classifier.conv.weight", "head.classifier.conv.bias")
REFERENCE_EPS = 1e-15  # the reference repository's LiteMLA eps
TIMM_EPS = 1e-5  # timm's
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
SAFETENSORS_MAX_HEADER = 100_000_000  # the format's own limit on the JSON header


@dataclass(frozen=True)
class LoadedCheckpoint:
    layout: str  # "reference" | "timm"
    attention_eps: float  # the eps the checkpoint was trained with
    tensors: int


def read_state_dict(path: Path) -> dict:
    """The raw tensors of a checkpoint file, without executing any code from it."""
    import torch

    path = Path(path)
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES)[:3]
        raise UserError(
            f"checkpoint {path} is a folder",
            "pass the weights file in it" + (f" (e.g. {path / inside[0]})" if inside else " (.pt/.pth/.bin/.safetensors)") + ", not the folder",
        )
    if input_file(path, "checkpoint", "pass the path of a local .pt/.pth/.bin/.safetensors file") == 0:
        raise UserError(f"checkpoint {path} is empty", "re-download or re-save the checkpoint")
    if file_format(path) == "safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            obj = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise UserError(f"checkpoint {path} is corrupt or truncated ({_first_line(exc)})", "re-download it") from exc
    else:
        try:
            with open(path, "rb") as handle:  # a handle: torch.load would pick safetensors by a path's suffix
                obj = torch.load(handle, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ... here
            text = str(exc)
            # Only a pickle that names a Python global (a class, a function) is "arbitrary objects";
            # random bytes also fail the weights-only unpickler, with "Unsupported operand".
            if "Unsupported global" in text or "GLOBAL" in text:
                raise UserError(
                    f"refused to load {path}: it contains arbitrary Python objects, not only tensors",
                    "re-save just the weights: torch.save(model.state_dict(), path) or use .safetensors",
                ) from exc
            raise UserError(f"checkpoint {path} is corrupt or truncated ({_torch_reason(text, exc)})", "re-download it") from exc
    return _unnest(obj, path)


def file_format(path: Path) -> str:
    """ "safetensors" or "torch", by the file's first bytes (not its suffix: a `.bin` may be either).
    safetensors starts with an 8-byte little-endian header length, then the JSON header's '{';
    torch.save writes a zip ('PK') or, in the legacy format, a pickle. A file that is neither is
    read by the loader its suffix names, which then says what is wrong with it."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    if head[:2] == b"PK":
        return "torch"
    if len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") <= SAFETENSORS_MAX_HEADER:
        return "safetensors"
    return "safetensors" if path.suffix == ".safetensors" else "torch"


def _first_line(exc: Exception) -> str:
    return first_line(exc, 160)


def _torch_reason(text: str, exc: Exception) -> str:
    """What torch.load found wrong, without its boilerplate (nor its advice to load with
    weights_only=False: arbitrary code execution is not a fix for a damaged file)."""
    if text.startswith("Weights only load failed"):
        detail = text.split("WeightsUnpickler error:", 1)[1] if "WeightsUnpickler error:" in text else ""
        detail = " ".join(detail.split("Check the documentation", 1)[0].split())
        return shorten(f"not a checkpoint torch can read: {detail}" if detail else "not a checkpoint torch can read", 160)
    return _first_line(exc)


def _unnest(obj, path: Path) -> dict:
    import torch

    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(
            f"{path} holds no state dict of tensors",
            "expected a dict of tensors, optionally under 'state_dict' or 'model'",
        )
    return {re.sub(r"^(module\.|_orig_mod\.)+", "", k): v for k, v in obj.items()}


def detect_layout(state: dict) -> str:
    """ "reference" (mit-han-lab/efficientvit: `backbone.`, SAM's `image_encoder.backbone.…op_list…`) or "timm" (ours)."""
    return "reference" if any(k.startswith("backbone.") or ".op_list." in k for k in state) else "timm"


def reference_to_ours(state: dict) -> dict:
    """Rename the reference repository's keys to ours (= timm's)."""
    b_series = any(k.startswith("backbone.input_stem.") for k in state)  # SAM's backbones are all L series
    seg_has_expand = any(k.startswith("head.output_ops.0.op_list.1.") for k in state)
    renamed = {}
    for key, value in state.items():
        sam = key.startswith("image_encoder.")
        new = _rename_sam(key[len("image_encoder.") :]) if sam else _rename(key, b_series, seg_has_expand)
        renamed[("image_encoder." if sam else "") + new] = value
    return renamed


def _rename_sam(key: str) -> str:
    """An EfficientViT-SAM image-encoder key, `image_encoder.` removed: the backbone as the L series',
    the neck's OpSequential/DAGBlock wrappers dropped. The prompt encoder and mask decoder are
    Meta's names, which ours keep."""
    if key.startswith("backbone."):
        return "backbone." + _rename(key, b_series=False, seg_has_expand=False)
    neck = (
        (r"neck\.input_ops\.(\d+)\.op_list\.0\.(.*)", r"neck.input_ops.\1.\2"),
        (r"neck\.middle\.op_list\.(\d+)\.(.*)", r"neck.middle.\1.\2"),
        (r"neck\.output_ops\.0\.op_list\.0\.(.*)", r"neck.output.\1"),
    )
    for pattern, replacement in neck:
        if re.fullmatch(pattern, key):
            return re.sub(pattern, replacement, key)
    return key


def _rename(key: str, b_series: bool, seg_has_expand: bool) -> str:
    def stem_block(k: int) -> str:
        return "stem.in_conv." if k == 0 else f"stem.res{k - 1}."

    if m := re.match(r"backbone\.input_stem\.op_list\.(\d+)\.(.*)", key):
        return stem_block(int(m[1])) + m[2]
    if m := re.match(r"backbone\.stages\.(\d+)\.op_list\.(\d+)\.(.*)", key):
        stage, block, rest = int(m[1]), int(m[2]), m[3]
        if b_series:
            return f"stages.{stage}.blocks.{block}.{rest}"
        if stage == 0:  # the L series keeps its stem as stage 0
            return stem_block(block) + rest
        return f"stages.{stage - 1}.blocks.{block}.{rest}"
    classifier = {
        "head.op_list.0.": "head.in_conv.",
        "head.op_list.2.linear.": "head.classifier.0.",
        "head.op_list.2.norm.": "head.classifier.1.",
        "head.op_list.3.linear.": "head.classifier.4.",
        "head.output_ops.0.op_list.0.": "head.final_expand." if seg_has_expand else "head.classifier.",
        "head.output_ops.0.op_list.1.": "head.classifier.",
    }
    for old, new in classifier.items():
        if key.startswith(old):
            return new + key[len(old) :]
    if m := re.match(r"head\.input_ops\.(\d+)\.op_list\.0\.(.*)", key):
        return f"head.input_ops.{m[1]}.{m[2]}"
    if m := re.match(r"head\.middle\.op_list\.(\d+)\.(.*)", key):
        return f"head.middle.{m[1]}.{m[2]}"
    return key


def read_our_state(path: Path) -> tuple[dict, str]:
    """A checkpoint's tensors under our key names, and the layout ("reference" | "timm") they came in."""
    state = read_state_dict(path)
    layout = detect_layout(state)
    return (reference_to_ours(state) if layout == "reference" else state), layout


def fine_tuned_class_count(state: dict, expected: dict) -> Optional[int]:
    """The checkpoint's class count when its final layer's width is all that differs from `expected`
    (a fine-tuned checkpoint of this architecture); None when nothing or more than that differs."""
    if set(state) != set(expected):
        return None
    mismatched = [k for k in expected if tuple(state[k].shape) != tuple(expected[k].shape)]
    if not mismatched or not all(k in FINAL_LAYER_KEYS for k in mismatched):
        return None
    if any(tuple(state[k].shape[1:]) != tuple(expected[k].shape[1:]) for k in mismatched):
        return None
    counts = {state[k].shape[0] for k in FINAL_LAYER_KEYS if k in state}
    return counts.pop() if len(counts) == 1 else None


def load_checkpoint(
    model, path: Path, model_name: str, ours: Optional[tuple[dict, str]] = None, guess: Callable[[dict], Optional[str]] = lambda state: None
) -> LoadedCheckpoint:
    """Load weights into `model` strictly; a mismatch names the keys and the likely cause.

    `ours` is the file already read by `read_our_state`, so a caller that looked at it reads it once;
    `guess` names the registered model a mismatched state looks like (the registry passes its own).
    """
    state, layout = ours if ours is not None else read_our_state(path)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or mismatched:
        raise UserError(_mismatch_message(path, model_name, state, expected=expected, keys=(missing, unexpected, mismatched), guess=guess))
    model.load_state_dict(state, strict=True)
    eps = REFERENCE_EPS if layout == "reference" else TIMM_EPS
    return LoadedCheckpoint(layout, eps, len(state))


def _mismatch_message(path, model_name, state, expected, keys, guess) -> str:
    missing, unexpected, mismatched = keys
    parts = [f"checkpoint {path} does not fit {model_name}:"]
    if mismatched:
        k = mismatched[0]
        parts.append(f"{len(mismatched)} shape mismatches (first {k}: {tuple(state[k].shape)} vs {tuple(expected[k].shape)})")
    if missing:
        parts.append(f"{len(missing)} missing keys (first {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (first {', '.join(unexpected[:3])})")
    parts.append("likely cause: " + _likely_cause(state, mismatched + missing + unexpected, guess))
    return " ".join(parts)


def _likely_cause(state, differing: list, guess) -> str:
    # (a checkpoint whose only difference is the class count never gets here: build_model adopts it)
    if all(k.startswith("head.") for k in differing):
        return "another head (classification vs segmentation, or another dataset's head)"
    looks_like = guess(state)
    return f"another model (the weights look like {looks_like})" if looks_like else "another model or architecture"
