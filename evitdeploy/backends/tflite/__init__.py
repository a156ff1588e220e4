"""LiteRT (TFLite) for phones and small ARM boards, run on XNNPACK."""

from evitdeploy.backends.descriptor import Backend, BackendOption, Package

BACKEND = Backend(
    name="tflite",
    folder="tflite",
    title="LiteRT/TFLite flatbuffer (phones, Raspberry Pi; XNNPACK)",
    model_file="model.tflite",
    precisions=("fp32", "fp16", "int8"),
    packages=(
        Package("litert-torch", "PyTorch -> .tflite"),
        Package("ai-edge-litert", "TFLite/LiteRT runner"),
        Package("ai-edge-quantizer", "full-integer INT8 .tflite"),
    ),
    install="pip install 'evitdeploy[tflite]'",
    device_runtime=("ai_edge_litert", "ai-edge-litert"),
    aliases=("litert",),
    extra="tflite",
    carried=("precision_plan.json", "ranges.json", "tflite_plan.json"),
    stock_int8="ai-edge-quantizer",
    options=(BackendOption("nhwc", "NHWC (channels-last) input, as camera frames come; no transpose in front of the model", flag="--nhwc"),),
)
