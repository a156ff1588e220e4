"""Core ML on the device (a Mac): a bundle carries this file as `evitdeploy_device/runtime.py`.

Numpy and coremltools only, Python 3.8 syntax, no evitdeploy imports (see
evitdeploy.device.runtimes for what a device module defines).
"""

import platform

import numpy as np

TARGET = "coreml"
RUNTIME = ("coremltools", "coremltools")


def cannot_run_here(manifest=None):
    """coremltools converts anywhere but predicts only on macOS: refuse elsewhere (exit 3)."""
    if platform.system() != "Darwin":
        return "Core ML predicts only on macOS", "run this verify.py on a Mac: pip install numpy coremltools"
    return None


def open_model(path, manifest: dict, threads):
    """infer(batch) -> the manifest's output, Core ML choosing the compute units (ALL)."""
    import coremltools

    model = coremltools.models.MLModel(str(path))
    spec = manifest["spec"]

    def infer(batch):
        return model.predict({spec["input_name"]: batch.astype(np.float32)})[spec["output_name"]]

    infer.providers = ["Core ML (ALL)"]
    return infer
