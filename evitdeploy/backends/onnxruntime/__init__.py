"""ONNX Runtime: the hub. Every other backend's precision plan is measured on this ONNX graph."""

from evitdeploy.backends.descriptor import Backend, Package

BACKEND = Backend(
    name="onnx",
    folder="onnxruntime",
    title="ONNX model run by ONNX Runtime (CPU; CUDA/TensorRT execution providers when present)",
    model_file="model.onnx",
    precisions=("fp32", "fp16", "int8"),
    packages=(Package("onnx", "ONNX export and checking"), Package("onnxslim", "graph simplification"), Package("onnxruntime", "ONNX runner")),
    install="pip install onnx onnxslim onnxruntime",
    device_runtime=("onnxruntime", "onnxruntime"),
    aliases=("onnxruntime", "ort"),
    carried=("precision_plan.json", "ranges.json"),
    x86_int8_kernels=True,
    stock_int8="onnxruntime.quantization.quantize_static",
    lists_providers=True,
)
