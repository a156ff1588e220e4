"""An app's entry point to a bundle: load it once, then predict on RGB uint8 photos.

    import sys; sys.path.insert(0, "path/to/bundle")
    import evitdeploy_device
    model = evitdeploy_device.load("path/to/bundle")
    result = model.predict(np.asarray(PIL.Image.open("photo.jpg").convert("RGB")))
    result["top"] | result["class_map"] | result["masks"]   # see pipeline.py

The bundle is trusted only after its files match manifest.json's sha256 (and its signature, with
`public_key`); the runtime is the bundle's own `evitdeploy_device/runtime.py`. The answer is
pipeline.predict's: what `evitdeploy predict` draws and what verify.py checks against PyTorch.
Errors: integrity.BundleError (refused bundle, missing runtime: its exit_code says which),
ValueError (an image that is not RGB uint8, a prompt outside the photo), pipeline.NonFiniteOutput.
"""

from pathlib import Path

import numpy as np

from . import integrity, pipeline, prompts, runtimes, tasks
from .integrity import BundleError

LABELS = "labels.txt"  # one class name per line, in class order (bundles made before it: "class N")


class Model:
    """A loaded bundle: `predict(image, points=, labels=, box=, multimask=, top=)`."""

    def __init__(self, folder: Path, manifest: dict, encode, *, decode=None):
        self.folder, self.manifest, self.spec = folder, manifest, manifest["spec"]
        self.task = self.spec["task"]
        self.names = read_labels(folder, self.spec["num_classes"]) if LABELS in manifest["files"] else None
        self._encode, self._decode = encode, decode

    def predict(self, image, points=(), labels=None, box=None, multimask: bool = False, top: int = 5) -> dict:
        """One RGB uint8 photo (H, W, 3) -> the task's answer at the photo's size (pipeline.py).
        A promptable model takes `points` [(x, y)...] with `labels` (1 foreground, the default;
        0 background) and/or a `box` (x0, y0, x1, y1), in the photo's pixels."""
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
            raise ValueError("expected an RGB uint8 image (H, W, 3), got {} {}".format(image.dtype, image.shape))
        prompt = None
        if self.task == tasks.PROMPTABLE:
            prompt = {"points": [tuple(p) for p in points], "labels": list(labels) if labels is not None else [1] * len(points), "box": box}
            problem = prompts.prompt_problem(prompt, image.shape[:2])
            if problem:
                raise ValueError(problem)
        elif len(points) or box is not None:
            raise ValueError("points and boxes are for promptable (SAM) models; this is a {} model".format(self.task))
        return pipeline.predict(image, self.spec, self._encode, decode=self._decode, prompt=prompt, multimask=multimask, top=top, names=self.names)


def read_labels(folder: Path, count: int) -> list:
    lines = (folder / LABELS).read_text(encoding="utf-8").splitlines()
    if len(lines) != count:
        raise BundleError("{} names {} classes; the model has {}".format(LABELS, len(lines), count), "re-copy the bundle from where it was made")
    return lines


def load(bundle, threads=None, runtime=None, public_key=None) -> Model:
    """The bundle at `bundle`, checked (sha256 of every file; the signature with `public_key`) and
    loaded on its runtime. `runtime`: the device module (default: the bundle's runtime.py)."""
    from .verify import int8_kernels, open_models

    folder = Path(bundle)
    manifest, _ = integrity.trusted_manifest(folder, public_key)
    if runtime is None:
        from . import runtime  # the bundle's own target: evitdeploy_device/runtime.py
    runtimes.runtime_versions(runtime, manifest)  # exit 3 where the runtime is missing or cannot run here
    int8_kernels(manifest)  # refuses an INT8 model this CPU's kernels would saturate
    encode, decode, _ = open_models(folder, manifest, runtime, threads=threads)
    return Model(folder, manifest, encode, decode=decode)
