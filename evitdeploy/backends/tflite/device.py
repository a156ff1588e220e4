"""LiteRT (TFLite) on the device: a bundle carries this file as `evitdeploy_device/runtime.py`.

Numpy and ai-edge-litert only, Python 3.8 syntax, no evitdeploy imports (see
evitdeploy.device.runtimes for what a device module defines). The host runner imports
tflite_interpreter and tflite_run from here, so a bundle's verify.py runs a .tflite exactly as
evitdeploy does (quantized inputs and outputs from each tensor's own scale and zero point).
"""

import numpy as np

TARGET = "tflite"
RUNTIME = ("ai_edge_litert", "ai-edge-litert")
# LiteRT's C++ side prints an "INFO: Created ... delegate" and a deprecation line tagged "ERROR:"
# on every load; neither is an error, so whoever loads a model silences file descriptor 2 meanwhile.
SILENCE_NATIVE_LOAD = True


def tflite_interpreter(path, threads=None):
    """A LiteRT interpreter on XNNPACK (its default CPU delegate), tensors allocated."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    return interpreter


def _quantized(details) -> tuple:
    scale, zero_point = details["quantization"]
    return (scale, zero_point) if scale else None


def tflite_run(interpreter, batch: np.ndarray) -> np.ndarray:
    """One NCHW float32 batch through the interpreter. An NHWC model input gets it transposed;
    integer inputs and outputs (full-integer INT8 models) are quantized and dequantized with the
    tensor's own scale and zero point, so callers see float32."""
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    if batch.ndim == 4 and tuple(source["shape"]) == (batch.shape[0], *batch.shape[2:], batch.shape[1]) != batch.shape:
        batch = batch.transpose(0, 2, 3, 1)  # an --nhwc model: references and parity inputs are NCHW
    quantized = _quantized(source)
    if quantized and np.issubdtype(source["dtype"], np.integer):
        scale, zero_point = quantized
        limits = np.iinfo(source["dtype"])
        batch = np.clip(np.round(batch / scale) + zero_point, limits.min, limits.max)
    interpreter.set_tensor(source["index"], np.ascontiguousarray(batch, dtype=source["dtype"]))
    interpreter.invoke()
    output = interpreter.get_tensor(target["index"])
    quantized = _quantized(target)
    if quantized and np.issubdtype(target["dtype"], np.integer):
        scale, zero_point = quantized
        return (output.astype(np.float32) - zero_point) * np.float32(scale)
    return output.astype(np.float32)


def tflite_run_named(interpreter, feed, signature="serving_default"):
    """A model of several float32 inputs (a SAM prompt decoder) through its signature: inputs
    and outputs by their signature names; a feed of the wrong shape is refused (ValueError)."""
    named = interpreter.get_signature_runner(signature)
    inputs, outputs = named.get_input_details(), named.get_output_details()
    del named  # it holds the interpreter's internals, and invoke() refuses to run while anything does
    for name, details in inputs.items():
        interpreter.set_tensor(details["index"], np.ascontiguousarray(feed[name], dtype=details["dtype"]))
    interpreter.invoke()
    return {name: interpreter.get_tensor(details["index"]).astype(np.float32) for name, details in outputs.items()}


def open_model(path, manifest: dict, threads):
    """infer(batch) -> float32 outputs on XNNPACK; a dict of named inputs (a SAM prompt decoder,
    already padded to its point count) gives a dict of its outputs by name."""
    interpreter = tflite_interpreter(path, threads)

    def infer(batch):
        if isinstance(batch, dict):
            return tflite_run_named(interpreter, batch)
        return tflite_run(interpreter, batch)

    infer.providers = ["LiteRT (XNNPACK)"]
    return infer
