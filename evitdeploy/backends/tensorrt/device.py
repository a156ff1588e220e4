"""TensorRT on the device: a bundle carries this file as `evitdeploy_device/runtime.py`.

No evitdeploy imports, Python 3.8 syntax (see evitdeploy.device.runtimes for what a device module
defines). A TensorRT bundle carries the ONNX model and the engine recipe, not an engine: the
engine is built, checked against reference.npz and timed where it will run, by `evitdeploy build .`
(it needs CUDA memory, which TensorRT's Python API alone cannot allocate), so verify.py refuses it
with that command (exit 3).
"""

TARGET = "trt"
RUNTIME = ("tensorrt", "tensorrt")
VERSION_BOUND = True  # a serialized engine loads only on the TensorRT version that built it
_BUILD = (
    "a TensorRT bundle is checked where its engine is built",
    "on the device: `evitdeploy build .` (builds the engine, a SAM model's encoder.engine and decoder.engine, and compares with reference.npz), "
    "or sh build_engine.sh for the engines alone",
)


def cannot_run_here(manifest=None):
    return _BUILD


def open_model(path, manifest: dict, threads):
    raise RuntimeError(_BUILD[0] + ": " + _BUILD[1])
