"""A small labelled subset of the user's data for a bundle (`deploy --dataset D --eval-subset N`):
its photos and labels as device/eval_subset.py reads them, and what PyTorch FP32 and this artifact
score on them here, scored by that same device code, so verify.py's figure is comparable."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from evitdeploy import api, limits
from evitdeploy.device import eval_subset
from evitdeploy.labelled import datasets

SUBSET_MAX = 256  # photos a bundle carries: enough to see a drop on the device, small enough to copy


def bundle_subset(artifact, dataset: Path, *, count: int, seed: int, checkpoint: Optional[Path], threads: Optional[int], max_drop: Optional[float]) -> tuple:
    """(eval.npz's arrays, the manifest's bundle.eval_subset section) for `count` photos of `dataset`
    drawn with `seed`; the artifact is scored here only where it runs here (else making_host is None)."""
    from evitdeploy.artifact_model import ArtifactModel

    limits.check_range("--eval-subset", count, 1, high=SUBSET_MAX)
    spec = artifact.spec
    found = datasets.open_dataset(Path(dataset), spec, limit=count, seed=seed)
    photos, truth = datasets.photos_and_truth(found, spec)
    if spec.promptable and not truth["box"]:
        from evitdeploy.errors import UserError

        raise UserError(f"the {len(photos)} photos drawn from {dataset} hold no annotated instance", "raise --eval-subset, or annotate the photos")
    data = spec.to_dict()
    with api.reference_pipeline(artifact, spec, checkpoint) as (encode, decode):
        fp32 = eval_subset.score(data, photos, truth, encode=encode, decode=decode)
    here = None
    if not api.predicts_here(artifact):
        with ArtifactModel(artifact, threads) as model:
            here = eval_subset.score(data, photos, truth, encode=model.encode, decode=model.decode)
    section = {
        "file": eval_subset.FILE,
        "photos": len(photos),
        **({"instances": len(truth["box"])} if spec.promptable else {}),
        "metric": eval_subset.HEADLINE[spec.task],
        "fp32": fp32,
        "making_host": here,
        "max_drop_pt": max_drop,
        "drawn_from": {"dataset": str(dataset), "layout": found.layout, "of": found.total, "seed": seed},
    }
    return eval_subset.arrays_of(data, photos, truth), section
