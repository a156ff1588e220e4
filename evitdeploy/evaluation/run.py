"""`eval`: an artifact's task metric on the user's labelled data, beside the PyTorch FP32 reference's
on the same photos, through the same preprocessing and postprocessing (device/pipeline.py: what the
bundle's app and `predict` run). Streamed: one photo at a time; only per-image records are kept.
Library code: returns JSON-ready data, prints nothing.
"""

from __future__ import annotations

import time
from pathlib import Path

from evitdeploy import api, limits, memory
from evitdeploy.errors import EXIT_BACKEND_UNAVAILABLE, EXIT_CHECK_FAILED, UserError
from evitdeploy.evaluation import scores
from evitdeploy.labelled import datasets
from evitdeploy.evaluation.compare import EVAL_SCHEMA
from evitdeploy.progress import Progress, report_step
from evitdeploy.requests import EvalRequest
from evitdeploy.spec import CLASSIFICATION, SEGMENTATION

PROGRESS_EVERY_S = 2.0  # a progress line at most this often


def evaluate(request: EvalRequest, progress: Progress = None) -> dict:
    """The eval report: the artifact's metric and the FP32 reference's, each with a 95% bootstrap
    interval, their paired delta, and the images where the two disagree."""
    from evitdeploy.backends import why_not_here
    from evitdeploy.device.pipeline import NonFiniteOutput
    from evitdeploy.labels import class_names
    from evitdeploy.artifact_model import ArtifactModel

    limits.check_seed(request.seed)
    limits.check_range("--threads", request.threads, 1, high=limits.THREADS_MAX)
    artifact = api.resolve_artifact(Path(request.path), None)
    spec = artifact.spec
    dataset = datasets.open_dataset(Path(request.dataset), spec, limit=request.limit, seed=request.seed)
    reason = why_not_here(artifact, "predict")
    if reason:
        raise UserError(reason, f"run eval where {artifact.target} runs", EXIT_BACKEND_UNAVAILABLE)
    api.int8_kernels_here(artifact)
    memory.require_fits(spec, "bench", f"evaluating {spec.name} at {spec.height}x{spec.width}")
    records = _records(spec)
    data, names = spec.to_dict(), class_names(spec)
    count = len(dataset.samples)
    report_step(progress, f"evaluating {count} images of {dataset.root} ({dataset.layout}) on {artifact.target} and on PyTorch FP32")
    started = last = time.perf_counter()
    with ArtifactModel(artifact, request.threads) as model, api.reference_pipeline(artifact, spec, request.checkpoint) as reference:
        for done, (sample, photo) in enumerate(datasets.photos_ahead(dataset.samples), start=1):
            try:
                _score(
                    sample, photo, records, models=((model.encode, model.decode), reference), data=data, names=names, root=dataset.root, layout=dataset.layout
                )
            except NonFiniteOutput as exc:
                raise UserError(f"{sample.image}: {exc}", "run `evitdeploy check` on the artifact", EXIT_CHECK_FAILED) from None
            now = time.perf_counter()
            if progress and (now - last >= PROGRESS_EVERY_S or done == count):
                rate = done / (now - started)
                progress(f"{done}/{count} images, {rate:.1f}/s, ETA {(count - done) / rate:.0f} s")
                last = now
    seconds = time.perf_counter() - started
    return {
        "kind": "evaluation",
        "schema": EVAL_SCHEMA,
        **api.artifact_header(artifact, spec),
        "dataset": {**dataset.describe(), "limit": request.limit, "seed": request.seed},
        **records.summary(request.seed),
        **({"images": len(dataset.samples)} if spec.promptable else {}),
        "interval": f"{int(scores.CONFIDENCE * 100)}% percentile bootstrap over {'instances' if spec.promptable else 'images'}, {scores.RESAMPLES} resamples; deltas paired",
        "seconds": round(seconds, 3),
        "images_per_second": round(len(dataset.samples) / seconds, 3) if seconds else None,
    }


def _records(spec):
    if spec.task == CLASSIFICATION:
        return scores.ClassificationRecords(spec.num_classes)
    if spec.task == SEGMENTATION:
        return scores.SegmentationRecords(spec.num_classes)
    return scores.PromptableRecords()


def _score(sample, photo, records, *, models: tuple, data: dict, names, root: Path, layout: str) -> None:
    """One labelled photo through both models (artifact, reference: (encode, decode) each) into
    `records`, under the photo's path in the dataset (what a paired gate matches images by)."""
    from evitdeploy.device.pipeline import encode_photo, predict, segment_prompt
    from evitdeploy.device.prompts import mask_iou
    from evitdeploy.labelled import coco

    image = sample.image.relative_to(root).as_posix()
    if data["task"] == CLASSIFICATION:
        mine, theirs = (predict(photo, data, encode, top=5, names=names) for encode, _ in models)
        records.add(image, sample.label, tops=(mine["top"], theirs["top"]))
        return
    if data["task"] == SEGMENTATION:
        mine, theirs = (predict(photo, data, encode) for encode, _ in models)
        labels = datasets.read_label_map(sample, layout, size=photo.shape[:2], classes=data["num_classes"])
        records.add(image, labels, maps=(mine["class_map"], theirs["class_map"]))
        return
    height, width = photo.shape[:2]
    if sample.size != (height, width):
        raise UserError(f"{sample.image} is {width}x{height}; its annotations say {sample.size[1]}x{sample.size[0]}", coco.HINT)
    embeddings = [encode_photo(photo, data, encode) for encode, _ in models]
    for instance in sample.instances:
        truth = coco.instance_mask(instance, height, width)
        found = []
        for prompt in ({"box": instance.box}, {"points": [coco.centre_point(truth)], "labels": [1]}):
            mine, theirs = (
                segment_prompt(embedding, data, decode, size=(height, width), prompt=prompt)["masks"][0]["mask"]
                for embedding, (_, decode) in zip(embeddings, models)
            )
            found.append((mask_iou(mine, truth), mask_iou(theirs, truth), bool((mine != theirs).any())))
        records.add(f"{image}#{instance.id}", coco.size_of(instance.area), *found)
