"""A precision plan applied to the PyTorch model itself: FP16 except the plan's FP32 modules.

Why: the plan's FP16 numerics can then be seen on any PyTorch device, a CUDA GPU included, where
TensorRT is not installed: the same modules TensorRT is told to keep FP32 (layer precisions under
"obey") stay FP32 here, everything else computes and stores FP16. "Plain" FP16 is the contrast:
every op in FP16, LiteMLA's float32 island switched off, which is what an exported graph gets from a
bare `trtexec --fp16` (the NaN reported on EfficientViT segmentation at 1024x2048).

Mechanics: the model is cast to FP16; each module the plan keeps (precision.plan.FloatScopes:
by rule, by measured range, or a block moved by the search) gets its own parameters back in FP32
and its inputs cast to FP32; every other module holding parameters casts its inputs to FP16, so a
FP32 module's output re-enters FP16 at the next FP16 layer, as TensorRT's reformat layers do.
"""

from __future__ import annotations

from typing import Optional

from evitdeploy.precision.plan import FloatScopes, PrecisionPlan


def _cast_inputs(dtype):
    import torch

    def hook(module, args):
        return tuple(a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)

    return hook


def _own_tensors(module):
    yield from module.parameters(recurse=False)
    yield from module.buffers(recurse=False)


def half_following(model, plan: Optional[PrecisionPlan]) -> dict:
    """Make `model` (in place, eval mode) compute in FP16 as `plan` says; `plan=None` is plain FP16.

    Returns what was kept FP32: module paths, and how many LiteMLA float32 islands stay on.
    Call `.to(device)` before or after; the hooks follow each module's own dtype."""
    import torch

    from evitdeploy.models.attention import LiteMLA

    scopes = FloatScopes(plan) if plan is not None else None
    model.eval().half()
    kept, islands = [], 0
    for name, module in model.named_modules():
        weighted = any(True for _ in _own_tensors(module))
        keep = scopes is not None and bool(name) and scopes.keeps(name, weighted)
        if isinstance(module, LiteMLA):
            module.fp32_island = keep
            islands += keep
        if keep:
            for tensor in _own_tensors(module):
                if tensor.is_floating_point():
                    tensor.data = tensor.data.float()
            module.register_forward_pre_hook(_cast_inputs(torch.float32))
            kept.append(name)
        elif weighted:
            module.register_forward_pre_hook(_cast_inputs(torch.float16))
    return {"plan": plan is not None, "fp32_modules": kept, "fp32_islands": islands}


def run_half(model, inputs, device: str = "cpu", batch: int = 1):
    """Float32 numpy outputs of an FP16 (plain or planned) model, fed FP16 like a TensorRT engine's
    first FP16 layer."""
    import numpy as np
    import torch

    outputs = []
    with torch.inference_mode():
        for start in range(0, len(inputs), batch):
            x = torch.from_numpy(np.ascontiguousarray(inputs[start : start + batch])).to(device, torch.float16)
            outputs.append(model(x).float().cpu().numpy())
    return np.concatenate(outputs)


def fp16_numerics(model, spec, plan: PrecisionPlan, inputs, device: str = "cpu") -> dict:
    """FP32 against plain FP16 and the plan's FP16, same inputs, same device: a parity report per
    FP16 variant (FP16 tolerances; NaN/Inf counted) and every variant's outputs."""
    import copy

    import numpy as np
    import torch

    from evitdeploy.parity import compare, tolerances_for

    model = model.eval().to(device)
    with torch.inference_mode():
        reference = np.concatenate([model(torch.from_numpy(inputs[i : i + 1]).to(device)).float().cpu().numpy() for i in range(len(inputs))])
    outputs, reports = {"fp32": reference}, {}
    for label, chosen in (("plain", None), ("plan", plan)):
        half = copy.deepcopy(model)
        kept = half_following(half, chosen)
        outputs[label] = run_half(half, inputs, device)
        reports[label] = {
            **compare(spec, reference, outputs[label], precision="fp16", tolerances=tolerances_for("fp16")),
            "fp32_modules": len(kept["fp32_modules"]),
        }
        del half
    return {"device": device, "reports": reports, "outputs": outputs}
