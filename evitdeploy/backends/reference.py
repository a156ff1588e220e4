"""Every export re-proves itself against PyTorch before it reports success: the shared check."""

from __future__ import annotations

import numpy as np

from evitdeploy.errors import UserError
from evitdeploy.spec import ModelSpec


def against_reference(model, spec, candidate, batches, precision: str, what: str, hint: str, enforce: bool = True) -> list[dict]:
    """Each batch through the candidate runner and PyTorch running the textbook formulation (the
    reference's own arithmetic): every export re-proves its rewrites. Raises (exit 1) on a miss,
    unless not `enforce`d (a naive baseline: the miss is recorded)."""
    from evitdeploy.errors import EXIT_CHECK_FAILED
    from evitdeploy.parity import compare, tolerances_for
    from evitdeploy.backends.torch.runner import TorchRunner

    checks = []
    with model.formulation("textbook"), TorchRunner(model, spec) as reference:
        for batch in batches:
            feed = {spec.input_name: batch}
            report = compare(
                spec,
                reference.infer(feed)[spec.output_name],
                runtime_outputs(candidate.infer, feed, what=what, hint=hint)[spec.output_name],
                precision=precision,
                tolerances=tolerances_for(precision),
            )
            checks.append({"input_shape": list(batch.shape), **report})
            if enforce and not report["passed"]:
                raise UserError(
                    f"{what} does not match PyTorch at input {tuple(batch.shape)}: {'; '.join(report['failures'])}",
                    f"nothing was written; {hint}",
                    EXIT_CHECK_FAILED,
                )
    return checks


def check_export(model, spec, candidate, *, options, what: str, hint: str, shape=None) -> list[dict]:
    """against_reference on an export's validation photos (at `shape`, default the spec's), with
    the export's precision and whether a miss is refused (`ExportOptions.enforces_parity`)."""
    batches = [inputs_for(options.validation_inputs, shape or spec.input_shape)]
    return against_reference(model, spec, candidate, batches=batches, precision=options.precision, what=what, hint=hint, enforce=options.enforces_parity)


def runtime_outputs(infer, feed, *, what: str, hint: str):
    """`infer(feed)`, where the runtime's own refusal to run the converted model (LiteRT's kernel
    checks, a missing op) is one line naming it (exit 1), not a traceback."""
    from evitdeploy.errors import EXIT_CHECK_FAILED

    try:
        return infer(feed)
    except UserError:
        raise
    except Exception as exc:  # the runtime's own error types
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{what} does not run on its runtime ({type(exc).__name__}: {reason})", f"nothing was written; {hint}", EXIT_CHECK_FAILED) from None


def validation_batch(options, spec: ModelSpec) -> np.ndarray:
    """The validation photos, one per batch, at the spec's input size."""
    return inputs_for(options.validation_inputs, (1, *spec.input_shape[1:]))


def inputs_for(inputs: np.ndarray, shape: tuple) -> np.ndarray:
    """Real photos cropped/tiled to `shape` (validation needs the exact shape, not the content)."""
    import torch
    import torch.nn.functional as F

    n, _, h, w = shape
    picked = np.concatenate([inputs] * (n // len(inputs) + 1))[:n]
    if picked.shape[2:] != (h, w):
        picked = F.interpolate(torch.from_numpy(picked), size=(h, w), mode="bilinear", align_corners=False).numpy()
    return np.ascontiguousarray(picked, dtype=np.float32)
