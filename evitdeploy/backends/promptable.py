"""A promptable (SAM) artifact is two models: the encoder once per image, the decoder once per
prompt. This runs both, for PyTorch and for any backend's pair of runners, over the same fixed
prompts on real photos, and compares them (device.prompts holds the metrics, shared with verify.py)."""

from __future__ import annotations

from dataclasses import asdict, replace

import numpy as np

from evitdeploy.device.prompts import DECODER_INPUTS, decoder_feed, flat_feeds, parity_feeds, promptable_failures, promptable_metrics, shown_per_prompt
from evitdeploy.device.prompts import prompted_outputs as device_prompted_outputs
from evitdeploy.errors import UserError
from evitdeploy.spec import ModelSpec

ROLES = ("encoder", "decoder")


def artifact_models(artifact) -> dict:
    """{"encoder": Artifact, "decoder": Artifact}: the artifact once per model file, so each
    backend's ordinary runner (`for_artifact`) opens either."""
    models = artifact.manifest.get("models") or {}
    if set(models) != set(ROLES):
        raise UserError(f"{artifact.folder} is a promptable model without its encoder and decoder files in the manifest", "re-run `evitdeploy export`")
    return {role: replace(artifact, model_file=artifact.folder / models[role]) for role in ROLES}


def prompted_outputs(encode, decode, inputs: np.ndarray, *, sizes: list, spec: ModelSpec) -> dict:
    """Every image encoded once, then decoded for each of the parity prompts (device.prompts)."""
    return device_prompted_outputs(encode, decode, inputs, feeds=parity_feeds(sizes, frame=spec.prompt_frame, embedding=spec.embedding))


def runner_pair(encoder, decoder, spec: ModelSpec):
    """(encode, decode) callables over two loaded runners (ours or a backend's)."""

    def encode(batch):
        out = encoder.infer({spec.input_name: batch})
        return out.get(spec.output_name, next(iter(out.values())))

    def decode(feed):
        return decoder.infer({name: feed[name] for name in DECODER_INPUTS})

    return encode, decode


def reference_outputs(model, spec: ModelSpec, inputs: np.ndarray, *, sizes: list) -> dict:
    """PyTorch's outputs (the textbook formulation: the reference's own arithmetic)."""
    from evitdeploy.backends.torch.runner import TorchDecoderRunner, TorchRunner

    with model.formulation("textbook"), TorchRunner(model, spec) as encoder, TorchDecoderRunner(model.decoder(spec.decoder_masks)) as decoder:
        return prompted_outputs(*runner_pair(encoder, decoder, spec), inputs, sizes=sizes, spec=spec)


def compare_prompted(reference: dict, candidate: dict, *, feeds: list, precision: str, tolerances) -> dict:
    """A parity report (JSON-ready) for a promptable model: metrics (the mask a user is shown for
    each of `feeds`' prompts, by SAM's conventions), tolerances, failures, verdict."""
    metrics = promptable_metrics(reference, candidate, shown=shown_per_prompt(feeds, reference["iou_predictions"]))
    gates = asdict(tolerances)
    failures = promptable_failures(metrics, gates)
    per_prompt = metrics.pop("mask_iou_per_prompt", [])  # metrics are numbers; the detail rides beside them
    return {"passed": not failures, "failures": failures, "metrics": metrics, "mask_iou_per_prompt": per_prompt, "precision": precision, "tolerances": gates}


def decoder_bench_feed(spec: ModelSpec, embedding: np.ndarray, points: int) -> dict:
    """A decoder feed with `points` foreground points spread over the frame (no box)."""
    frame = spec.prompt_frame
    spread = np.linspace(0.1, 0.9, points, dtype=np.float32) * frame
    prompt = {"points": [(float(x), float(spread[::-1][i])) for i, x in enumerate(spread)], "labels": [1] * points}
    feed = decoder_feed(prompt, (frame, frame), frame=frame, embedding=spec.embedding)
    return {"image_embeddings": np.asarray(embedding, np.float32), **feed}


def validate_pair(
    model, spec: ModelSpec, runners: tuple, *, inputs: np.ndarray, sizes: list, precision: str, what: str, hint: str, enforce: bool = True
) -> dict:
    """An export's proof: the candidate pair against PyTorch on the parity prompts; raises (exit 1)
    on a miss, so a failing artifact is never written (unless not `enforce`d: a naive baseline)."""
    from evitdeploy.errors import EXIT_CHECK_FAILED
    from evitdeploy.parity import tolerances_for

    expected = reference_outputs(model, spec, inputs, sizes=sizes)
    from evitdeploy.backends.reference import runtime_outputs

    got = runtime_outputs(lambda _: prompted_outputs(*runner_pair(*runners, spec), inputs, sizes=sizes, spec=spec), None, what=what, hint=hint)
    feeds = parity_feeds(sizes, frame=spec.prompt_frame, embedding=spec.embedding)
    report = compare_prompted(expected, got, feeds=feeds, precision=precision, tolerances=tolerances_for(precision))
    if enforce and not report["passed"]:
        raise UserError(
            f"{what} does not match PyTorch on {report['metrics'].get('prompts', 0)} prompts: {'; '.join(report['failures'])}",
            f"nothing was written; {hint}",
            EXIT_CHECK_FAILED,
        )
    return report


def validate_export_pair(model, spec: ModelSpec, runners: tuple, *, options, what: str, hint: str) -> dict:
    """validate_pair on an export's validation photos (prompts placed in each photo's own size),
    with the export's precision and whether a miss is refused."""
    inputs = options.validation_inputs
    sizes = list(options.validation_sizes) or [(spec.height, spec.width)] * len(inputs)
    return validate_pair(model, spec, runners, inputs=inputs, sizes=sizes, precision=options.precision, what=what, hint=hint, enforce=options.enforces_parity)


def bundle_reference(model, spec: ModelSpec, inputs: np.ndarray, *, sizes: list) -> dict:
    """What a bundle's verify.py checks a promptable model with, as arrays for reference.npz: the
    parity prompts of these images (flat, in the frame) and PyTorch's masks (float16, half the
    bytes; a mask pixel's sign survives it) and IoU predictions for them."""
    feeds = parity_feeds(sizes, frame=spec.prompt_frame, embedding=spec.embedding)
    from evitdeploy.backends.torch.runner import TorchDecoderRunner, TorchRunner

    with model.formulation("textbook"), TorchRunner(model, spec) as encoder, TorchDecoderRunner(model.decoder(spec.decoder_masks)) as decoder:
        expected = device_prompted_outputs(*runner_pair(encoder, decoder, spec), inputs, feeds=feeds)
    return {**flat_feeds(feeds), "expected_masks": expected["low_res_masks"].astype(np.float16), "expected_iou": expected["iou_predictions"]}


# What a fixed-points decoder's point count means, for the manifest (export.decoder_points_meaning).
POINTS_MEANING = (
    "the decoder takes exactly this many prompt points (a box is two, and a prompt without a box gets SAM's "
    "padding point); a prompt with fewer is padded and point_count says how many are real, which the decoder masks exactly"
)


def fixed_points_feed(feed: dict, points: int) -> dict:
    """device.prompts.fixed_points_feed, with too many points a one-line UserError (exit 2)."""
    from evitdeploy.device.prompts import fixed_points_feed as padded

    try:
        return padded(feed, points)
    except ValueError as exc:
        raise UserError(str(exc), "give fewer points, or export --target onnx, whose decoder takes any number") from None
