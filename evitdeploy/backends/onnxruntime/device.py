"""ONNX Runtime on the device: a bundle carries this file as `evitdeploy_device/runtime.py`.

Numpy and onnxruntime only, Python 3.8 syntax, no evitdeploy imports (see evitdeploy.device.runtimes
for what a device module defines). The host runner imports onnx_providers and onnx_session from
here, so check, bench and a bundle's verify.py run a model on the same provider.
"""

import contextlib
import sys

import numpy as np

TARGET = "onnx"
RUNTIME = ("onnxruntime", "onnxruntime")
# ONNX Runtime execution providers, best first: the one order for check, bench and verify.py, so
# a bundle's parity on the device is measured on the provider it was measured on where it was made.
# No TensorRT EP: it builds an engine on the first run (minutes, again for every new shape), with
# numerics set by its own flags, and TensorRT is its own target (`--target trt`, built and checked
# with the TensorRT API); an ONNX artifact is checked and timed on ONNX Runtime's own kernels:
# CUDA where present, else CPU.
ONNX_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


def onnx_providers(available) -> list:
    """The providers of ONNX_PROVIDERS this onnxruntime has, in that order."""
    return [provider for provider in ONNX_PROVIDERS if provider in available]


def onnx_session(ort, model, options, providers):
    """An onnxruntime InferenceSession. onnxruntime prints its provider-fallback notice
    ("EP Error ... Falling back ...") on stdout, which would break --json output: send it to stderr."""
    with contextlib.redirect_stdout(sys.stderr):
        return ort.InferenceSession(model, options, providers=providers)


def open_model(path, manifest: dict, threads):
    """infer(batch) -> the manifest's output, on the best provider here (infer.providers); a dict
    of named inputs (a promptable model's decoder) gives a dict of every output."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    session = onnx_session(ort, str(path), options, providers=onnx_providers(ort.get_available_providers()))
    declared = session.get_inputs()[0]
    dtype = np.float16 if declared.type == "tensor(float16)" else np.float32
    output = manifest["spec"]["output_name"]

    def infer(batch):
        if isinstance(batch, dict):
            names = [o.name for o in session.get_outputs()]
            return dict(zip(names, session.run(names, {k: np.asarray(v, np.float32) for k, v in batch.items()})))
        return session.run([output], {declared.name: batch.astype(dtype)})[0]

    infer.providers = session.get_providers()
    return infer
