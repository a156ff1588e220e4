"""The INT8 search judged by the task metric on the user's labelled photos (`--dataset D --max-drop
PT`), as NNCF's accuracy control does: a candidate plan is good enough when its top-1 / mIoU on
those photos is at most PT points below the FP32 model's. Blocks are still ranked by the cosine
error each causes alone (cheap); the metric decides when to stop moving them to FP32.

The photos go through the same pipeline and scoring as a bundle's verify.py (device/pipeline.py,
device/eval_subset.py), on ONNX Runtime CPU sessions of the FP32 and candidate models.
"""

from __future__ import annotations

from pathlib import Path

from evitdeploy.device import eval_subset
from evitdeploy.errors import UserError
from evitdeploy.precision.sensitivity import Target
from evitdeploy.spec import ModelSpec

SEARCH_PHOTOS = 200  # photos the search scores each candidate on, unless --dataset-limit says
SEARCH_PHOTOS_LARGE = 16  # above a megapixel: each photo costs a full-resolution run per candidate


class TaskTarget(Target):
    """Met when the headline metric drops at most `max_drop` points against the FP32 model on the photos."""

    def __init__(self, fp32_path: Path, spec: ModelSpec, *, dataset: str, limit, max_drop: float, seed: int):
        from evitdeploy.labelled.datasets import open_dataset, photos_and_truth

        if spec.promptable:
            raise UserError(
                "the INT8 search by the task metric (--max-drop) covers classifiers and segmenters; a promptable model's plan searches by cosine",
                "drop --max-drop from the export (deploy and eval still measure the drop on --dataset)",
            )
        count = limit or (SEARCH_PHOTOS_LARGE if spec.height * spec.width > 1 << 20 else SEARCH_PHOTOS)
        found = open_dataset(Path(dataset), spec, limit=count, seed=seed)
        self.photos, self.truth = photos_and_truth(found, spec)
        self.spec, self.max_drop, self.metric = spec.to_dict(), max_drop, eval_subset.HEADLINE[spec.task]
        self.fp32 = self.value(fp32_path)
        self.text = f"{self.metric} at most {max_drop:g} pt below FP32's {100 * self.fp32:.2f}% on {len(self.photos)} labelled photos of {dataset}"

    def value(self, path: Path) -> float:
        """The headline metric of the ONNX model at `path` on the photos (0 where it gives NaN/Inf)."""
        import onnxruntime as ort

        from evitdeploy.device.pipeline import NonFiniteOutput

        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        try:
            return eval_subset.score(self.spec, self.photos, self.truth, encode=lambda batch: session.run(None, {name: batch})[0])
        except NonFiniteOutput:
            return 0.0

    def scores(self, path: Path) -> dict:
        value = self.value(path)
        return {"task_metric": value, "task_fp32": self.fp32, "task_drop_pt": 100 * (self.fp32 - value) + 0.0}

    def met(self, scores: dict) -> bool:
        return scores["nonfinite"] == 0 and scores["task_drop_pt"] <= self.max_drop

    def goodness(self, scores: dict) -> float:
        return -scores["task_drop_pt"]
